"""`mesh-t5 demo`: the entry point; the demo itself is the package mesh_t5.demo."""

from mesh_t5.demo.command import main  # noqa: F401
