"""Resumable iterators: every stage has explicit, JSON-serializable state.

Randomness is stateless: each random draw comes from a numpy Generator seeded by
(seed, a stable hash of the stage's name, counters), so the "rng state" of a stage is just
its counters, and a restored pipeline draws exactly the numbers an uninterrupted one would.

Items flowing through a task's stages are `(key, example)` pairs; `key` is a tuple of ints
(epoch, example index, ...) that seeds the per-example randomness of preprocessors.
"""

from __future__ import annotations

import logging
import sys
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from mesh_t5.errors import UserError

log = logging.getLogger("mesh_t5.data")

Key = tuple[int, ...]
_END = object()
Item = tuple[Key, dict[str, Any]]


def stable_hash(text: str) -> int:
    """Returns a process-independent 31-bit hash of `text` (Python's hash() is salted)."""
    return zlib.crc32(text.encode("utf-8")) & 0x7FFFFFFF


def rng_for(*key: int) -> np.random.Generator:
    """Returns a Generator determined by the integers `key` alone."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFF for k in key]))
    )


class Stream:
    """An iterator with `get_state() -> dict` and `set_state(dict)`."""

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        raise NotImplementedError

    def get_state(self) -> dict:
        raise NotImplementedError

    def set_state(self, state: dict) -> None:
        raise NotImplementedError


class SourceStream(Stream):
    """Yields `((epoch, index), example)` from a source split, for `num_epochs` epochs (None = forever).

    Shuffling uses a seeded buffer of `shuffle_buffer_size` examples, reshuffled every epoch with a
    different seed: a split smaller than the buffer is fully permuted each epoch; a larger one is
    shuffled locally. The state holds the read position and the *indices* of buffered examples; on
    restore they are re-read from the source, so no example content is stored in the state.
    `limit` keeps only global indices < limit (the data-repetition study).
    """

    def __init__(
        self,
        source: Any,
        split: str,
        *,
        name: str,
        shuffle: bool,
        seed: int,
        shard_index: int = 0,
        num_shards: int = 1,
        num_epochs: int | None = 1,
        shuffle_buffer_size: int = 10_000,
        limit: int | None = None,
    ):
        self.source, self.split, self.name = source, split, name
        self.shuffle, self.seed = shuffle, seed
        self.shard_index, self.num_shards = shard_index, num_shards
        self.num_epochs, self.buffer_size, self.limit = num_epochs, max(1, shuffle_buffer_size), limit
        self._salt = stable_hash(f"source:{name}:{split}")
        self.epoch, self.pos, self.emitted = 0, 0, 0
        self._buffer: list[tuple[int, dict]] = []
        self._it: Iterator[dict] | None = None
        self._exhausted = False
        self._shard: range | None = None
        self.on_drop: Callable[[int], None] | None = None  # told the index of each record the source dropped

    @property
    def shard(self) -> range:
        """The global indices this shard reads, in order (`Source.shard_indices`)."""
        if self._shard is None:
            self._shard = self.source.shard_indices(self.split, self.shard_index, self.num_shards, self.limit)
        return self._shard

    def _global_index(self, local: int) -> int:
        return self.shard[local] if local < len(self.shard) else sys.maxsize

    def _open(self, start: int) -> None:
        self._it = iter(self.source.read_range(self.split, self.shard[start:]))
        self._exhausted = False

    def _read(self) -> tuple[int, dict] | None:
        if self._it is None:
            self._open(self.pos)
        while not self._exhausted:
            idx = self._global_index(self.pos)
            if idx == sys.maxsize or (self.limit is not None and idx >= self.limit):
                break
            ex = next(self._it, _END)  # type: ignore[arg-type]
            if ex is _END:
                break
            self.pos += 1
            if ex is not None:
                return idx, ex
            if self.on_drop is not None:  # None: a record the source dropped (and counted)
                self.on_drop(idx)
        self._exhausted = True
        return None

    def __next__(self) -> Item:
        while True:
            if self.num_epochs is not None and self.epoch >= self.num_epochs:
                raise StopIteration
            if not self.shuffle:
                got = self._read()
            else:
                while len(self._buffer) < self.buffer_size:
                    r = self._read()
                    if r is None:
                        break
                    self._buffer.append(r)
                got = None
                if self._buffer:
                    j = int(
                        rng_for(self.seed, self._salt, self.epoch, self.emitted).integers(len(self._buffer))
                    )
                    got = self._buffer[j]
                    self._buffer[j] = self._buffer[-1]
                    self._buffer.pop()
            if got is not None:
                self.emitted += 1
                return (self.epoch, got[0]), got[1]
            if self.emitted == 0:
                raise UserError(
                    f"task {self.name!r}: split {self.split!r} (shard {self.shard_index}/{self.num_shards}) "
                    f"has no examples in {self.source.describe(self.split)}; check the files or the split name"
                )
            self.epoch, self.pos, self.emitted = self.epoch + 1, 0, 0
            self._it = None

    def get_state(self) -> dict:
        return {
            "epoch": self.epoch,
            "pos": self.pos,
            "emitted": self.emitted,
            "buffer": [i for i, _ in self._buffer],
            "shard": [self.shard.start, self.shard.stop, self.shard.step],
        }

    def set_state(self, state: dict) -> None:
        mine = [self.shard.start, self.shard.stop, self.shard.step]
        # A state from before "shard" counted strided positions: it fits one shard, or a strided one.
        saved = state.get("shard", mine if self.shard.step == self.num_shards else "by stride")
        if saved != mine:
            raise UserError(
                f"task {self.name!r}: the saved data position is for records {saved} of split {self.split!r} "
                f"but this process reads {mine}; resume with the same data and number of hosts"
            )
        self.epoch, self.pos, self.emitted = int(state["epoch"]), int(state["pos"]), int(state["emitted"])
        wanted = [int(i) for i in state["buffer"]]
        self._buffer = []
        if wanted:
            # Re-read the buffered examples: they lie between the oldest buffered index and `pos`.
            first_local = self.shard.index(min(wanted))
            found: dict[int, dict] = {}
            it = iter(self.source.read_range(self.split, self.shard[first_local:]))
            want = set(wanted)
            for local in range(first_local, self.pos):
                ex = next(it)
                idx = self._global_index(local)
                if idx in want and ex is not None:
                    found[idx] = ex
            self._buffer = [(i, found[i]) for i in wanted]
        self._open(self.pos)


class MapStage(Stream):
    """Applies `fn(key, example) -> example | None` to each item (None drops it); stateless."""

    def __init__(self, upstream: Stream, fn: Callable[[Key, dict], dict | None]):
        self.upstream, self.fn = upstream, fn

    def __next__(self) -> Item:
        while True:
            key, ex = next(self.upstream)
            out = self.fn(key, ex)
            if out is not None:
                return key, out

    def get_state(self) -> dict:
        return {"upstream": self.upstream.get_state()}

    def set_state(self, state: dict) -> None:
        self.upstream.set_state(state["upstream"])


class MixtureStream(Stream):
    """Samples the next example from one of several streams with probabilities `rates` (normalised).

    The choice at step k depends only on (seed, mixture name, k) and on which streams have run out:
    deterministic and resumable. A stream that runs out (a finite pass) leaves the mixture and the
    others are sampled in their renormalised proportions; the mixture ends when all have run out.
    """

    def __init__(self, name: str, streams: dict[str, Stream], rates: dict[str, float], seed: int):
        total = float(sum(rates.values()))
        if total <= 0:
            raise UserError(
                f"mixture {name!r}: the mixing rates sum to {total}; give at least one positive rate"
            )
        self.names = list(streams)
        self.streams = streams
        self.rates = np.array([rates[n] / total for n in self.names], dtype=np.float64)
        self.seed, self._salt, self.step = seed, stable_hash(f"mixture:{name}"), 0
        self.name = name
        self.done: set[str] = set()

    def __next__(self) -> Any:
        while len(self.done) < len(self.names):
            live = np.array([n not in self.done for n in self.names])
            probs = np.where(live, self.rates, 0.0)
            u = rng_for(self.seed, self._salt, self.step).random() * probs.sum()
            i = min(int(np.searchsorted(np.cumsum(probs), u, side="right")), len(self.names) - 1)
            while not live[i]:  # u landed on the upper edge: take the last live stream
                i -= 1
            self.step += 1
            try:
                return next(self.streams[self.names[i]])
            except StopIteration:
                self.done.add(self.names[i])
        raise StopIteration

    def get_state(self) -> dict:
        return {
            "step": self.step,
            "tasks": {n: s.get_state() for n, s in self.streams.items()},
            "done": sorted(self.done),
        }

    def set_state(self, state: dict) -> None:
        self.step = int(state["step"])
        self.done = set(state.get("done", ()))
        for n, s in self.streams.items():
            s.set_state(state["tasks"][n])
