"""Data sources: TFDS datasets, text-line / TSV / JSONL files, and Python functions.

A source yields raw example dicts (strings decoded to `str`) for a split, sharded by stride
(example i goes to shard i % num_shards), from any start position, and knows its number of
examples when it can. Invalid lines (bad UTF-8, wrong field count, bad JSON) are dropped,
counted in `source.dropped[(split, reason)]` and reported in a warning naming the file.

`max_tokens` (any source): keep only the first N tokens of the split and repeat them
(the paper's Table 9 data-repetition study); the task counts tokens after tokenization.
"""

from __future__ import annotations

import collections
import glob
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from mesh_t5.errors import UserError

log = logging.getLogger("mesh_t5.data")


class Source:
    """Base class: `iter_split`, `num_examples`, `splits`, `describe`."""

    def __init__(self, max_tokens: int | None = None):
        if max_tokens is not None and max_tokens < 1:
            raise UserError(f"max_tokens={max_tokens} must be a positive number of tokens (or None)")
        self.max_tokens = max_tokens
        self.dropped: collections.Counter = collections.Counter()
        self._warned: set = set()

    @property
    def splits(self) -> tuple[str, ...]:
        raise NotImplementedError

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise UserError(
                f"split {split!r} does not exist; this source has splits {', '.join(self.splits)}"
            )

    def num_examples(self, split: str) -> int | None:
        """Returns the number of examples of `split`, or None when unknown without reading it."""
        return None

    def iter_split(
        self, split: str, start: int = 0, shard_index: int = 0, num_shards: int = 1
    ) -> Iterator[dict]:
        """Yields the examples of shard `shard_index` of `split`, from the shard's `start`-th example.

        A source may yield None for a record it dropped (counted) so that positions stay aligned.
        """
        raise NotImplementedError

    def describe(self, split: str) -> str:
        return type(self).__name__

    def _drop(self, split: str, reason: str, where: str) -> None:
        self.dropped[(split, reason)] += 1
        if (split, reason) not in self._warned:
            self._warned.add((split, reason))
            log.warning("dropping %s at %s (split %r); counted in source.dropped", reason, where, split)


def _shard(it: Iterable[Any], start: int, shard_index: int, num_shards: int) -> Iterator[Any]:
    """Yields every num_shards-th item from shard_index, skipping the first `start` of them."""
    return itertools.islice(it, shard_index + start * num_shards, None, num_shards)


class FileSource(Source):
    """Lines of files matched by glob patterns per split; subclasses parse each line into a dict."""

    def __init__(
        self,
        split_to_filepattern: Mapping[str, str | Sequence[str]],
        *,
        skip_header_lines: int = 0,
        max_tokens: int | None = None,
    ):
        super().__init__(max_tokens)
        self.split_to_filepattern = {
            k: [v] if isinstance(v, str | os.PathLike) else list(v) for k, v in split_to_filepattern.items()
        }
        self.skip_header_lines = skip_header_lines
        self._counts: dict[str, int] = {}

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.split_to_filepattern)

    def files(self, split: str) -> list[str]:
        """Returns the files of `split` (sorted within each pattern); a pattern matching nothing is an error."""
        self.check_split(split)
        out: list[str] = []
        for pattern in self.split_to_filepattern[split]:
            matched = sorted(glob.glob(os.fspath(pattern)))
            if not matched:
                raise UserError(f"no file matches {os.fspath(pattern)!r} for split {split!r}; check the path")
            out += matched
        return out

    def describe(self, split: str) -> str:
        return ", ".join(map(os.fspath, self.split_to_filepattern.get(split, [])))

    def parse(self, line: str, where: str, split: str) -> dict | None:
        raise NotImplementedError

    def _examples(self, split: str) -> Iterator[dict]:
        for path in self.files(split):
            with open(path, "rb") as f:
                for lineno, raw in enumerate(f, 1):
                    if lineno <= self.skip_header_lines:
                        continue
                    where = f"{path}:{lineno}"
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        self._drop(split, "a line with invalid UTF-8", where)
                        continue
                    ex = self.parse(line.rstrip("\r\n"), where, split)
                    if ex is not None:
                        yield ex

    def iter_split(
        self, split: str, start: int = 0, shard_index: int = 0, num_shards: int = 1
    ) -> Iterator[dict]:
        return _shard(self._examples(split), start, shard_index, num_shards)

    def num_examples(self, split: str) -> int | None:
        if split not in self._counts:
            saved = collections.Counter(self.dropped)
            self._counts[split] = sum(1 for _ in self._examples(split))
            self.dropped = saved  # counting is not reading: do not count drops twice
        return self._counts[split]


class TextLineSource(FileSource):
    """Each line is an example `{"text": line}`."""

    def parse(self, line: str, where: str, split: str) -> dict | None:
        return {"text": line}


class TsvSource(FileSource):
    """Each line is `field_delim`-separated values named by `field_names`."""

    def __init__(
        self,
        split_to_filepattern: Mapping[str, str | Sequence[str]],
        field_names: Sequence[str],
        *,
        field_delim: str = "\t",
        skip_header_lines: int = 0,
        max_tokens: int | None = None,
    ):
        super().__init__(split_to_filepattern, skip_header_lines=skip_header_lines, max_tokens=max_tokens)
        self.field_names, self.field_delim = list(field_names), field_delim

    def parse(self, line: str, where: str, split: str) -> dict | None:
        values = line.split(self.field_delim)
        if len(values) != len(self.field_names):
            self._drop(split, f"a line with {len(values)} fields instead of {len(self.field_names)}", where)
            return None
        return dict(zip(self.field_names, values, strict=True))


