"""Mixtures of the paper (Section 3.5): GLUE/SuperGLUE proportional with K = 2**21, and all tasks
plus C4 for multi-task training."""

from __future__ import annotations

import functools

from mesh_t5.data.mixing import rate_num_examples, rate_unsupervised
from mesh_t5.data.registry import MixtureRegistry
from mesh_t5.tasks.generation import WMT
from mesh_t5.tasks.glue import GLUE_TASKS, SUPERGLUE_TASKS

K = 2**21
proportional = functools.partial(rate_num_examples, maximum=K)

MixtureRegistry.add("glue_v002_proportional", GLUE_TASKS, default_rate=proportional, overwrite=True)
MixtureRegistry.add(
    "super_glue_v102_proportional", SUPERGLUE_TASKS, default_rate=proportional, overwrite=True
)
_SUPERVISED = [*GLUE_TASKS, *SUPERGLUE_TASKS, "squad_v010_allanswers", "cnn_dailymail_v002", *WMT]
MixtureRegistry.add("all_proportional", _SUPERVISED, default_rate=proportional, overwrite=True)
MixtureRegistry.add("all_equal", _SUPERVISED, default_rate=1.0, overwrite=True)
MixtureRegistry.add(
    "all_mix", [("c4_v220_span_corruption", rate_unsupervised), *[(t, proportional) for t in _SUPERVISED]],
    overwrite=True,
)  # fmt: skip
