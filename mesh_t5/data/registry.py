"""Tasks, mixtures and their registries (`get_task`, `get_mixture`, `list_tasks`).

A Task = a source + a list of preprocessors + output features. Preprocessors are either
per-example functions `fn(example, ctx) -> example | None` (None drops the example, counted in
`task.stats`), or `StreamPreprocessor`s that rewrite the stream (e.g. concatenate-and-split).
`ctx` gives the task, the output features, the sequence length, and `ctx.rng`: a numpy Generator
that depends only on (seed, task, preprocessor position, example key) - so pipelines are
deterministic and resumable.

The registries hold what has been registered. T5's catalogue (`mesh_t5.tasks`) registers itself when
imported, as seqio's task modules do: the commands and `mesh_t5.get_task` import it; this package never does.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mesh_t5.data.sources import Source
from mesh_t5.data.stream import Key, MapStage, SourceStream, Stream, rng_for, stable_hash
from mesh_t5.errors import UserError
from mesh_t5.validate import ArgumentTypeError
from mesh_t5.vocab import Vocabulary

log = logging.getLogger("mesh_t5.data")


@dataclasses.dataclass(frozen=True)
class Feature:
    """An output feature: its vocabulary, whether EOS is appended, whether every example must have it."""

    vocabulary: Vocabulary
    add_eos: bool = True
    required: bool = True


@dataclasses.dataclass
class Context:
    """What a preprocessor may use besides the example (see module docstring)."""

    task: Task
    split: str
    seed: int
    stage: int
    key: Key = ()
    sequence_length: Mapping[str, int] | None = None
    _rng: np.random.Generator | None = None

    @property
    def output_features(self) -> Mapping[str, Feature]:
        return self.task.output_features

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = rng_for(self.seed, stable_hash(self.task.name), self.stage, *self.key)
        return self._rng

    def count(self, what: str, n: int = 1) -> None:
        self.task.stats[what] += n

    def warn_once(self, what: str, message: str) -> None:
        """Logs `message` once per task and `what` (the count stays in task.stats)."""
        if what not in self.task._warned:
            self.task._warned.add(what)
            log.warning("task %r: %s", self.task.name, message)


class StreamPreprocessor:
    """A preprocessor that transforms the whole item stream (with its own resumable state)."""

    def stream(self, upstream: Stream, ctx: Context) -> Stream:
        raise NotImplementedError


def _fn_name(fn: Any) -> str:
    inner = getattr(fn, "func", fn)
    return getattr(inner, "__name__", type(inner).__name__)


class TaskIterator(Stream):
    """Iterates a task split as example dicts; resumable via get_state/set_state."""

    def __init__(self, task: Task, chain: Stream):
        self.task, self.chain = task, chain

    def __next__(self) -> dict:
        try:
            return next(self.chain)[1]
        except UserError as e:
            if str(e).startswith("task "):
                raise
            raise UserError(f"task {self.task.name!r}: {e}") from None

    def get_state(self) -> dict:
        return self.chain.get_state()

    def set_state(self, state: dict) -> None:
        self.chain.set_state(state)


class Task:
    """A named source + preprocessors + output features + postprocessing and metrics."""

    def __init__(
        self,
        name: str,
        source: Source,
        preprocessors: Sequence[Callable | StreamPreprocessor] = (),
        output_features: Mapping[str, Feature] | None = None,
        postprocess_fn: Callable[..., Any] | None = None,
        metric_fns: Sequence[Callable[[list, list], dict[str, float]]] = (),
        *,
        shuffle_buffer_size: int = 10_000,
        repeat_feature: str = "targets",
    ):
        if not isinstance(source, Source):
            raise UserError(
                f"task {name!r}: source must be a mesh_t5.data Source, got {type(source).__name__}"
            )
        self.name, self.source = name, source
        self.preprocessors = list(preprocessors)
        self.output_features = dict(output_features or {})
        self.postprocess_fn, self.metric_fns = postprocess_fn, list(metric_fns)
        self.shuffle_buffer_size, self.repeat_feature = shuffle_buffer_size, repeat_feature
        self.stats: collections.Counter = collections.Counter()
        self._warned: set[str] = set()
        self._repeat_limits: dict[str, tuple[int, int]] = {}

    def __repr__(self) -> str:
        return f"Task({self.name!r})"

    @property
    def splits(self) -> tuple[str, ...]:
        return self.source.splits

    def num_input_examples(self, split: str) -> int | None:
        """Returns the number of source examples of `split` when the source knows it."""
        try:
            return self.source.num_examples(split)
        except UserError as e:
            raise UserError(f"task {self.name!r}: {e}") from None

    def postprocess(self, text: str, example: Mapping | None = None, is_target: bool = False) -> Any:
        """Returns `postprocess_fn(text, example=..., is_target=...)`, or `text` without one."""
        if self.postprocess_fn is None:
            return text
        return self.postprocess_fn(text, example=example, is_target=is_target)

    def _map_stage(
        self,
        upstream: Stream,
        fn: Callable,
        stage: int,
        split: str,
        seed: int,
        seq_len: Any,
        epoch_keys: bool,
    ) -> Stream:
        name = _fn_name(fn)
        last_kept_epoch = [-1]

        def apply(key: Key, ex: dict) -> dict | None:
            ctx = Context(self, split, seed, stage, key, seq_len)
            try:
                out = fn(ex, ctx)
            except KeyError as e:
                raise UserError(
                    f"task {self.name!r}: preprocessor {name} needs field {e.args[0]!r}, missing from an "
                    f"example with fields {sorted(ex)}"
                ) from None
            if out is None:
                self.stats[f"dropped by {name}"] += 1
                # Keys start with the epoch here: a whole epoch dropped would loop forever on a repeated split.
                if epoch_keys and key and key[0] >= last_kept_epoch[0] + 2:
                    raise UserError(
                        f"task {self.name!r}: preprocessor {name} dropped every example of split {split!r} "
                        "for a whole epoch; check the preprocessor against the data"
                    )
            elif epoch_keys and key:
                last_kept_epoch[0] = key[0]
            return out

        return MapStage(upstream, apply)

    def build_stream(
        self, split, *, seq_len, shuffle, seed, shard_index, num_shards, num_epochs, upto_tokenize=False,
        use_cached=False,
    ):  # fmt: skip
        """The task's stream of examples for one host: source, then its preprocessors (only those up to
        tokenize with `upto_tokenize`, as `mesh-t5 cache_tasks` stores them; after them with `use_cached`)."""
        limit = None
        if self.source.max_tokens is not None and not upto_tokenize:
            limit, last_len = self._repeat_limit(split)
        source, first_stage = self.source, 0
        if use_cached:  # the cache holds the output of the stages up to tokenize (mesh_t5.data.cache)
            from mesh_t5.data import cache

            source, first_stage = cache.cached_source(self), cache.tokenize_stage(self) + 1
        chain: Stream = SourceStream(
            source, split, name=self.name, shuffle=shuffle, seed=seed, shard_index=shard_index,
            num_shards=num_shards, num_epochs=num_epochs, shuffle_buffer_size=self.shuffle_buffer_size, limit=limit,
        )  # fmt: skip
        if use_cached:
            chain = MapStage(chain, cache.drop_placeholders)
        epoch_keys = True  # the items' keys are (epoch, index, ...) until a stream preprocessor regroups them
        for stage, p in enumerate(self.preprocessors):
            if stage < first_stage:
                continue
            if isinstance(p, StreamPreprocessor):
                chain = p.stream(chain, Context(self, split, seed, stage, (), seq_len))
                epoch_keys = False
            else:
                chain = self._map_stage(chain, p, stage, split, seed, seq_len, epoch_keys)
            if getattr(p, "is_tokenize", False):
                if upto_tokenize:
                    return chain
                if limit is not None:
                    chain = MapStage(chain, self._cut_last(limit, last_len))
        return MapStage(chain, self._finalize_fn(seq_len))

    def _cut_last(self, limit: int, last_len: int) -> Callable:
        feat = self.repeat_feature

        def cut(key: Key, ex: dict) -> dict:
            if key[-1] == limit - 1 and feat in ex:
                ex = dict(ex)
                ex[feat] = ex[feat][:last_len]
            return ex

        return cut

    def _repeat_limit(self, split: str) -> tuple[int, int]:
        """Returns (number of source examples, tokens kept from the last) holding `source.max_tokens` tokens."""
        if split not in self._repeat_limits:
            want = self.source.max_tokens
            chain = self.build_stream(
                split,
                seq_len=None,
                shuffle=False,
                seed=0,
                shard_index=0,
                num_shards=1,
                num_epochs=1,
                upto_tokenize=True,
            )
            if not any(getattr(p, "is_tokenize", False) for p in self.preprocessors):
                raise UserError(
                    f"task {self.name!r}: max_tokens needs a tokenize preprocessor to count tokens"
                )
            total = 0
            for (_, idx), ex in chain:  # type: ignore[misc]
                n = len(ex.get(self.repeat_feature, ()))
                if total + n >= want:
                    self._repeat_limits[split] = (idx + 1, want - total)
                    break
                total += n
            else:
                log.warning(
                    "task %r: split %r has only %d %s tokens (< max_tokens=%d); nothing is repeated",
                    self.name, split, total, self.repeat_feature, want,
                )  # fmt: skip
                self._repeat_limits[split] = (1 << 62, 1 << 62)
        return self._repeat_limits[split]

    def _finalize_fn(self, seq_len: Mapping[str, int] | None) -> Callable:
        def finalize(key: Key, ex: dict) -> dict:
            out: dict[str, Any] = {}
            for name, feat in self.output_features.items():
                if name not in ex:
                    if feat.required:
                        raise UserError(
                            f"task {self.name!r}: output feature {name!r} is missing after preprocessing "
                            f"(the example has {sorted(ex)}); add a preprocessor that makes it"
                        )
                    continue
                arr = np.asarray(ex[name], dtype=np.int32).reshape(-1)
                if seq_len is not None and name in seq_len and len(arr) > seq_len[name]:
                    self.stats[f"truncated {name}"] += 1
                    if f"truncate:{name}" not in self._warned:
                        self._warned.add(f"truncate:{name}")
                        log.warning(
                            "task %r: %r longer than %d tokens are truncated (count in task.stats)",
                            self.name, name, seq_len[name],
                        )  # fmt: skip
                    arr = arr[: seq_len[name]]
                out[name] = arr
                if f"{name}_pretokenized" in ex:
                    out[f"{name}_pretokenized"] = ex[f"{name}_pretokenized"]
            return out

        return finalize

    def get_dataset(
        self,
        split: str,
        sequence_length: Mapping[str, int] | None = None,
        shuffle: bool = False,
        seed: int = 0,
        shard_index: int = 0,
        num_shards: int = 1,
        num_epochs: int | None = 1,
        use_cached: bool = False,
    ) -> TaskIterator:
        """Returns an iterator over the split's examples: int32 arrays per output feature plus
        "<feature>_pretokenized" strings when they exist; features longer than `sequence_length`
        are truncated (counted in `task.stats`, warned once). `use_cached`: read the preprocessing up
        to tokenize from the task's cache (`mesh-t5 cache_tasks`; a missing or stale one is an error)."""
        try:
            self.source.check_split(split)
        except UserError as e:
            raise UserError(f"task {self.name!r}: {e}") from None
        if not 0 <= shard_index < num_shards:
            raise UserError(f"shard_index={shard_index} must be in [0, num_shards={num_shards})")
        chain = self.build_stream(
            split, seq_len=sequence_length, shuffle=shuffle, seed=seed, shard_index=shard_index,
            num_shards=num_shards, num_epochs=num_epochs, use_cached=use_cached,
        )  # fmt: skip
        return TaskIterator(self, chain)


