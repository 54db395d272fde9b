"""The input pipeline: task/mixture -> feature converter -> numpy batches, resumable exactly.

`get_dataset(...)` returns a BatchIterator; `next(it)` gives {feature: int32 [batch_size, length]}.
`it.get_state()` is a JSON-serializable dict (per-source positions and shuffle buffers as indices,
mixture step, concatenation group positions, pending packing rows); a fresh iterator given
`set_state(state)` yields exactly the batches the original would have yielded next.
Randomness is keyed by (seed, names, counters), so the same seed gives the same batches.
Shuffling: a seeded buffer per source (full per-epoch permutation when a split fits the buffer).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import gin
import numpy as np

from mesh_t5.data.feature_converters import ConvertedStream, FeatureConverter
from mesh_t5.data.registry import Mixture, Task, get_mixture_or_task
from mesh_t5.data.stream import MixtureStream, Stream
from mesh_t5.errors import UserError

STATE_VERSION = 1


class BatchIterator(Stream):
    """Yields batches of model features; see the module docstring for the state contract."""

    def __init__(self, rows: ConvertedStream, batch_size: int, name: str):
        self.rows, self.batch_size, self.name = rows, batch_size, name
        self.num_batches = 0

    def __next__(self) -> dict[str, np.ndarray]:
        rows = []
        for _ in range(self.batch_size):
            try:
                rows.append(next(self.rows))
            except StopIteration:
                break
        if not rows:
            raise StopIteration
        while len(rows) < self.batch_size:  # the last batch of a finite pass: zero rows, zero loss weight
            rows.append({k: np.zeros_like(v) for k, v in rows[0].items()})
        self.num_batches += 1
        return {k: np.stack([r[k] for r in rows]).astype(np.int32) for k in rows[0]}  # [B, L]

    def get_state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "name": self.name,
            "num_batches": self.num_batches,
            "rows": self.rows.get_state(),
        }

    def set_state(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION or state.get("name") != self.name:
            raise UserError(
                f"pipeline state is for {state.get('name')!r} (version {state.get('version')}), not "
                f"{self.name!r} (version {STATE_VERSION}); restore it into the same pipeline"
            )
        self.rows.set_state(state["rows"])
        self.num_batches = int(state["num_batches"])


def _task_stream(task: Task, split: str, lengths: Mapping[str, int], **kw) -> Stream:
    return task.get_dataset(split, sequence_length=dict(lengths), **kw)


def get_dataset(
    mixture_or_task_name: str | Task | Mixture,
    task_feature_lengths: Mapping[str, int],
    split: str = "train",
    batch_size: int = 8,
    shuffle: bool = True,
    seed: int = 0,
    shard_index: int = 0,
    num_shards: int = 1,
    feature_converter: str = "enc_dec",
    pack: bool = True,
    num_epochs: int | None = None,
    *,
    pack_window: int = 8,
    loss_on_targets_only: bool = True,
    use_cached: bool = False,
) -> BatchIterator:
    """Returns a resumable iterator of batches {feature: int32 [batch_size, length]} (t5x feature names).

    num_epochs=None repeats forever (training); with a number, the last batch is filled with zero rows.
    A mixture's split mixes its tasks that have that split (see `Mixture.rates`); in a finite pass a task
    that runs out leaves the mixture and the others go on, so every example of every task is given.
    `use_cached`: every task reads its `mesh-t5 cache_tasks` cache (a missing or stale one is an error).
    """
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size} must be >= 1")
    item = (
        mixture_or_task_name
        if isinstance(mixture_or_task_name, Task | Mixture)
        else get_mixture_or_task(mixture_or_task_name)
    )
    kw = dict(
        shuffle=shuffle, seed=seed, shard_index=shard_index, num_shards=num_shards, num_epochs=num_epochs,
        use_cached=use_cached,
    )  # fmt: skip
    if isinstance(item, Task):
        examples: Stream = _task_stream(item, split, task_feature_lengths, **kw)
    else:
        rates = item.rates(split)  # the tasks that have the split; rate 0 = not in the stream
        streams = {
            name: _task_stream(get_mixture_or_task(name), split, task_feature_lengths, **kw)
            for name, rate in rates.items()
            if rate > 0
        }
        examples = MixtureStream(item.name, streams, {n: rates[n] for n in streams}, seed)
    converter = FeatureConverter(feature_converter, pack=pack, loss_on_targets_only=loss_on_targets_only)
    rows = ConvertedStream(examples, converter, task_feature_lengths, pack_window=pack_window)
    return BatchIterator(rows, batch_size, item.name)


# The one data setting a run's gin may bind (`--gin.get_dataset.use_cached=True`): the commands call
# get_dataset with everything else spelled out. Registered with gin's config unlocked: this module is
# often first imported lazily, inside a command, after an earlier command in the same process (a
# test, a notebook) finalized and so locked the config.
with gin.unlock_config():
    get_dataset = gin.configurable("get_dataset", allowlist=["use_cached"])(get_dataset)


def eval_examples(
    task_name: str | Task, split: str = "validation", sequence_length: Mapping[str, int] | None = None
) -> Iterator[dict]:
    """Returns the split's examples in order, once, unshuffled, with their "*_pretokenized" strings."""
    task = task_name if isinstance(task_name, Task) else get_mixture_or_task(task_name)
    if not isinstance(task, Task):
        raise UserError(f"{task.name!r} is a mixture; evaluate each of its tasks")
    return task.get_dataset(split, sequence_length=sequence_length, shuffle=False, num_epochs=1)
