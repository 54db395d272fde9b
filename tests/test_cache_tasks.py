"""`mesh-t5 cache_tasks`: a cached task gives the uncached task's examples, one for one (the random objective
stays online and seeded); a stale or incomplete cache is refused with one line."""

import contextlib
import io
import itertools
import json
import os

import gin
import numpy as np
import pytest

pytest.importorskip("apache_beam")

from mesh_t5 import cli, data
from mesh_t5.data import cache
from mesh_t5.errors import UserError
from mesh_t5.vocab import ByteVocabulary

VOCAB = ByteVocabulary(extra_ids=100)
LENGTHS = {"inputs": 32, "targets": 12}
TASK = "test_cached_span_corruption"
SIZELESS = "test_cached_sizeless"  # its source knows no size: hosts shard it by stride, cached in one shard


def texts(split):
    n = {"train": 40, "validation": 9}[split]
    return [
        {"text": f"Document {i} of {split}: " + "the river runs past the mill " * (1 + i % 4)}
        for i in range(n)
    ]


def drop_every_seventh(ex, ctx):  # a cached preprocessor that drops examples: indices keep their gaps
    return None if ex["text"].startswith(("Document 7 ", "Document 14 ")) else ex


def register(marker="x", name=TASK, sizes={"train": 40, "validation": 9}):  # noqa: B006
    def mark(ex, ctx):
        return {**ex, "text": ex["text"] + f" {marker}"}

    return data.TaskRegistry.add(
        name,
        data.FunctionSource(texts, splits=("train", "validation"), num_examples=sizes),
        [
            drop_every_seventh,
            mark,
            *data.unsupervised_preprocessors("span_corruption", default_inputs_length=32),
        ],
        {"inputs": data.Feature(VOCAB, required=False), "targets": data.Feature(VOCAB)},
        overwrite=True,
    )


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    register()
    register(name=SIZELESS, sizes=None)
    out = tmp_path_factory.mktemp("cache") / "caches"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(["cache_tasks", f"--tasks={TASK},{SIZELESS}", f"--output={out}", "--num_shards=3",
                         "--direct_num_workers=1", "--direct_running_mode=in_memory"])  # fmt: skip
    assert code == 0, stderr.getvalue()
    cache.add_cache_dirs(str(out))
    yield out, stdout.getvalue()
    cache._cache_dirs.remove(str(out))
    data.TaskRegistry.remove(TASK)
    data.TaskRegistry.remove(SIZELESS)


def examples(task, split, **kw):
    return list(task.get_dataset(split, sequence_length=LENGTHS, **kw))


def test_cached_task_equals_uncached(cached):
    out, stdout = cached
    task = data.get_task(TASK)
    info = json.loads((out / TASK / "cache_info.json").read_text())
    assert (
        info["splits"]["train"]["num_examples"] == 38 and info["splits"]["train"]["num_source_examples"] == 40
    )
    assert info["splits"]["validation"]["num_examples"] == 8 and info["splits"]["train"]["num_shards"] == 3
    assert info["splits"]["train"]["shard_lengths"] == [13, 13, 14]  # records 0-12, 13-25, 26-39
    sizeless = json.loads((out / SIZELESS / "cache_info.json").read_text())["splits"]["train"]
    assert sizeless["shard_lengths"] == [40] and sizeless["stride_sharded"] and sizeless["num_examples"] == 38
    # tokens of the cached "targets" (the text after formatting, tokenized): the byte lengths.
    expected = sum(len((ex["text"] + " x").encode()) for ex in texts("train")) - sum(
        len((ex["text"] + " x").encode())
        for ex in texts("train")
        if ex["text"].startswith(("Document 7 ", "Document 14 "))
    )
    assert info["splits"]["train"]["tokens"]["targets"] == expected
    assert "train: 38 examples (of 40)" in stdout
    assert sorted(os.listdir(out)) == sorted([TASK, SIZELESS]) and not [
        p for p in os.listdir(out.parent) if "incomplete" in p
    ]
    for t in (task, data.get_task(SIZELESS)):
        for kw in ({}, {"shuffle": True, "seed": 3}, {"shard_index": 1, "num_shards": 2}):
            for split in ("train", "validation"):
                plain, from_cache = examples(t, split, **kw), examples(t, split, use_cached=True, **kw)
                assert_equal(plain, from_cache)