RateLike = float | int | Callable[[Task], float]


class Mixture:
    """A named set of tasks with mixing rates (numbers, or functions of the task)."""

    def __init__(
        self,
        name: str,
        tasks_and_rates: Iterable[tuple[str | Task, RateLike] | str | Task],
        default_rate: RateLike | None = None,
    ):
        self.name = name
        self._entries: list[tuple[str, RateLike]] = []
        for entry in tasks_and_rates:
            if isinstance(entry, tuple):
                task, rate = entry
            else:
                if default_rate is None:
                    raise UserError(
                        f"mixture {name!r}: task {entry!r} has no rate; give (task, rate) or default_rate"
                    )
                task, rate = entry, default_rate
            self._entries.append((task.name if isinstance(task, Task) else str(task), rate))
        if not self._entries:
            raise UserError(f"mixture {name!r} has no tasks")
        self._logged_splits: set[str] = set()
        self._logged_equal: set[str] = set()

    def __repr__(self) -> str:
        return f"Mixture({self.name!r})"

    @property
    def tasks(self) -> list[Task]:
        return [get_task(n) for n, _ in self._entries]

    def get_rate(self, task: Task) -> float:
        """Returns the (unnormalised) rate of `task` in this mixture."""
        for n, rate in self._entries:
            if n == task.name:
                value = rate(task) if callable(rate) else rate
                if not np.isfinite(value) or value < 0:
                    raise UserError(
                        f"mixture {self.name!r}: rate of task {n!r} is {value}; rates must be >= 0"
                    )
                return float(value)
        raise UserError(f"task {task.name!r} is not in mixture {self.name!r}")

    def tasks_with_split(self, split: str) -> list[Task]:
        """Returns the tasks that have `split`; the others are left out of that split (logged once), as seqio
        does: a mixture's split is the union of its tasks' splits of that name."""
        tasks = self.tasks
        kept = [t for t in tasks if split in t.splits]
        if not kept:
            have = sorted({s for t in tasks for s in t.splits})
            raise UserError(
                f"mixture {self.name!r}: none of its tasks has a {split!r} split; its tasks have {', '.join(have)}"
            )
        left_out = [t.name for t in tasks if split not in t.splits]
        if left_out and split not in self._logged_splits:
            self._logged_splits.add(split)
            log.warning("mixture %r: %s have no %r split and are left out of it", self.name, left_out, split)
        return kept

    def rates(self, split: str | None = None) -> dict[str, float]:
        """Returns {task name: normalised rate} over all tasks, or over the tasks that have `split`.

        When every task with `split` has rate 0 (e.g. T5's eval-only tasks, weighted by their zero training
        examples, in a mixture's validation split), they are mixed in equal proportions instead, so that
        the split still has a stream."""
        tasks = self.tasks if split is None else self.tasks_with_split(split)
        raw = {t.name: self.get_rate(t) for t in tasks}
        total = sum(raw.values())
        if total <= 0 and split is not None:
            if split not in self._logged_equal:
                self._logged_equal.add(split)
                log.info(
                    "mixture %r: every task with a %r split has rate 0; mixing them equally", self.name, split
                )
            raw, total = dict.fromkeys(raw, 1.0), float(len(raw))
        if total <= 0:
            raise UserError(f"mixture {self.name!r}: the mixing rates sum to {total}; give a positive rate")
        return {k: v / total for k, v in raw.items()}


