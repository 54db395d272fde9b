"""mesh_t5: the T5 text-to-text framework on JAX, with Mesh-TensorFlow style layouts."""

from mesh_t5.config import MODEL_SIZES, T5Config, get_model_config
from mesh_t5.errors import UserError

__version__ = "0.1.0"

__all__ = ["MODEL_SIZES", "T5Config", "UserError", "__version__", "get_model_config"]
