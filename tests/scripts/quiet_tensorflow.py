"""Run by tests/test_faults.py: after `quiet_startup()`, TensorFlow's start-up writes nothing to stderr.

Usage: python tests/scripts/quiet_tensorflow.py (with no TF_CPP_* or MESH_T5_* variables set).
"""

import tempfile

from mesh_t5.logging_utils import quiet_startup

quiet_startup()
import tensorflow as tf  # noqa: E402 (must come after quiet_startup)

tf.constant(1) + 1
tf.summary.create_file_writer(tempfile.mkdtemp())
