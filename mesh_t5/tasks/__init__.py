"""The registered task and mixture catalogue: C4 (every objective), GLUE, SuperGLUE, SQuAD, CNN/DM, WMT.

Registering needs no data: TFDS datasets (in $TFDS_DATA_DIR) and the vocabulary ($MESH_T5_VOCAB)
are opened on first use.
"""

from mesh_t5.tasks import experiments, generation, glue, mixtures  # noqa: F401  (registration side effects)
