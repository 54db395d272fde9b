"""The layout of a `mesh-t5 c4` output directory, and `C4Source`, which reads it into the task registry.

```
DIR/c4-train-00000-of-00008.jsonl.gz     one JSON object a line: {"url", "text", "timestamp"}
DIR/c4-train-00000-of-00008.tfrecord     the same pages as tf.train.Example (bytes features url/text/timestamp,
                                         TFDS c4's feature names), in the same order
DIR/c4-validation-00000-of-00001.*       validation: md5(normalized url) % 1000 == 0, as TFDS c4
DIR/c4_info.json                         pages per split and per shard, the options and every counter;
                                         written last: a directory without it is not a finished run
```

Within a shard pages are sorted by URL, and a page's shard is a hash of its URL, so the bytes of every
file depend only on the input pages and the options (gzip headers carry no time stamp).
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator, Sequence

from mesh_t5.data.sources import Source, read_files
from mesh_t5.errors import UserError

INFO_FILE = "c4_info.json"
SPLITS = ("train", "validation")


def shard_name(split: str, index: int, num_shards: int, ext: str) -> str:
    """Returns the file name of shard `index` of `split` ("c4-train-00003-of-00008.jsonl.gz")."""
    return f"c4-{split}-{index:05d}-of-{num_shards:05d}.{ext}"


def jsonl_gz_bytes(pages: Sequence[dict]) -> bytes:
    """Returns the gzip'd JSONL of `pages` (mtime 0: identical bytes on every run)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as g:
        for page in pages:
            record = {"url": page["url"], "text": page["text"], "timestamp": page["timestamp"]}
            g.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    return buf.getvalue()


def tf_examples(pages: Sequence[dict]) -> list[bytes]:
    """Returns the serialized tf.train.Example of each page (bytes features url, text, timestamp)."""
    import tensorflow as tf

    def feature(value: str) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))

    return [
        tf.train.Example(
            features=tf.train.Features(feature={k: feature(page[k]) for k in ("url", "text", "timestamp")})
        ).SerializeToString(deterministic=True)
        for page in pages
    ]


C4_DIR_ENV = "MESH_T5_C4_DIR"


def read_info(directory: str) -> dict:
    """Returns the c4_info.json of a finished `mesh-t5 c4` run (UserError if there is none)."""
    if not directory:
        raise UserError(
            f"no C4 directory: set {C4_DIR_ENV}=DIR, the output of `mesh-t5 c4 --input=... --output=DIR`"
        )
    path = os.path.join(directory, INFO_FILE)
    if not os.path.exists(path):
        raise UserError(
            f"{directory!r} is not the output of a finished `mesh-t5 c4` run (no {INFO_FILE}); "
            "run `mesh-t5 c4 --input=... --output=DIR` and point the task at DIR"
        )
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    if not all("shard_lengths" in split for split in info.get("splits", {}).values()):
        raise UserError(f"{path} was written by an older mesh_t5 (no shard_lengths): run `mesh-t5 c4` again")
    return info


class C4Source(Source):
    """The pages of a `mesh-t5 c4` output directory as {"url", "text", "timestamp"} examples.

    Reads the TFRecord shards in order (shard 0 first, URL order within a shard), seeking by the shards'
    page counts (c4_info.json). The directory is only looked at on first use.
    """

    def __init__(self, directory: str, *, max_tokens: int | None = None):
        super().__init__(max_tokens)
        self.directory = os.fspath(directory)
        self._info: dict | None = None

    @property
    def info(self) -> dict:
        if self._info is None:
            self._info = read_info(self.directory)
        return self._info

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS

    def num_examples(self, split: str) -> int | None:
        self.check_split(split)
        return int(self.info["splits"][split]["num_examples"])

    def describe(self, split: str) -> str:
        return f"mesh-t5 c4 output {self.directory!r} split {split!r}"

    def files(self, split: str) -> list[str]:
        """Returns the TFRecord shards of `split`, in order."""
        self.check_split(split)
        n = int(self.info["splits"][split]["num_shards"])
        return [os.path.join(self.directory, shard_name(split, i, n, "tfrecord")) for i in range(n)]

    def read(self, split: str, start: int, stop: int) -> Iterator[dict | None]:
        files, lengths = self.files(split), self.info["splits"][split]["shard_lengths"]
        return read_files(lengths, lambda f, offset: self._read_file(files[f], offset), start, stop)

    @staticmethod
    def _read_file(path: str, offset: int) -> Iterator[dict]:
        import tensorflow as tf

        for batch in tf.data.TFRecordDataset(path).skip(offset).batch(256).as_numpy_iterator():
            for raw in batch:  # batches: tf.data's cost per element is paid once per 256 pages
                example = tf.train.Example.FromString(raw)
                yield {k: v.bytes_list.value[0].decode("utf-8") for k, v in example.features.feature.items()}
