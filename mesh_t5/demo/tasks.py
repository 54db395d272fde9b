"""The demo's tasks: span corruption on stdlib docstrings, and two tasks derived from them.

Importing this module registers them, as a seqio task module does; a command that uses them reads
the files and vocabulary of the `mesh-t5 demo` run whose data directory gin binds. Each run writes
`RUN/demo.gin` (`gin_file_text`), so `mesh-t5 train --gin_file=RUN/demo.gin ...` finds them by name:

    import mesh_t5.demo.tasks
    demo_data_dir.path = '/abs/path/RUN/data'

Registered names:
  demo_span_corruption   "text" lines -> T5 span corruption (noise 0.15, mean span 3)
  demo_summarize         "summarize: <name>: <the docstring's first sentences, shuffled>" -> its
                         summary line (ROUGE; `mesh-t5 demo` also picks among the input's
                         sentences by the model's score)
  demo_family            "which module: <docstring>" -> stdlib package (accuracy)
  demo_finetune          mixture of the two, examples-proportional
  demo_summarize_few,    the same tasks trained on a few labelled examples (the files
  demo_family_few,       `<task>_few_train.jsonl`); validation and test are the full tasks' splits
  demo_finetune_few
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path

import gin

from mesh_t5.data import metrics
from mesh_t5.data import preprocessors as pp
from mesh_t5.data.mixing import rate_num_examples
from mesh_t5.data.objectives import unsupervised_preprocessors
from mesh_t5.data.registry import Feature, MixtureRegistry, TaskRegistry
from mesh_t5.data.sources import FileSource, JsonlSource, Source, TextLineSource
from mesh_t5.demo.corpus import SPLITS, TASK_FILES
from mesh_t5.errors import UserError
from mesh_t5.vocab import LazyVocabulary, SentencePieceVocabulary

GIN_FILE = "demo.gin"
VOCAB_FILE = "spm.model"
PRETRAIN_FILES = {"train": "pretrain_train.txt", "validation": "pretrain_validation.txt"}
SPAN_CORRUPTION = "demo_span_corruption"
SUMMARIZE = "demo_summarize"
FAMILY = "demo_family"
MIXTURE = "demo_finetune"
# The low-resource arm: few-example training files next to the full ones.
FEW_SHOT_FILE = "{task}_few_train.jsonl"
SUMMARIZE_FEW = "demo_summarize_few"
FAMILY_FEW = "demo_family_few"
MIXTURE_FEW = "demo_finetune_few"


def demo_data_dir(path: str | None = None) -> Path:
    """Returns the data directory of the demo run whose tasks are read (bound by RUN/demo.gin)."""
    if not path:
        raise UserError(
            f"the demo tasks read the files of a `mesh-t5 demo` run: pass --gin_file=RUN/{GIN_FILE} "
            "(the run writes it)"
        )
    return Path(path)


# Registered with gin's config unlocked: this module may first be imported after a command in the same
# process finalized (locked) the config.
with gin.unlock_config():
    demo_data_dir = gin.configurable(demo_data_dir)


def gin_file_text(data_dir: Path) -> str:
    """Returns the text of a run's demo.gin: this module's import and the run's data directory."""
    return (
        "# Written by `mesh-t5 demo`: its tasks (mesh_t5/demo/tasks.py) over this run's data directory.\n"
        "# Pass it to a mesh-t5 command that names them: --gin_file=<this file>.\n"
        f"import mesh_t5.demo.tasks\n\ndemo_data_dir.path = {str(data_dir.resolve())!r}\n"
    )


@functools.cache
def _vocabulary(root: Path) -> SentencePieceVocabulary:
    if not (root / VOCAB_FILE).is_file():
        raise UserError(f"demo data directory {str(root)!r} has no {VOCAB_FILE}; run `mesh-t5 demo` first")
    return SentencePieceVocabulary(root / VOCAB_FILE)


class _RunVocabulary(LazyVocabulary):
    """The bound run's vocabulary, looked up at each use (one process may use several runs)."""

    def resolve(self) -> SentencePieceVocabulary:
        return _vocabulary(demo_data_dir())


@functools.cache
def _files(source_type: type[FileSource], names: tuple[tuple[str, str], ...], root: Path) -> FileSource:
    return source_type({split: str(root / name) for split, name in names})


class _RunFiles(Source):
    """A task's files, by name, in the bound run's data directory (one source per directory)."""

    def __init__(self, source_type: type[FileSource], names: Mapping[str, str]):
        super().__init__()
        self._type, self._names = source_type, tuple(names.items())

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(split for split, _ in self._names)

    def _source(self) -> FileSource:
        return _files(self._type, self._names, demo_data_dir())

    def num_examples(self, split: str) -> int | None:
        return self._source().num_examples(split)

    def iter_split(
        self, split: str, *position: int
    ) -> Iterator[dict]:  # position: start, shard_index, num_shards
        return self._source().iter_split(split, *position)

    def describe(self, split: str) -> str:
        return self._source().describe(split)


def _register() -> None:
    vocabulary = _RunVocabulary(None, f"the demo run's {VOCAB_FILE}")
    features = {"inputs": Feature(vocabulary), "targets": Feature(vocabulary)}
    span_corruption = unsupervised_preprocessors("span_corruption", "text")
    TaskRegistry.add(SPAN_CORRUPTION, _RunFiles(TextLineSource, PRETRAIN_FILES), span_corruption, features)
    for few, (summarize, family, mixture) in enumerate(
        ((SUMMARIZE, FAMILY, MIXTURE), (SUMMARIZE_FEW, FAMILY_FEW, MIXTURE_FEW))
    ):
        for name, task, metric_fn in (
            (summarize, "summarize", metrics.rouge),
            (family, "family", metrics.accuracy),
        ):
            files = {split: TASK_FILES[task].format(split=split) for split in SPLITS}
            if few:
                files["train"] = FEW_SHOT_FILE.format(task=task)
            TaskRegistry.add(
                name,
                _RunFiles(JsonlSource, files),
                [pp.rekey({"inputs": "inputs", "targets": "targets"}), pp.tokenize, pp.append_eos_after_trim],
                features,
                metric_fns=[metric_fn],
            )
        MixtureRegistry.add(mixture, [(summarize, rate_num_examples), (family, rate_num_examples)])


_register()