def assert_equal(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_cached_task_seeks_and_resumes(cached, monkeypatch):
    from test_data_sharding import check_hosts_and_seeks, near_edges  # tests/ is on the path, as mock_tfds

    source = cache.cached_source(data.get_task(TASK))
    full = check_hosts_and_seeks(cache, source, "train", [13, 13, 14], near_edges([13, 13, 14]), monkeypatch,
                                 value=lambda r: "dropped" if cache.DROPPED in r else r["targets"].tolist())  # fmt: skip
    assert [i for i, r in enumerate(full) if r == "dropped"] == [7, 14]
    # The pipeline's saved position restores exactly, across shard files, with the gin binding train uses.
    gin.clear_config()  # from a clean, unlocked config: an earlier in-process command may have finalized it
    gin.parse_config("get_dataset.use_cached = True")
    try:
        for kw in ({}, {"shard_index": 1, "num_shards": 2}):
            unbroken = list(itertools.islice(data.get_dataset(TASK, LENGTHS, batch_size=2, seed=3, **kw), 30))
            for cut in (5, 12, 13, 21):
                it = data.get_dataset(TASK, LENGTHS, batch_size=2, seed=3, **kw)
                head = list(itertools.islice(it, cut))
                again = data.get_dataset(TASK, LENGTHS, batch_size=2, seed=3, **kw)
                again.set_state(json.loads(json.dumps(it.get_state())))
                assert_equal(head + list(itertools.islice(again, 30 - cut)), unbroken)
            plain = list(
                itertools.islice(
                    data.get_dataset(TASK, LENGTHS, batch_size=2, seed=3, use_cached=False, **kw), 30
                )
            )
            assert_equal(plain, unbroken)  # and the cache gives the uncached batches
        with pytest.raises(UserError, match="has no cache"):
            data.get_dataset("glue_cola_v002", LENGTHS)
    finally:
        gin.clear_config()


def test_stale_or_incomplete_cache_refused_with_one_line(cached):
    out, _ = cached
    task = register("y")  # the formatting changed: the cache no longer matches
    try:
        with pytest.raises(UserError, match="is stale") as e:
            examples(task, "train", use_cached=True)
        assert "\n" not in str(e.value)
    finally:
        register()
    (out / TASK / "COMPLETED").unlink()
    try:
        with pytest.raises(UserError, match="is incomplete"):
            examples(data.get_task(TASK), "train", use_cached=True)
    finally:
        (out / TASK / "COMPLETED").write_text("")
    assert examples(data.get_task(TASK), "validation", use_cached=True)


def test_train_reads_caches_by_a_gin_binding(cached, tmp_path, capsys):
    # A task without a cache: `mesh-t5 train` with the binding refuses it in one line before making anything.
    register(name="test_uncached_task")
    try:
        code = cli.main([
            "train", "--gin_file=models/tiny.gin", "--gin_file=runs/pretrain.gin", f"--gin.MODEL_DIR={tmp_path}/run",
            "--gin.MIXTURE_OR_TASK_NAME=test_uncached_task", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 12}",
            "--gin.TRAIN_STEPS=1", "--gin.BATCH_SIZE=2", "--gin.get_dataset.use_cached=True",
        ])  # fmt: skip
    finally:
        data.TaskRegistry.remove("test_uncached_task")
    err = capsys.readouterr().err.strip()
    assert code != 0 and "'test_uncached_task' has no cache" in err and "\n" not in err
    assert not (tmp_path / "run").exists()
    # The command's bindings ended with it: a library call after it reads no cache by a left-over binding.
    assert not gin.config_is_locked()
    with pytest.raises(ValueError, match="has no bound parameters"):
        gin.query_parameter("get_dataset.use_cached")
