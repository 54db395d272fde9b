import json
import logging

import numpy as np
import pytest

from mesh_t5.data import (
    Feature,
    FunctionSource,
    JsonlSource,
    Task,
    TaskRegistry,
    TextLineSource,
    TfdsSource,
    TsvSource,
    append_eos_after_trim,
    format_text,
    get_dataset,
    get_task,
    rekey,
    tokenize,
)
from mesh_t5.errors import UserError
from mesh_t5.vocab import ByteVocabulary

VOCAB = ByteVocabulary()
FEATS = {"inputs": Feature(VOCAB), "targets": Feature(VOCAB)}


def _task(name, source, pre=None):
    return Task(
        name,
        source,
        pre or [rekey({"inputs": "text", "targets": "text"}), tokenize, append_eos_after_trim],
        FEATS,
    )


def test_text_line_source_globs_splits_and_invalid_utf8(tmp_path, caplog):
    (tmp_path / "a-0.txt").write_bytes(b"first\nsecond\n")
    (tmp_path / "a-1.txt").write_bytes(b"third\n\xff\xfe broken\nfourth\n")
    (tmp_path / "v.txt").write_text("val\n")
    src = TextLineSource({"train": str(tmp_path / "a-*.txt"), "validation": str(tmp_path / "v.txt")})
    assert src.num_examples("train") == 5 and src.num_examples("validation") == 1  # records, as TFDS counts
    task = _task("src_lines", src)
    with caplog.at_level(logging.WARNING, logger="mesh_t5.data"):
        got = [e["inputs_pretokenized"] for e in task.get_dataset("train")]
    assert got == ["first", "second", "third", "fourth"]
    assert src.dropped[("train", "a line with invalid UTF-8")] == 1
    assert "a-1.txt:2" in caplog.text
    assert src.dropped[("train", "a line with invalid UTF-8")] == 1  # num_examples did not read it
    ex = next(task.get_dataset("validation", sequence_length={"inputs": 3, "targets": 8}))
    assert ex["inputs"].tolist() == [*VOCAB.encode("va"), 1]  # trimmed to 2 tokens + EOS
    assert task.stats["truncated inputs"] == 1


def test_file_source_sees_files_rewritten_added_and_removed(tmp_path):
    # A notebook session rewrites its data between two runs: the same source object (a registered
    # task's) must count and read the files as they are now, not as they were first counted.
    (tmp_path / "a-0.txt").write_text("x0\nx1\n")
    src = TextLineSource({"train": str(tmp_path / "a-*.txt")})
    assert src.num_examples("train") == 2
    (tmp_path / "a-0.txt").write_text("y0\ny1\ny2\n")  # rewritten, longer
    assert src.num_examples("train") == 3
    (tmp_path / "a-1.txt").write_text("z0\n")  # a file added to the glob
    assert src.num_examples("train") == 4
    assert [e["text"] for e in src.read("train", 2, 4)] == ["y2", "z0"]  # seeks by the current counts
    (tmp_path / "a-0.txt").unlink()
    assert src.num_examples("train") == 1 and [e["text"] for e in src.read("train", 0, 1)] == ["z0"]


def test_tsv_and_jsonl_sources(tmp_path):
    (tmp_path / "d.tsv").write_text("sentence\tlabel\ngood movie\t1\nbad\t0\nonly-one-field\n")
    tsv = TsvSource({"train": str(tmp_path / "d.tsv")}, ["sentence", "label"], skip_header_lines=1)
    task = Task(
        "src_tsv",
        tsv,
        [format_text("sst2", ["sentence"], "label", ["negative", "positive"]), tokenize],
        FEATS,
    )
    got = [(e["inputs_pretokenized"], e["targets_pretokenized"]) for e in task.get_dataset("train")]
    assert got == [("sst2 sentence: good movie", "positive"), ("sst2 sentence: bad", "negative")]
    assert tsv.dropped[("train", "a line with 1 fields instead of 2")] == 1
    (tmp_path / "d.jsonl").write_text('{"q": "a?", "a": "b"}\nnot json\n{"q": "c?", "a": "d"}\n')
    js = JsonlSource({"train": str(tmp_path / "d.jsonl")})
    task = Task("src_jsonl", js, [rekey({"inputs": "q", "targets": "a"}), tokenize], FEATS)
    assert [e["targets_pretokenized"] for e in task.get_dataset("train")] == ["b", "d"]
    assert js.dropped[("train", "a line that is not valid JSON")] == 1


