"""Resume cost at record 0 and at record 10^6 of a large local dataset (the ratio should be ~1).

Builds, in a temporary directory deleted afterwards, 2^20 records as (1) text files read by a
TextLineSource, (2) that task cached by `mesh-t5 cache_tasks` (Beam DirectRunner), (3) `mesh-t5 c4`-style
TFRecord shards read by C4Source; each in `--files` files. For each it times a task pipeline restored
at record N (a saved state whose read position is N) up to its first `--take` examples, alternating
N = 0 and N = 10^6, `--repeats` times (min and median: on a shared machine the min is the cost); and,
once, what reading from the start up to record N costs (the old `skip(N)` way) for contrast.
Usage: PYTHONPATH=. python benchmarks/resume.py [--records 1048576] [--files 64] [--take 1000] [--repeats 9]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from mesh_t5 import data
from mesh_t5.data import c4_output, cache, cache_beam
from mesh_t5.vocab import ByteVocabulary

FEATURES = {"inputs": data.Feature(ByteVocabulary()), "targets": data.Feature(ByteVocabulary())}


def text_of(i: int) -> str:
    return f"record {i:08d} of the resume benchmark"


def write_text_files(directory: str, records: int, files: int) -> str:
    per = -(-records // files)
    for f in range(files):
        with open(os.path.join(directory, f"part-{f:05d}.txt"), "w") as out:
            out.writelines(text_of(i) + "\n" for i in range(f * per, min(records, (f + 1) * per)))
    return os.path.join(directory, "part-*.txt")


def write_c4_output(directory: str, records: int, files: int) -> None:
    import tensorflow as tf

    per, lengths = -(-records // files), []
    for f in range(files):
        pages = [
            {"url": f"http://example.com/{i}", "text": text_of(i), "timestamp": "2019-04-01T00:00:00Z"}
            for i in range(f * per, min(records, (f + 1) * per))
        ]
        with tf.io.TFRecordWriter(
            os.path.join(directory, c4_output.shard_name("train", f, files, "tfrecord"))
        ) as w:
            for record in c4_output.tf_examples(pages):
                w.write(record)
        lengths.append(len(pages))
    splits = {"train": {"num_examples": records, "num_shards": files, "shard_lengths": lengths}}
    splits["validation"] = {"num_examples": 0, "num_shards": 0, "shard_lengths": []}
    with open(os.path.join(directory, c4_output.INFO_FILE), "w") as f:
        json.dump({"splits": splits}, f)


def at_position(state: dict, n: int) -> dict:
    """The state of a task stream (unshuffled, nothing buffered) moved to read position n."""
    if "pos" in state:
        return {**state, "pos": n, "emitted": n, "buffer": []}
    return {k: at_position(v, n) if isinstance(v, dict) else v for k, v in state.items()}


def time_resume(task: data.Task, n: int, take: int, use_cached: bool) -> float:
    """Seconds from a fresh stream restored at record n to its `take`-th example."""
    state = at_position(task.get_dataset("train", use_cached=use_cached).get_state(), n)
    start = time.perf_counter()
    it = task.get_dataset("train", use_cached=use_cached)
    it.set_state(state)
    got = list(itertools.islice(it, take))
    secs = time.perf_counter() - start
    assert got[0]["inputs_pretokenized"] == text_of(n), got[0]["inputs_pretokenized"]
    return secs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1 << 20)
    parser.add_argument("--position", type=int, default=10**6)
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--take", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="mesh_t5_resume_", dir="/tmp")
    try:
        t0 = time.perf_counter()
        pattern = write_text_files(root, args.records, args.files)
        preprocessors = [data.rekey({"inputs": "text", "targets": "text"}), data.tokenize]
        text_task = data.TaskRegistry.add(
            "bench_resume_text",
            data.TextLineSource({"train": pattern}),
            preprocessors,
            FEATURES,
            overwrite=True,
        )
        cache_beam.run([text_task.name], os.path.join(root, "cache"), num_shards=args.files,
                       pipeline_args=["--direct_num_workers=1", "--direct_running_mode=in_memory"])  # fmt: skip
        cache.add_cache_dirs(os.path.join(root, "cache"))
        os.makedirs(os.path.join(root, "c4"))
        write_c4_output(os.path.join(root, "c4"), args.records, args.files)
        c4_task = data.Task("bench_resume_c4", c4_output.C4Source(os.path.join(root, "c4")),
                            [data.rekey({"inputs": "text", "targets": "text"}), data.tokenize], FEATURES)  # fmt: skip
        print(
            f"built {args.records:,} records x 3 formats in {args.files} files each: {time.perf_counter() - t0:.0f} s"
        )
        cases = [
            ("text files", text_task, False),
            ("cached task", text_task, True),
            ("C4 TFRecords", c4_task, False),
        ]
        print(f"| dataset | resume at 0 (s): min / median | at {args.position:,} (s): min / median | ratio of mins "
              f"/ medians | reading from 0 to {args.position:,} (s) |")  # fmt: skip
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, task, use_cached in cases:
            times: dict[int, list[float]] = {0: [], args.position: []}
            for _ in range(args.repeats):
                for n in times:
                    times[n].append(time_resume(task, n, args.take, use_cached))
            source = cache.cached_source(task) if use_cached else task.source
            start = time.perf_counter()
            next(itertools.islice(source.read("train", 0, sys.maxsize), args.position, None))
            skip = time.perf_counter() - start
            (zero, far), (zero_m, far_m) = ([f(times[n]) for n in times] for f in (min, statistics.median))
            print(f"| {name} | {zero:.3f} / {zero_m:.3f} | {far:.3f} / {far_m:.3f} | {far / zero:.2f} / "
                  f"{far_m / zero_m:.2f} | {skip:.2f} |")  # fmt: skip
        print(f"({args.repeats} runs each, alternating; each time: a fresh stream, set_state, {args.take} examples; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