class _Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def add_provider(self, item: Any, overwrite: bool = False) -> Any:
        if item.name in self._items and not overwrite:
            raise UserError(
                f"{self.kind} {item.name!r} is already registered; pick another name or pass overwrite=True"
            )
        if (self.kind == "task" and item.name in MixtureRegistry._items) or (
            self.kind == "mixture" and item.name in TaskRegistry._items
        ):
            raise UserError(f"{item.name!r} is already the name of a task or mixture; pick another name")
        self._items[item.name] = item
        return item

    def get(self, name: str) -> Any:
        _check_name(name, self.kind)
        if name not in self._items:
            raise _unknown(self.kind, name, list(self._items))
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def remove(self, name: str) -> None:
        self._items.pop(name, None)


class _TaskRegistry(_Registry):
    def add(self, name: str | Task, *args: Any, overwrite: bool = False, **kwargs: Any) -> Task:
        """Registers `Task(name, *args, **kwargs)` (or a Task instance) and returns it."""
        task = name if isinstance(name, Task) else Task(name, *args, **kwargs)
        return self.add_provider(task, overwrite=overwrite)


class _MixtureRegistry(_Registry):
    def add(self, name: str | Mixture, *args: Any, overwrite: bool = False, **kwargs: Any) -> Mixture:
        """Registers `Mixture(name, tasks_and_rates, ...)` (or a Mixture instance) and returns it."""
        mixture = name if isinstance(name, Mixture) else Mixture(name, *args, **kwargs)
        return self.add_provider(mixture, overwrite=overwrite)


