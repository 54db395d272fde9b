"""Run by tests/test_cli.py: the modules that register gin configurables when first imported import
cleanly after gin's config was finalized (locked), as happens when a command runs in a process where
an earlier command finished (a test session, a notebook); their configurables can then be bound.

Usage: python tests/scripts/import_after_gin_finalize.py (prints the three bound values)
"""

import gin

gin.finalize()

import mesh_t5.data  # noqa: E402 (must come after the finalize)
import mesh_t5.demo.tasks  # noqa: E402
import mesh_t5.gin_utils  # noqa: E402, F401

with gin.unlock_config():
    gin.parse_config(["get_dataset.use_cached = True", "demo_data_dir.path = 'd'", "T5Config.num_heads = 3"])
print(
    gin.query_parameter("get_dataset.use_cached"),
    gin.query_parameter("demo_data_dir.path"),
    gin.query_parameter("T5Config.num_heads"),
)