class JsonlSource(FileSource):
    """Each line is a JSON object."""

    def parse(self, line: str, where: str, split: str) -> dict | None:
        if not line.strip():
            self._drop(split, "an empty line", where)
            return None
        try:
            ex = json.loads(line)
        except json.JSONDecodeError:
            self._drop(split, "a line that is not valid JSON", where)
            return None
        if not isinstance(ex, dict):
            self._drop(split, "a JSON line that is not an object", where)
            return None
        return ex


class FunctionSource(Source):
    """Examples from `fn(split) -> Iterable[dict]` (called again for each pass; must be deterministic)."""

    def __init__(
        self,
        fn: Callable[[str], Iterable[dict]],
        splits: Sequence[str] = ("train", "validation"),
        num_examples: Mapping[str, int] | None = None,
        *,
        max_tokens: int | None = None,
    ):
        super().__init__(max_tokens)
        self.fn, self._splits, self._num = fn, tuple(splits), dict(num_examples or {})

    @property
    def splits(self) -> tuple[str, ...]:
        return self._splits

    def num_examples(self, split: str) -> int | None:
        return self._num.get(split)

    def describe(self, split: str) -> str:
        return f"{getattr(self.fn, '__name__', 'function')}({split!r})"

    def iter_split(
        self, split: str, start: int = 0, shard_index: int = 0, num_shards: int = 1
    ) -> Iterator[dict]:
        self.check_split(split)
        return _shard((dict(ex) for ex in self.fn(split)), start, shard_index, num_shards)


def _to_python(value: Any, split: str, source: Source, where: str) -> Any:
    """Converts a TFDS numpy value: bytes -> str, numpy scalars -> Python, arrays of bytes -> list[str]."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {k: _to_python(v, split, source, where) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in ("O", "S"):
            return [_to_python(v, split, source, where) for v in value.tolist()]
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


class TfdsSource(Source):
    """A TensorFlow Datasets dataset by name (e.g. "glue/cola:2.0.0"), read from `data_dir`.

    `splits`: the split names to expose, or a mapping name -> TFDS split expression
    (e.g. {"validation": "train[:10%]"}); default: the builder's splits.
    """

    def __init__(
        self,
        name: str,
        *,
        data_dir: str | None = None,
        splits: Sequence[str] | Mapping[str, str] | None = None,
        max_tokens: int | None = None,
    ):
        super().__init__(max_tokens)
        self.name, self.data_dir = name, data_dir
        self._split_map = (
            dict(splits)
            if isinstance(splits, Mapping)
            else ({s: s for s in splits} if splits is not None else None)
        )
        self._builder = None

    @property
    def builder(self) -> Any:
        if self._builder is None:
            import tensorflow_datasets as tfds

            try:
                self._builder = tfds.builder(self.name, data_dir=self.data_dir)
            except Exception as e:
                first = (str(e).strip().splitlines() or ["unknown"])[0]
                raise UserError(
                    f"TFDS dataset {self.name!r} cannot be loaded ({first[:200]}); check its name"
                ) from None
        return self._builder

    def _not_prepared(self) -> UserError:
        return UserError(
            f"TFDS dataset {self.name!r} is not prepared in data_dir={self.builder.data_dir!r}; "
            "run `tfds build` (or download_and_prepare) first, or pass the right data_dir"
        )

    @property
    def splits(self) -> tuple[str, ...]:
        if self._split_map is not None:
            return tuple(self._split_map)
        names = tuple(self.builder.info.splits.keys())
        if not names and not self.builder.is_prepared():
            raise self._not_prepared()
        return names

    def _tfds_split(self, split: str) -> str:
        self.check_split(split)
        return self._split_map[split] if self._split_map is not None else split

    def _as_dataset(self, tfds_split: str) -> Any:
        """Returns the builder's tf.data.Dataset of `tfds_split` in a fixed order.

        Preparedness is checked here, by reading, rather than up front with `is_prepared()`: reading is
        what `tfds.testing.mock_data` replaces, so a mocked dataset reads like a prepared one."""
        import tensorflow_datasets as tfds

        read_config = tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1)
        try:
            return self.builder.as_dataset(split=tfds_split, shuffle_files=False, read_config=read_config)
        except AssertionError:  # TFDS asserts that the prepared data directory exists
            raise self._not_prepared() from None

    def num_examples(self, split: str) -> int | None:
        """Returns the split's size from the builder's split info, else from the dataset's cardinality."""
        tfds_split = self._tfds_split(split)
        try:
            return int(self.builder.info.splits[tfds_split].num_examples)
        except (KeyError, ValueError):
            pass
        n = int(self._as_dataset(tfds_split).cardinality())
        return n if n >= 0 else None

    def describe(self, split: str) -> str:
        return f"TFDS {self.name!r} split {split!r} (data_dir={self.data_dir!r})"

    def iter_split(
        self, split: str, start: int = 0, shard_index: int = 0, num_shards: int = 1
    ) -> Iterator[dict]:
        import tensorflow_datasets as tfds

        tfds_split = self._tfds_split(split)
        ds = self._as_dataset(tfds_split)
        if num_shards > 1:
            ds = ds.shard(num_shards, shard_index)
        if start:
            ds = ds.skip(start)
        where = f"TFDS {self.name} {tfds_split}"
        for ex in tfds.as_numpy(ds):
            try:
                yield _to_python(ex, split, self, where)
            except UnicodeDecodeError:
                self._drop(split, "an example with invalid UTF-8", where)
                yield None  # keeps positions aligned with ds.skip() on restore