def test_bad_inputs_are_one_line_user_errors(tmp_path):
    missing = _task("src_missing", TextLineSource({"train": str(tmp_path / "nope-*.txt")}))
    with pytest.raises(UserError, match=r"task 'src_missing': no file matches .*nope-\*\.txt") as e:
        next(missing.get_dataset("train"))
    assert "\n" not in str(e.value)
    (tmp_path / "empty.txt").write_text("")
    empty = _task("src_empty", TextLineSource({"train": str(tmp_path / "empty.txt")}))
    with pytest.raises(UserError, match=r"task 'src_empty': split 'train' .*has no examples"):
        next(empty.get_dataset("train"))
    with pytest.raises(UserError, match=r"task 'src_empty': split 'test' does not exist"):
        empty.get_dataset("test")
    (tmp_path / "f.jsonl").write_text('{"question": "x"}\n')
    nofield = Task("src_nofield", JsonlSource({"train": str(tmp_path / "f.jsonl")}),
                   [rekey({"inputs": "question", "targets": "answer"}), tokenize], FEATS)  # fmt: skip
    with pytest.raises(UserError, match=r"task 'src_nofield': rekey needs field 'answer'.*\['question'\]"):
        next(nofield.get_dataset("train"))
    nofeat = Task("src_nofeat", JsonlSource({"train": str(tmp_path / "f.jsonl")}),
                  [rekey({"inputs": "question"}), tokenize], FEATS)  # fmt: skip
    with pytest.raises(UserError, match=r"task 'src_nofeat': output feature 'targets' is missing"):
        next(nofeat.get_dataset("train"))
    from mesh_t5 import tasks  # T5's catalogue, for the close matches

    with pytest.raises(UserError, match=r"unknown task 'glue_cola_v3'.*did you mean"):
        tasks.get_task("glue_cola_v3")
    with pytest.raises(UserError, match=r"unknown task or mixture 'no_such_thing'"):
        get_dataset("no_such_thing", {"inputs": 8, "targets": 8})


def test_function_source_and_registry_add():
    src = FunctionSource(lambda split: [{"text": f"{split} {i}"} for i in range(5)], splits=("train",))
    TaskRegistry.add(
        "src_fn", src, [rekey({"inputs": "text", "targets": "text"}), tokenize], FEATS, overwrite=True
    )
    try:
        task = get_task("src_fn")
        assert [e["inputs_pretokenized"] for e in task.get_dataset("train", shard_index=1, num_shards=2)] == [
            "train 1", "train 3"
        ]  # fmt: skip
        with pytest.raises(UserError, match="already registered"):
            TaskRegistry.add("src_fn", src, [], FEATS)
    finally:
        TaskRegistry.remove("src_fn")


def test_tfds_source_on_a_dataset_built_here(tmp_path):
    import tensorflow_datasets as tfds

    class MeshT5TinyTfds(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({"sentence": tfds.features.Text(), "label": np.int64}),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(12), "validation": self._generate_examples(3)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"sentence": f"sentence {i}", "label": i % 2}

    builder = MeshT5TinyTfds(data_dir=str(tmp_path))
    builder.download_and_prepare()
    src = TfdsSource("mesh_t5_tiny_tfds", data_dir=str(tmp_path))
    assert src.num_examples("train") == 12 and set(src.splits) == {"train", "validation"}
    task = Task("src_tfds", src, [format_text("tiny", ["sentence"], "label", ["no", "yes"]), tokenize], FEATS)
    got = sorted(
        (e["inputs_pretokenized"], e["targets_pretokenized"]) for e in task.get_dataset("validation")
    )
    assert got == [
        ("tiny sentence: sentence 0", "no"),
        ("tiny sentence: sentence 1", "yes"),
        ("tiny sentence: sentence 2", "no"),
    ]
    # Resume a shuffled, sharded TFDS stream exactly.
    it = task.get_dataset("train", shuffle=True, seed=2, shard_index=1, num_shards=2, num_epochs=2)
    head = [next(it)["inputs_pretokenized"] for _ in range(4)]
    state = json.loads(json.dumps(it.get_state()))
    rest = [e["inputs_pretokenized"] for e in it]
    it2 = task.get_dataset("train", shuffle=True, seed=2, shard_index=1, num_shards=2, num_epochs=2)
    it2.set_state(state)
    assert [e["inputs_pretokenized"] for e in it2] == rest
    shard0 = [e["inputs_pretokenized"] for e in task.get_dataset("train", shard_index=0, num_shards=2)]
    assert len(set(head + rest[:2])) == 6 and sorted(rest[2:]) == sorted(head + rest[:2])  # epoch 2 = epoch 1
    assert sorted(shard0 + head + rest[:2]) == sorted(f"tiny sentence: sentence {i}" for i in range(12))
    with pytest.raises(UserError, match="is not prepared"):
        next(
            _task(
                "src_tfds_missing", TfdsSource("mesh_t5_tiny_tfds", data_dir=str(tmp_path / "other"))
            ).get_dataset("train")
        )
    # With its splits given (as the catalogue gives them), the first read or count says the same.
    missing = TfdsSource("mesh_t5_tiny_tfds", data_dir=str(tmp_path / "other"), splits=("train",))
    for use in (lambda: missing.num_examples("train"), lambda: next(iter(missing.iter_split("train")))):
        with pytest.raises(UserError, match="is not prepared in data_dir=.*other.*run `tfds build`"):
            use()
