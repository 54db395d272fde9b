"""`mesh-t5 cache_tasks`: a cached task gives the uncached task's examples, one for one (the random objective
stays online and seeded); a stale or incomplete cache is refused with one line."""

import contextlib
import io
import json
import os

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


def texts(split):
    n = {"train": 40, "validation": 9}[split]
    return [
        {"text": f"Document {i} of {split}: " + "the river runs past the mill " * (1 + i % 4)}
        for i in range(n)
    ]


def drop_every_seventh(ex, ctx):  # a cached preprocessor that drops examples: indices keep their gaps
    return None if ex["text"].startswith(("Document 7 ", "Document 14 ")) else ex


def register(marker="x"):
    def mark(ex, ctx):
        return {**ex, "text": ex["text"] + f" {marker}"}

    return data.TaskRegistry.add(
        TASK,
        data.FunctionSource(texts, splits=("train", "validation")),
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
    out = tmp_path_factory.mktemp("cache") / "caches"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(["cache_tasks", f"--tasks={TASK}", f"--output={out}", "--num_shards=3",
                         "--direct_num_workers=1", "--direct_running_mode=in_memory"])  # fmt: skip
    assert code == 0, stderr.getvalue()
    cache.add_cache_dirs(str(out))
    yield out, stdout.getvalue()
    cache._cache_dirs.remove(str(out))
    data.TaskRegistry.remove(TASK)


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
    # tokens of the cached "targets" (the text after formatting, tokenized): the byte lengths.
    expected = sum(len((ex["text"] + " x").encode()) for ex in texts("train")) - sum(
        len((ex["text"] + " x").encode())
        for ex in texts("train")
        if ex["text"].startswith(("Document 7 ", "Document 14 "))
    )
    assert info["splits"]["train"]["tokens"]["targets"] == expected
    assert "train: 38 examples (of 40)" in stdout
    assert sorted(os.listdir(out)) == [TASK] and not [p for p in os.listdir(out.parent) if "incomplete" in p]
    for kw in ({}, {"shuffle": True, "seed": 3}, {"shard_index": 1, "num_shards": 2}):
        for split in ("train", "validation"):
            plain, from_cache = examples(task, split, **kw), examples(task, split, use_cached=True, **kw)
            assert len(plain) == len(from_cache) > 0
            for a, b in zip(plain, from_cache, strict=True):
                assert a.keys() == b.keys()
                for k in a:
                    np.testing.assert_array_equal(a[k], b[k])


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
