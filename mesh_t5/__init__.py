"""mesh_t5: the T5 text-to-text framework on JAX, with Mesh-TensorFlow style layouts.

    import mesh_t5
    model = mesh_t5.T5Model.from_pretrained(path, mesh_shape="data:2,model:4")
    model.generate(["translate English to German: That is good."], beam_size=4)
    mesh_t5.get_task("glue_cola_v002"); mesh_t5.list_tasks()

Heavy modules (JAX, the data package, TensorFlow) load on first use, so `import mesh_t5`
and `mesh-t5 --help` stay fast; `get_task` and the other look-ups load T5's catalogue (`mesh_t5.tasks`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mesh_t5.config import MODEL_SIZES, DecodeOptions, T5Config, get_model_config
from mesh_t5.errors import UserError

__version__ = "0.1.0"

_LAZY = {
    "T5Model": ("mesh_t5.model", "T5Model"),
    "get_task": ("mesh_t5.tasks", "get_task"),
    "get_mixture": ("mesh_t5.tasks", "get_mixture"),
    "list_tasks": ("mesh_t5.tasks", "list_tasks"),
    "list_mixtures": ("mesh_t5.tasks", "list_mixtures"),
    "TaskRegistry": ("mesh_t5.data", "TaskRegistry"),
    "MixtureRegistry": ("mesh_t5.data", "MixtureRegistry"),
    "data": ("mesh_t5.data", None),
}

if TYPE_CHECKING:
    from mesh_t5 import data
    from mesh_t5.data import MixtureRegistry, TaskRegistry
    from mesh_t5.model import T5Model
    from mesh_t5.tasks import get_mixture, get_task, list_mixtures, list_tasks


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'mesh_t5' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


__all__ = [
    "MODEL_SIZES",
    "DecodeOptions",
    "MixtureRegistry",
    "T5Config",
    "T5Model",
    "TaskRegistry",
    "UserError",
    "__version__",
    "data",
    "get_mixture",
    "get_model_config",
    "get_task",
    "list_mixtures",
    "list_tasks",
]
