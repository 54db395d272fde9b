"""The Beam job behind `mesh-t5 cache_tasks`: one work item per (task, split, shard), each running the
task's preprocessors up to `tokenize` over the shard's consecutive source records (as a host reading shard
`shard` of `num_shards` would) and writing them to its shard file (layout and reading: `mesh_t5.data.cache`).

Workers find tasks by name: they import `modules` first (the modules that register them), so the job
runs unchanged on Dataflow, Flink or Spark; on the DirectRunner in memory the registry is already there.
"""

from __future__ import annotations

import gzip
import importlib
import io
import json
import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from mesh_t5.data import cache
from mesh_t5.data.c4_beam import query_counters
from mesh_t5.data.stream import SourceStream
from mesh_t5.errors import UserError

NAMESPACE = "cache_tasks"


class CacheShardFn(beam.DoFn):
    """(task, split, shard, num_shards) -> writes that shard of the split's tokenized examples."""

    def __init__(self, modules: Sequence[str], staging: str):
        self.modules, self.staging = tuple(modules), staging

    def setup(self) -> None:
        for name in self.modules:
            importlib.import_module(name)

    def process(self, item: tuple[str, str, int, int]) -> Iterator[str]:
        from mesh_t5.data.registry import get_task

        task_name, split, shard, num_shards = item
        task = get_task(task_name)
        chain = task.build_stream(
            split, seq_len=None, shuffle=False, seed=0, shard_index=shard, num_shards=num_shards,
            num_epochs=1, upto_tokenize=True,
        )  # fmt: skip
        source = chain  # the SourceStream under the per-example stages up to tokenize
        while not isinstance(source, SourceStream):
            source = source.upstream
        unreadable: set[int] = set()
        source.on_drop = unreadable.add
        indices = source.shard  # consecutive: `run` gives a sizeless source one shard
        buf, examples, tokens = io.BytesIO(), 0, dict.fromkeys(task.output_features, 0)
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as g:
            done = indices.start

            def write(record: dict) -> None:
                g.write((json.dumps(record) + "\n").encode("utf-8"))

            def skipped(upto: int) -> None:  # records dropped by the source or a cached preprocessor
                for i in range(done, upto):
                    write({"index": i, "unreadable": True} if i in unreadable else {"index": i})

            for (_, index), ex in chain:
                skipped(index)
                write({"index": index, "example": cache.to_json(ex)})
                done, examples = index + 1, examples + 1
                for name in tokens:
                    tokens[name] += len(ex.get(name, ()))
            end = indices.stop
            if end == sys.maxsize:  # one shard: the whole split (counted if the source knows no size)
                end = task.source.num_examples(split)
                end = sum(1 for _ in task.source.iter_split(split)) if end is None else end
            skipped(end)
        path = FileSystems.join(self.staging, task_name, cache.shard_name(split, shard, num_shards))
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(buf.getvalue())
        prefix = f"{task_name}/{split}/"
        Metrics.counter(NAMESPACE, prefix + "examples").inc(examples)
        Metrics.counter(NAMESPACE, prefix + f"shard_length/{shard}").inc(end - indices.start)
        for name, n in tokens.items():
            Metrics.counter(NAMESPACE, prefix + f"tokens/{name}").inc(n)
        yield path


def run(
    task_names: Sequence[str],
    output: str,
    *,
    modules: Sequence[str] = (),
    num_shards: int = 4,
    pipeline_args: Sequence[str] = (),
) -> dict[str, dict]:
    """Caches every split of every task under `output/<task>`; returns {task: info}.

    The shards are written to a staging directory beside `output` and a task's directory appears
    (with COMPLETED last) only after the whole job succeeded.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    from mesh_t5.data.registry import get_task

    if num_shards < 1:
        raise UserError(f"--num_shards={num_shards} must be at least 1")
    tasks = [get_task(name) for name in task_names]
    fingerprints = {t.name: cache.fingerprint(t) for t in tasks}  # also checks each task can be cached
    for t in tasks:
        target = FileSystems.join(output, t.name)
        if FileSystems.exists(target):
            raise UserError(f"{target!r} exists; delete it to rebuild the cache of task {t.name!r}")
    # Shards hold consecutive source records; a source that knows no size is cached in one shard.
    sizes = {(t.name, split): t.source.num_examples(split) for t in tasks for split in t.splits}
    shards = {k: 1 if n is None else max(1, min(num_shards, n)) for k, n in sizes.items()}
    items = [(*k, s, n) for k, n in shards.items() for s in range(n)]
    staging = f"{output.rstrip('/')}.incomplete-{uuid.uuid4().hex[:8]}"
    FileSystems.mkdirs(staging)
    try:
        for t in tasks:
            FileSystems.mkdirs(FileSystems.join(staging, t.name))
        with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as pipeline:
            _ = (
                pipeline
                | "ListShards" >> beam.Create(items)
                | "SpreadShards" >> beam.Reshuffle()
                | "CacheShards" >> beam.ParDo(CacheShardFn(modules, staging))
            )
        counters = query_counters(pipeline.result, NAMESPACE)
        infos = {t.name: _info(t, fingerprints[t.name], counters, shards, sizes) for t in tasks}
        if not FileSystems.exists(output):
            FileSystems.mkdirs(output)
        for t in tasks:
            src = FileSystems.join(staging, t.name)
            names = [m.path for m in FileSystems.match([FileSystems.join(src, "*")])[0].metadata_list]
            dst = FileSystems.join(output, t.name)
            FileSystems.mkdirs(dst)
            FileSystems.rename(names, [FileSystems.join(dst, n.rsplit("/", 1)[-1]) for n in names])
            with FileSystems.create(FileSystems.join(dst, cache.INFO_FILE)) as f:
                f.write(json.dumps(infos[t.name], indent=1, sort_keys=True).encode("utf-8"))
            with FileSystems.create(FileSystems.join(dst, cache.COMPLETED)) as f:
                f.write(b"")
    finally:
        if FileSystems.exists(staging):
            FileSystems.delete([staging])
    return infos


def _info(task: Any, fingerprint: str, counters: dict[str, int], shards: dict, sizes: dict) -> dict:
    splits = {}
    for split in task.splits:
        prefix, n = f"{task.name}/{split}/", shards[task.name, split]
        lengths = [counters.get(prefix + f"shard_length/{s}", 0) for s in range(n)]
        splits[split] = {
            "num_examples": counters.get(prefix + "examples", 0),
            "num_source_examples": sum(lengths),
            "num_shards": n,
            "shard_lengths": lengths,
            "tokens": {name: counters.get(prefix + f"tokens/{name}", 0) for name in task.output_features},
        }
        if sizes[task.name, split] is None:  # hosts shard the source by stride: the cache does the same
            splits[split]["stride_sharded"] = True
    return {"task": task.name, "fingerprint": fingerprint, "splits": splits}
