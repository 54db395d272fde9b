"""The registered task and mixture catalogue: C4 (every objective), GLUE, SuperGLUE, SQuAD, CNN/DM, WMT.

Importing this package registers it (`mesh_t5.data` never does: the commands and `mesh_t5.get_task` import
it, as seqio users import their task modules); the look-ups below are the registry's, re-exported so that
`mesh_t5.get_task` and friends load the catalogue first. Registering needs no data: TFDS datasets (in
$TFDS_DATA_DIR) and the vocabulary ($MESH_T5_VOCAB) are opened on first use.
"""

from mesh_t5.data.registry import get_mixture, get_mixture_or_task, get_task, list_mixtures, list_tasks
from mesh_t5.tasks import experiments, generation, glue, mixtures  # noqa: F401  (registration side effects)

__all__ = ["get_mixture", "get_mixture_or_task", "get_task", "list_mixtures", "list_tasks"]
