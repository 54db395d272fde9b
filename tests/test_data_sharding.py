"""Input reading at scale: hosts read disjoint ranges of records whose union is the split, and reading
from record N opens only the file holding N and skips only inside it. TFDS files, a TFDS mock and text
files here; a cached task in test_cache_tasks, the C4 output in test_c4_beam."""

import bisect
import itertools
import json

import pytest

from mesh_t5.data import Feature, Task, TfdsSource, TsvSource, rekey, tokenize
from mesh_t5.errors import UserError
from mesh_t5.vocab import ByteVocabulary

VOCAB = ByteVocabulary()
FEATS = {"inputs": Feature(VOCAB), "targets": Feature(VOCAB)}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    import tensorflow_datasets as tfds

    class MeshT5ShardedTfds(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()})
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(0, 31), "validation": self._generate_examples(100, 4)}

        def _generate_examples(self, first, n):
            for i in range(first, first + n):
                yield i, {"text": f"record {i}"}

    d = str(tmp_path_factory.mktemp("tfds"))
    config = tfds.download.DownloadConfig(num_shards=3)
    MeshT5ShardedTfds(data_dir=d).download_and_prepare(download_config=config)
    return d


def texts(records, value=lambda r: r["text"]):
    return [None if r is None else value(r) for r in records]


def near_edges(lengths):
    """Record positions at, before and after each file boundary, and the first and last."""
    edges = list(itertools.accumulate(lengths))
    return sorted({0, edges[-1] - 1, *(e + d for e in edges[:-1] for d in (-1, 0, 1))} - {-1})


def check_hosts_and_seeks(module, src, split, lengths, positions, monkeypatch, value=lambda r: r["text"]):
    """Returns the split's records (as `value`s) after checking: every host count gives balanced consecutive
    ranges whose concatenation is the split; reading from record n opens the file holding n at n's offset
    in it, then the later files from their start, and no other (`module.read_files` is what seeks)."""
    full = texts(src.iter_split(split), value)
    for hosts in (2, 3, 4, 5):  # more hosts than files: hosts share a file, each seeking to its part of it
        parts = [texts(src.iter_split(split, 0, h, hosts), value) for h in range(hosts)]
        assert list(itertools.chain(*parts)) == full and max(map(len, parts)) - min(map(len, parts)) <= 1
    opened, real = [], module.read_files

    def logged(lengths, read_file, start, stop):
        return real(
            lengths, lambda f, offset: (opened.append((f, offset)), read_file(f, offset))[1], start, stop
        )

    monkeypatch.setattr(module, "read_files", logged)
    edges = [0, *itertools.accumulate(lengths)]
    for n in positions:
        opened.clear()
        assert texts(src.iter_split(split, start=n), value) == full[n:]
        f = bisect.bisect_right(edges, n) - 1
        assert opened == [(f, n - edges[f])] + [(g, 0) for g in range(f + 1, len(lengths))], n
    monkeypatch.undo()
    return full


def resumes_exactly(task, cuts, **kw):
    """Asserts that restoring the state saved after each of `cuts` examples gives the rest of the unbroken
    stream (2 epochs, shuffled or not, any shard)."""
    unbroken = [e["inputs_pretokenized"] for e in task.get_dataset("train", num_epochs=2, **kw)]
    for cut in cuts:
        it = task.get_dataset("train", num_epochs=2, **kw)
        head = [next(it)["inputs_pretokenized"] for _ in range(cut)]
        state = json.loads(json.dumps(it.get_state()))
        again = task.get_dataset("train", num_epochs=2, **kw)
        again.set_state(state)
        assert head + [e["inputs_pretokenized"] for e in again] == unbroken, (cut, kw)
    return unbroken


def _task(name, source, field="text"):
    return Task(
        name, source, [rekey({"inputs": field, "targets": field}), tokenize], FEATS, shuffle_buffer_size=4
    )


