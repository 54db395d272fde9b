"""Cached tasks (seqio's `cache_tasks_main` idea): a task's deterministic preprocessing, stored once.

`mesh-t5 cache_tasks` runs, for every split, a task's preprocessors up to and including `tokenize`
(formatting, tokenization: no randomness) and stores the examples; `task.get_dataset(split,
use_cached=True)` reads them back and runs only the preprocessors after `tokenize` (the random
objective stays online, seeded as before), so it gives exactly the uncached task's examples.

```
DIR/<task>/<split>-00000-of-00004.jsonl.gz   one JSON line per source record, in order: {"index": i, "example":
                                             {...}}, or {"index": i} where a cached preprocessor dropped it, or
                                             {"index": i, "unreadable": true} where the source did; the shards
                                             hold consecutive ranges of the source's records
DIR/<task>/cache_info.json                   fingerprint, per split: examples, source examples, shards and the
                                             source records of each (`shard_lengths`: readers seek by them), tokens
DIR/<task>/COMPLETED                         written last; a cache without it is refused
```

The fingerprint hashes the task's source description, the cached preprocessors (names, code, the
values they close over) and the output features' vocabularies: change one and the cache is stale,
refused with one line. Examples dropped by a cached preprocessor leave a gap in the indices, so
the random objective, keyed by source index, draws the same numbers with and without the cache.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import itertools
import json
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

from mesh_t5.data.sources import Source, read_files
from mesh_t5.errors import UserError
from mesh_t5.vocab import LazyVocabulary

INFO_FILE = "cache_info.json"
COMPLETED = "COMPLETED"
CACHE_DIRS_ENV = "MESH_T5_CACHE_DIRS"  # colon-separated directories searched for <task>/ caches
_cache_dirs: list[str] = []


def add_cache_dirs(*directories: str) -> None:
    """Adds directories searched for task caches (besides $MESH_T5_CACHE_DIRS)."""
    _cache_dirs.extend(os.fspath(d) for d in directories)


def cache_dirs() -> list[str]:
    env = [d for d in os.environ.get(CACHE_DIRS_ENV, "").split(":") if d]
    return [*_cache_dirs, *env]


def shard_name(split: str, index: int, num_shards: int) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}.jsonl.gz"


def tokenize_stage(task: Any) -> int:
    """Returns the position of the task's `tokenize` preprocessor (what the cache stores up to)."""
    for stage, p in enumerate(task.preprocessors):
        if hasattr(p, "stream"):  # a registry.StreamPreprocessor (the registry imports this module)
            break
        if getattr(p, "is_tokenize", False):
            if task.source.max_tokens is not None:
                break
            return stage
    raise UserError(
        f"task {task.name!r} cannot be cached: it needs a `tokenize` preprocessor preceded only by "
        "per-example preprocessors, and no max_tokens on its source"
    )


def _value_digest(value: Any, depth: int = 0) -> str:
    """A stable description of a value a preprocessor closes over (functions by their code)."""
    if depth > 6:
        return "..."
    if isinstance(value, str | int | float | bool | type(None) | bytes):
        return repr(value)
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(map(repr, value)) if isinstance(value, set | frozenset) else value
        return f"{type(value).__name__}(" + ",".join(_value_digest(v, depth + 1) for v in items) + ")"
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{k!r}:{_value_digest(v, depth + 1)}" for k, v in sorted(value.items(), key=repr))
            + "}"
        )
    if isinstance(value, functools.partial):
        return f"partial({_value_digest(value.func, depth + 1)},{_value_digest(value.args, depth + 1)},{_value_digest(value.keywords, depth + 1)})"
    if isinstance(value, types.FunctionType):
        cells = [c.cell_contents for c in value.__closure__ or () if c.cell_contents is not value]
        return f"fn({value.__qualname__},{_code_digest(value.__code__)},{_value_digest(cells, depth + 1)})"
    from mesh_t5.vocab import Vocabulary

    if isinstance(value, Vocabulary):
        return vocabulary_digest(value)
    return type(value).__qualname__


