"""Data sources: TFDS datasets, text-line / TSV / JSONL files, and Python functions.

A split is records at positions 0..N-1 (an example's global index, the same on every host); `read` gives
any range of them, file-backed sources skipping whole files by their record counts and seeking only inside
the first file read, so starting at record 10^6 costs what starting at 0 does. An unreadable record (bad
UTF-8, wrong field count, bad JSON) is yielded as None, keeping positions, counted in
`source.dropped[(split, reason)]` and reported in a warning naming the file.
Host i of n reads records [i*N//n, (i+1)*N//n) (`shard_indices`): only the files overlapping that range,
sharing a file with the next host when there are fewer files than hosts; a source that knows no N (a
FunctionSource without `num_examples`) is split by stride instead, every host reading it whole.

`max_tokens` (any source): keep only the first N tokens of the split and repeat them
(the paper's Table 9 data-repetition study); the task counts tokens after tokenization.
"""

from __future__ import annotations

import bisect
import collections
import glob
import itertools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from mesh_t5.errors import UserError

log = logging.getLogger("mesh_t5.data")


class Source:
    """Base class: `splits`, `read`, `num_examples` (when known without reading), `describe`."""

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
        """Returns the number of records of `split`, or None when unknown without reading it."""
        return None

    def read(self, split: str, start: int, stop: int) -> Iterator[dict | None]:
        """Yields the records at positions start..stop-1 of `split` (fewer if it ends first).

        Sources override it; this default serves a source that only overrides `iter_split`."""
        if type(self).iter_split is Source.iter_split:
            raise NotImplementedError(f"{type(self).__name__} must implement read(split, start, stop)")
        return itertools.islice(self.iter_split(split), start, stop)

    def shard_indices(
        self, split: str, shard_index: int = 0, num_shards: int = 1, limit: int | None = None
    ) -> range:
        """Returns the positions shard `shard_index` of `num_shards` reads, in order (module docstring);
        `limit`: only the first `limit` records are shared out (the data-repetition study)."""
        if num_shards == 1:
            return range(0, sys.maxsize)
        n = self.num_examples(split)
        if n is None:
            if ("stride", split) not in self._warned:
                self._warned.add(("stride", split))
                log.info("%s knows no size: each host reads it whole and keeps every %d-th record",
                         self.describe(split), num_shards)  # fmt: skip
            return range(shard_index, sys.maxsize, num_shards)
        n = n if limit is None else min(n, limit)
        return range(shard_index * n // num_shards, (shard_index + 1) * n // num_shards)

    def read_range(self, split: str, indices: range) -> Iterator[dict | None]:
        """Yields the records at `indices` (a `shard_indices` range, or a tail of one)."""
        if indices.step == 1:
            return self.read(split, indices.start, indices.stop)
        return itertools.islice(self.read(split, 0, sys.maxsize), indices.start, None, indices.step)

    def iter_split(
        self, split: str, start: int = 0, shard_index: int = 0, num_shards: int = 1
    ) -> Iterator[dict | None]:
        """Yields the records of shard `shard_index` of `split`, from the shard's `start`-th one."""
        self.check_split(split)
        return self.read_range(split, self.shard_indices(split, shard_index, num_shards)[start:])

    def describe(self, split: str) -> str:
        return type(self).__name__

    def _drop(self, split: str, reason: str, where: str) -> None:
        self.dropped[(split, reason)] += 1
        if (split, reason) not in self._warned:
            self._warned.add((split, reason))
            log.warning("dropping %s at %s (split %r); counted in source.dropped", reason, where, split)


def read_files(
    lengths: Sequence[int], read_file: Callable[[int, int], Iterable[Any]], start: int, stop: int
) -> Iterator[Any]:
    """Yields records start..stop-1 of files holding `lengths` records, `read_file(file, offset)` reading
    one file from an offset: the files before `start` are skipped by their lengths, unopened."""
    ends = list(itertools.accumulate(lengths))
    f = bisect.bisect_right(ends, start)
    while f < len(ends) and start < stop:
        end = min(stop, ends[f])
        yield from itertools.islice(read_file(f, start - (ends[f] - lengths[f])), end - start)
        start, f = end, f + 1


def count_lines(path: str) -> int:
    """Returns the number of lines of a file (a last line without a newline counts), by its newlines."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n, last = n + chunk.count(b"\n"), chunk[-1:]
    return n + (last != b"\n")


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
        # split -> ((path, size, mtime_ns) of each file, records of each file): counted again when a
        # file is added, removed or rewritten (a notebook that rewrites its TSV reads the new one).
        self._lengths: dict[str, tuple[tuple[tuple[str, int, int], ...], list[int]]] = {}

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

    def _indexed(self, split: str) -> tuple[list[str], list[int]]:
        """Returns the files of `split` and their records (lines after the header lines), counted once
        per version of the files."""
        files = self.files(split)
        stamp = tuple((path, st.st_size, st.st_mtime_ns) for path in files for st in [os.stat(path)])
        cached = self._lengths.get(split)
        if cached is None or cached[0] != stamp:
            cached = stamp, [max(0, count_lines(path) - self.skip_header_lines) for path in files]
            self._lengths[split] = cached
        return files, cached[1]

    def file_lengths(self, split: str) -> list[int]:
        """Returns the records (lines after the header lines) of each file of `split`."""
        return self._indexed(split)[1]

    def num_examples(self, split: str) -> int | None:
        return sum(self.file_lengths(split))

    def read(self, split: str, start: int, stop: int) -> Iterator[dict | None]:
        files, lengths = self._indexed(split)
        return read_files(lengths, lambda f, offset: self._read_file(split, files[f], offset), start, stop)

    def _read_file(self, split: str, path: str, offset: int) -> Iterator[dict | None]:
        first = self.skip_header_lines + offset
        with open(path, "rb") as f:
            for lineno, raw in enumerate(itertools.islice(f, first, None), first + 1):
                where = f"{path}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self._drop(split, "a line with invalid UTF-8", where)
                    yield None
                    continue
                yield self.parse(line.rstrip("\r\n"), where, split)


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

    def read(self, split: str, start: int, stop: int) -> Iterator[dict | None]:
        return itertools.islice((dict(ex) for ex in self.fn(split)), start, stop)


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
        self._files: dict[str, tuple[list[tuple[str, int, int]], bool]] = {}

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

    def _pieces(self, split: str) -> tuple[list[tuple[str, int, int]], bool]:
        """Returns ([(TFDS split, from, to)] one per file of the prepared data the split covers, True), or
        ([(split expression, 0, N)], False) when TFDS knows no files (tfds.testing.mock_data)."""
        if split not in self._files:
            import tensorflow_datasets as tfds

            expr, infos = self._tfds_split(split), self.builder.info.splits
            try:
                pieces = []
                for ins in tfds.core.ReadInstruction.from_spec(expr).to_absolute(infos):
                    info = infos[ins.splitname]
                    lo, hi = ins.from_ or 0, info.num_examples if ins.to is None else ins.to
                    edges = [0, *itertools.accumulate(info.shard_lengths)]
                    pieces += [
                        (ins.splitname, max(a, lo), min(b, hi))
                        for a, b in itertools.pairwise(edges)
                        if a < hi and lo < b
                    ]
                self._files[split] = pieces, True
            except (KeyError, ValueError):
                n = int(self._as_dataset(expr).cardinality())
                self._files[split] = [(expr, 0, n if n >= 0 else sys.maxsize)], False
        return self._files[split]

    def num_examples(self, split: str) -> int | None:
        pieces, _ = self._pieces(split)
        n = sum(hi - lo for _, lo, hi in pieces)
        return n if n < sys.maxsize else None

    def describe(self, split: str) -> str:
        return f"TFDS {self.name!r} split {split!r} (data_dir={self.data_dir!r})"

    def read(self, split: str, start: int, stop: int) -> Iterator[dict | None]:
        (pieces, files), read = self._pieces(split), self._read_file
        lengths = [hi - lo for _, lo, hi in pieces]
        return read_files(lengths, lambda f, offset: read(split, *pieces[f], offset, files), start, stop)

    def _read_file(
        self, split: str, name: str, lo: int, hi: int, offset: int, files: bool
    ) -> Iterator[dict | None]:
        import tensorflow_datasets as tfds

        # TFDS turns "train[a:b]" into file instructions: it skips records only inside the file of `a`.
        ds = self._as_dataset(f"{name}[{lo + offset}:{hi}]") if files else self._as_dataset(name).skip(offset)
        where = f"TFDS {self.name} {name}"
        for ex in tfds.as_numpy(ds):
            try:
                yield _to_python(ex, split, self, where)
            except UnicodeDecodeError:
                self._drop(split, "an example with invalid UTF-8", where)
                yield None
