"""The demo's tasks: span corruption on stdlib docstrings, and two tasks derived from them.

The files live in a run's data directory (written by `mesh-t5 demo`, see
`mesh_t5.demo_corpus`), so the tasks are registered for a directory:

- in Python: `register_demo_tasks("/path/to/run/data")`;
- on the command line: set `MESH_T5_DEMO_DIR=/path/to/run/data`; importing the task
  catalogue then registers them, so `mesh-t5 train/eval/infer` find them by name.

Registered names:
  demo_span_corruption   "text" lines -> T5 span corruption (noise 0.15, mean span 3)
  demo_summarize         "summarize: <name>: <the docstring's first sentences, shuffled>" -> its
                         summary line (ROUGE; `mesh-t5 demo` also picks among the input's
                         sentences by the model's score)
  demo_family            "which module: <docstring>" -> stdlib package (accuracy)
  demo_finetune          mixture of the two, examples-proportional
"""

from __future__ import annotations

import os
from pathlib import Path

from mesh_t5.errors import UserError

DEMO_DIR_ENV = "MESH_T5_DEMO_DIR"
VOCAB_FILE = "spm.model"
PRETRAIN_FILES = {"train": "pretrain_train.txt", "validation": "pretrain_validation.txt"}
SPAN_CORRUPTION = "demo_span_corruption"
SUMMARIZE = "demo_summarize"
FAMILY = "demo_family"
MIXTURE = "demo_finetune"
NAMES = (SPAN_CORRUPTION, SUMMARIZE, FAMILY, MIXTURE)


def register_demo_tasks(data_dir: str | os.PathLike) -> list[str]:
    """Registers (or re-registers) the demo tasks and mixture over the files in `data_dir`; returns their names.

    `data_dir` must hold `spm.model` and the JSONL/text files `mesh-t5 demo` writes.
    """
    from mesh_t5.data import metrics
    from mesh_t5.data import preprocessors as pp
    from mesh_t5.data.objectives import unsupervised_preprocessors
    from mesh_t5.data.registry import Feature, MixtureRegistry, TaskRegistry
    from mesh_t5.data.sources import JsonlSource, TextLineSource
    from mesh_t5.demo_corpus import SPLITS, TASK_FILES
    from mesh_t5.vocab import SentencePieceVocabulary

    root = Path(data_dir)
    vocab_path = root / VOCAB_FILE
    if not vocab_path.is_file():
        raise UserError(
            f"demo data directory {str(root)!r} has no {VOCAB_FILE}; run `mesh-t5 demo` to create it"
        )
    vocab = SentencePieceVocabulary(vocab_path)
    features = {"inputs": Feature(vocab), "targets": Feature(vocab)}

    TaskRegistry.add(
        SPAN_CORRUPTION,
        TextLineSource({split: str(root / name) for split, name in PRETRAIN_FILES.items()}),
        unsupervised_preprocessors("span_corruption", "text"),
        features,
        overwrite=True,
    )
    for name, task, metric_fns in (
        (SUMMARIZE, "summarize", [metrics.rouge]),
        (FAMILY, "family", [metrics.accuracy]),
    ):
        source = JsonlSource({split: str(root / TASK_FILES[task].format(split=split)) for split in SPLITS})
        TaskRegistry.add(
            name,
            source,
            [pp.rekey({"inputs": "inputs", "targets": "targets"}), pp.tokenize, pp.append_eos_after_trim],
            features,
            metric_fns=metric_fns,
            overwrite=True,
        )
    from mesh_t5.data.mixing import rate_num_examples

    MixtureRegistry.add(
        MIXTURE, [(SUMMARIZE, rate_num_examples), (FAMILY, rate_num_examples)], overwrite=True
    )
    return list(NAMES)


def register_from_environment() -> list[str]:
    """Registers the demo tasks for `$MESH_T5_DEMO_DIR` when it is set; returns the names (or [])."""
    data_dir = os.environ.get(DEMO_DIR_ENV, "").strip()
    return register_demo_tasks(data_dir) if data_dir else []


register_from_environment()
