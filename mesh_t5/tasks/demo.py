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
  demo_summarize_few,    the same tasks trained on a few labelled examples (the files
  demo_family_few,       `<task>_few_train.jsonl`, when the run wrote them); validation and
  demo_finetune_few      test are the full tasks' splits
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
# The low-resource arm: few-example training files next to the full ones.
FEW_SHOT_FILE = "{task}_few_train.jsonl"
SUMMARIZE_FEW = "demo_summarize_few"
FAMILY_FEW = "demo_family_few"
MIXTURE_FEW = "demo_finetune_few"


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
    names = list(NAMES)
    few_files = {task: root / FEW_SHOT_FILE.format(task=task) for task in ("summarize", "family")}
    arms = [(SUMMARIZE, FAMILY, MIXTURE, {})]
    if all(path.is_file() for path in few_files.values()):
        arms.append((SUMMARIZE_FEW, FAMILY_FEW, MIXTURE_FEW, {"train": few_files}))
        names += [SUMMARIZE_FEW, FAMILY_FEW, MIXTURE_FEW]
    from mesh_t5.data.mixing import rate_num_examples

    for summarize_name, family_name, mixture_name, overrides in arms:
        for name, task, metric_fns in (
            (summarize_name, "summarize", [metrics.rouge]),
            (family_name, "family", [metrics.accuracy]),
        ):
            files = {split: str(root / TASK_FILES[task].format(split=split)) for split in SPLITS}
            files.update({split: str(by_task[task]) for split, by_task in overrides.items()})
            TaskRegistry.add(
                name,
                JsonlSource(files),
                [pp.rekey({"inputs": "inputs", "targets": "targets"}), pp.tokenize, pp.append_eos_after_trim],
                features,
                metric_fns=metric_fns,
                overwrite=True,
            )
        MixtureRegistry.add(
            mixture_name,
            [(summarize_name, rate_num_examples), (family_name, rate_num_examples)],
            overwrite=True,
        )
    return names


def register_from_environment() -> list[str]:
    """Registers the demo tasks for `$MESH_T5_DEMO_DIR` when it is set; returns the names (or [])."""
    data_dir = os.environ.get(DEMO_DIR_ENV, "").strip()
    return register_demo_tasks(data_dir) if data_dir else []


register_from_environment()