def _code_digest(code: types.CodeType) -> str:
    consts = [_code_digest(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return hashlib.sha256(repr((code.co_code, consts, code.co_names)).encode()).hexdigest()[:16]


def vocabulary_digest(vocab: Any) -> str:
    """The vocabulary's type and identity (SentencePiece: the model bytes' md5), loading a lazy one."""
    inner = vocab.resolve() if isinstance(vocab, LazyVocabulary) else vocab
    parts = [hashlib.md5(p).hexdigest() if isinstance(p, bytes) else repr(p) for p in inner.identity()]
    return f"{type(inner).__name__}({','.join(parts)})"


def fingerprint(task: Any) -> str:
    """Returns the sha256 of what the cached examples depend on (see the module docstring)."""
    stage = tokenize_stage(task)
    parts = [task.name, *(task.source.describe(s) for s in task.splits)]
    parts += [_value_digest(p) for p in task.preprocessors[: stage + 1]]
    parts += [
        f"{name}:{vocabulary_digest(f.vocabulary)}:{f.add_eos}" for name, f in task.output_features.items()
    ]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def to_json(example: dict) -> dict:
    """An example as JSON values (numpy arrays -> lists, numpy scalars -> Python)."""
    return {k: v.tolist() if isinstance(v, np.ndarray | np.generic) else v for k, v in example.items()}


def cached_source(task: Any) -> CachedSource:
    """Returns the task's valid cache as a source; UserError (one line) if none, incomplete or stale."""
    candidates = [os.path.join(d, task.name) for d in cache_dirs()]
    found = [c for c in candidates if os.path.isdir(c)]
    if not found:
        raise UserError(
            f"task {task.name!r} has no cache in {cache_dirs() or 'no cache directory'}; run "
            f"`mesh-t5 cache_tasks --tasks={task.name} --output=DIR` and add DIR (${CACHE_DIRS_ENV})"
        )
    directory = found[0]
    if not os.path.exists(os.path.join(directory, COMPLETED)):
        raise UserError(
            f"the cache of task {task.name!r} in {directory!r} is incomplete (no {COMPLETED}); rebuild it"
        )
    with open(os.path.join(directory, INFO_FILE), encoding="utf-8") as f:
        info = json.load(f)
    if any("shard_lengths" not in s for s in info["splits"].values()):
        raise UserError(
            f"the cache of task {task.name!r} in {directory!r} was written by an older mesh_t5 (no shard "
            "lengths to seek by); rebuild it with `mesh-t5 cache_tasks`"
        )
    if info["fingerprint"] != fingerprint(task):
        raise UserError(
            f"the cache of task {task.name!r} in {directory!r} is stale: the task's source, preprocessors "
            "or vocabulary changed since it was built; rebuild it with `mesh-t5 cache_tasks`"
        )
    return CachedSource(directory, info, task.output_features)


DROPPED = "__dropped_by_a_cached_preprocessor__"


def drop_placeholders(key: Any, example: dict) -> dict | None:
    """The MapStage right after a cached source: removes the placeholders of dropped examples."""
    return None if DROPPED in example else example


class CachedSource(Source):
    """A task's cached, tokenized examples, with a placeholder `{DROPPED: True}` at each source index a
    cached preprocessor dropped: the placeholders take their places in the shuffle buffer (as the
    dropped examples do without the cache) and `drop_placeholders` removes them after it. Hosts shard
    it as they shard the task's source (`Source.shard_indices`), so each reads the same examples."""

    def __init__(self, directory: str, info: dict, features: Any):
        super().__init__()
        self.directory, self.info, self.features = directory, info, features

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.info["splits"])

    def num_examples(self, split: str) -> int | None:
        return int(self.info["splits"][split]["num_source_examples"])

    def shard_indices(
        self, split: str, shard_index: int = 0, num_shards: int = 1, limit: int | None = None
    ) -> range:
        if self.info["splits"][split].get("stride_sharded") and num_shards > 1:  # as the sizeless source
            return range(shard_index, sys.maxsize, num_shards)
        return super().shard_indices(split, shard_index, num_shards, limit)

    def read(self, split: str, start: int, stop: int) -> Iterator[dict | None]:
        lengths = self.info["splits"][split]["shard_lengths"]
        return read_files(
            lengths, lambda f, offset: self._read_file(split, f, len(lengths), offset), start, stop
        )

    def _read_file(self, split: str, shard: int, num_shards: int, offset: int) -> Iterator[dict | None]:
        path = os.path.join(self.directory, shard_name(split, shard, num_shards))
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in itertools.islice(lines, offset, None):  # one line a record: skipping is not parsing
                record = json.loads(line)
                if "example" not in record:
                    yield None if record.get("unreadable") else {DROPPED: True}
                    continue
                ex = record["example"]
                for name in self.features:
                    if name in ex:
                        ex[name] = np.asarray(ex[name], dtype=np.int32)
                yield ex