TaskRegistry = _TaskRegistry("task")
MixtureRegistry = _MixtureRegistry("mixture")


def _check_name(name: Any, kind: str) -> None:
    if not isinstance(name, str):
        raise ArgumentTypeError(
            f"a {kind} name must be a string, not {type(name).__name__} {name!r}; pass its name"
        )


def _unknown(kind: str, name: str, known: list[str]) -> UserError:
    """Returns the one-line error for a name nobody registered: its close matches, else where names are."""
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "`mesh-t5 tasks` lists them"
    if "mesh_t5.tasks" not in sys.modules:  # a Python user who did not load the catalogue (module docstring)
        hint += "; `import mesh_t5.tasks` registers T5's catalogue"
    return UserError(f"unknown {kind} {name!r}; {hint}")


def get_task(name: str) -> Task:
    """Returns the registered task `name` (UserError naming close matches if unknown)."""
    return TaskRegistry.get(name)


def get_mixture(name: str) -> Mixture:
    """Returns the registered mixture `name`."""
    return MixtureRegistry.get(name)


def get_mixture_or_task(name: str) -> Task | Mixture:
    """Returns the task or mixture called `name`."""
    _check_name(name, "task or mixture")
    if name in MixtureRegistry._items:
        return MixtureRegistry._items[name]
    if name in TaskRegistry._items:
        return TaskRegistry._items[name]
    raise _unknown("task or mixture", name, TaskRegistry.names() + MixtureRegistry.names())


def list_tasks() -> list[str]:
    """Returns the sorted names of the registered tasks."""
    return TaskRegistry.names()


def list_mixtures() -> list[str]:
    """Returns the sorted names of the registered mixtures."""
    return MixtureRegistry.names()
