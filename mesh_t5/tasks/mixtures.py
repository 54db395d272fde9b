"""T5's mixtures (t5/data/mixtures.py).

- glue_v002_proportional / super_glue_v102_proportional: fixed weights = the training-set sizes (T5's
  tables; eval-only tasks weigh 0), so the rates need no data.
- all_proportional / all_mix / leave_one_out_*: those fixed weights (GLUE's RTE halved, as it is also in
  SuperGLUE) and examples-proportional rates min(n, K) for the other tasks, K = 2**19 (the paper's
  multi-task pre-training, Section 3.5.3; T5 leaves `maximum` to gin); the C4 task at rate_unsupervised
  (1e6) in all_mix / en_mix, at its (capped) size in all_proportional.
- all_equal and the large_* mixtures as T5.
"""

from __future__ import annotations

import functools

from mesh_t5.data.mixing import rate_num_examples, rate_unsupervised
from mesh_t5.data.registry import MixtureRegistry
from mesh_t5.tasks.glue import GLUE_WEIGHT_MAPPING, SUPER_GLUE_WEIGHT_MAPPING

K = 2**19
proportional = functools.partial(rate_num_examples, maximum=K)
C4_UNSUPERVISED = "c4_v020_unsupervised"

_glue = list(GLUE_WEIGHT_MAPPING)
_super_glue = list(SUPER_GLUE_WEIGHT_MAPPING)
_wsc_dpr = ["dpr_v001_simple", "super_glue_wsc_v102_simple_train", "super_glue_wsc_v102_simple_eval"]
_others = [
    "cnn_dailymail_v002",
    "squad_v010_allanswers",
    "wmt_t2t_ende_v003",
    "wmt15_enfr_v003",
    "wmt16_enro_v003",
]
SUPERVISED_TASKS = _glue + _super_glue + _others
FINETUNE_TASKS = ["glue_v002_proportional", "super_glue_v102_proportional", *_others]


def _add(name: str, entries: list, **kwargs) -> None:
    MixtureRegistry.add(name, entries, overwrite=True, **kwargs)


def _fixed_or_proportional(name: str, dedupe: bool):
    """Returns T5's rate for a task: its fixed GLUE/SuperGLUE weight (GLUE RTE halved when `dedupe`),
    else examples-proportional."""
    rate = GLUE_WEIGHT_MAPPING.get(name, SUPER_GLUE_WEIGHT_MAPPING.get(name))
    if rate is None:
        return proportional
    return rate * 0.5 if dedupe and "glue" in name and "rte" in name else rate


_add("glue_v002_proportional", list(GLUE_WEIGHT_MAPPING.items()))
_add("super_glue_v102_proportional", list(SUPER_GLUE_WEIGHT_MAPPING.items()))
_add("glue_mnli_and_dev_v002", [t for t in _glue if "mnli" in t], default_rate=1.0)
_add("en_mix", [(C4_UNSUPERVISED, rate_unsupervised), *_glue, *_super_glue, "squad_v010_allanswers"],
     default_rate=proportional)  # fmt: skip
_add("all_equal", [*SUPERVISED_TASKS, C4_UNSUPERVISED], default_rate=1.0)
_add("all_proportional", [(t, _fixed_or_proportional(t, True)) for t in [*SUPERVISED_TASKS, C4_UNSUPERVISED]])
_add(
    "all_mix",
    [(C4_UNSUPERVISED, rate_unsupervised), *[(t, _fixed_or_proportional(t, True)) for t in SUPERVISED_TASKS]],
)

# Leave-one-out co-training (paper Table 14): everything but one fine-tuning task (GLUE and SuperGLUE
# each count as one).
for held_out in FINETUNE_TASKS:
    group = {"glue_v002_proportional": _glue, "super_glue_v102_proportional": _super_glue}.get(
        held_out, [held_out]
    )
    dedupe = held_out not in ("glue_v002_proportional", "super_glue_v102_proportional")
    kept = [t for t in [*SUPERVISED_TASKS, C4_UNSUPERVISED] if t not in group]
    _add(f"leave_one_out_{held_out}", [(t, _fixed_or_proportional(t, dedupe)) for t in kept])

_large_translation = ["wmt_t2t_ende_v003", "wmt15_enfr_v003"]
_add("large_supervised_equal", [*_large_translation, "cnn_dailymail_v002"], default_rate=1.0)
_add("large_supervised_proportional", [*_large_translation, "cnn_dailymail_v002"], default_rate=proportional)
_add("large_translation_equal", _large_translation, default_rate=1.0)
_add("wsc_dpr_simple_proportional", [(t, SUPER_GLUE_WEIGHT_MAPPING[t]) for t in _wsc_dpr])