def test_tfds_reads_by_file_and_seeks(tfds_dir, monkeypatch):
    import tensorflow_datasets as tfds

    from mesh_t5.data import sources

    src = TfdsSource(
        "mesh_t5_sharded_tfds", data_dir=tfds_dir, splits={"train": "train", "mix": "train[:20]+validation"}
    )
    builder = src.builder
    lengths = builder.info.splits["train"].shard_lengths
    assert len(lengths) == 3 and sum(lengths) == src.num_examples("train") == 31
    read_config = tfds.ReadConfig(interleave_cycle_length=1)
    ref = {
        split: [
            ex["text"].decode() for ex in tfds.as_numpy(builder.as_dataset(split, read_config=read_config))
        ]
        for split in ("train", "validation")
    }  # TFDS's own order of the files' records
    full = check_hosts_and_seeks(sources, src, "train", lengths, near_edges(lengths), monkeypatch)
    assert full == ref["train"] and sorted(full) == sorted(f"record {i}" for i in range(31))
    assert (
        texts(src.iter_split("mix")) == ref["train"][:20] + ref["validation"]
        and src.num_examples("mix") == 24
    )
    task = _task("sharding_tfds", src)
    cuts = [lengths[0] - 1, lengths[0] + 1, 31 + lengths[0]]  # across files and into the second epoch
    assert sorted(resumes_exactly(task, cuts)) == sorted(full * 2)
    resumes_exactly(task, [2, 9], shuffle=True, seed=5, shard_index=1, num_shards=2)


def test_tfds_mock_data_resumes():
    from mock_tfds import mock_tfds

    with mock_tfds(num_examples=13):
        src = TfdsSource("glue/cola:2.0.0", splits=("train",))
        full = [r["sentence"] for r in src.iter_split("train")]
        assert (
            len(full) == src.num_examples("train") == 13
        )  # mocked data has no files: one range, skipped into
        for n in (0, 5, 12):
            assert [r["sentence"] for r in src.iter_split("train", start=n)] == full[n:]
        task = _task("sharding_tfds_mock", src, field="sentence")
        resumes_exactly(task, [1, 7, 14])
        resumes_exactly(task, [2, 5], shuffle=True, seed=1, shard_index=1, num_shards=2)


def test_text_files_read_by_file_with_header_and_bad_lines(tmp_path, monkeypatch):
    from mesh_t5.data import sources

    (tmp_path / "a.tsv").write_text("text\tn\n" + "".join(f"a{i}\t{i}\n" for i in range(4)))
    (tmp_path / "b.tsv").write_text("text\tn\n")  # a header and no record
    (tmp_path / "c.tsv").write_text("text\tn\nc0\t0\nc1 has no tab\nc2\t2\nc3\t3\nc4\t4")  # no final newline
    src = TsvSource({"train": str(tmp_path / "*.tsv")}, ["text", "n"], skip_header_lines=1)
    assert src.num_examples("train") == 9  # records: the line with one field is one (read as None)
    full = check_hosts_and_seeks(sources, src, "train", src.file_lengths("train"), range(9), monkeypatch)
    assert full == ["a0", "a1", "a2", "a3", "c0", None, "c2", "c3", "c4"] and src.file_lengths("train") == [
        4,
        0,
        5,
    ]
    task = _task("sharding_text", src)
    assert resumes_exactly(task, [1, 4, 5, 9]) == [t for t in full if t] * 2
    resumes_exactly(task, [1, 3], shuffle=True, seed=2, shard_index=1, num_shards=3)


def test_a_state_restores_only_into_the_same_shard(tmp_path):
    (tmp_path / "a.txt").write_text("".join(f"line {i}\n" for i in range(10)))
    task = _task("sharding_state", TsvSource({"train": str(tmp_path / "a.txt")}, ["text"]))
    it = task.get_dataset("train", shard_index=1, num_shards=2)
    next(it)
    state = source_state = it.get_state()
    while "upstream" in source_state:
        source_state = source_state["upstream"]
    assert source_state["shard"] == [5, 10, 1]
    with pytest.raises(
        UserError, match=r"saved data position is for records \[5, 10, 1\].*reads \[3, 6, 1\]"
    ) as e:
        task.get_dataset("train", shard_index=1, num_shards=3).set_state(state)
    assert "\n" not in str(e.value)


def test_hosts_share_out_only_the_repeated_records():
    # Table 9's data repetition: the first 35 tokens are records 0-3 (the 4th cut to 5 bytes); on 2 hosts
    # each repeats its half of those, not of the whole split (which would leave host 1 with nothing).
    from mesh_t5.data import FunctionSource

    docs = [f"{i:03d}" + "x" * 7 for i in range(50)]  # 10 bytes each
    src = FunctionSource(lambda split: ({"text": d} for d in docs), ("train",), {"train": 50}, max_tokens=35)
    task = Task("sharding_rep", src, [rekey({"targets": "text"}), tokenize], {"targets": Feature(VOCAB)})
    seen = [
        [
            VOCAB.decode(e["targets"])
            for e in task.get_dataset("train", shard_index=h, num_shards=2, num_epochs=2)
        ]
        for h in (0, 1)
    ]
    assert seen == [[docs[0], docs[1]] * 2, [docs[2], docs[3][:5]] * 2]
