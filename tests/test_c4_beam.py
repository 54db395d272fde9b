"""`mesh-t5 c4` on the DirectRunner: WET files whose pages each trip one rule, the exact pages, lines and
counters that come out, span dedup across files, byte-identical reruns, bad input, and the output as a task."""

import contextlib
import gzip
import hashlib
import io
import json
import os

import pytest

pytest.importorskip("apache_beam")

from mesh_t5 import cli
from mesh_t5.data import wet

DATE = "2019-04-20T10:00:00Z"
BEAM_ARGS = ["--direct_num_workers=1", "--direct_running_mode=in_memory", "--max_page_length=3000"]


def sentence(tag, i):
    return f"The {tag} story number {i} tells of a quiet morning by the old river."


def good(tag, n=3):
    return "\n".join(sentence(tag, i) for i in range(n))


def validation_url():
    """The first example.com URL that TFDS's rule (md5(normalized url) % 1000 == 0) puts in validation."""
    for i in range(100_000):
        url = f"http://example.com/v{i}"
        if int(hashlib.md5(f"example.com/v{i}".encode()).hexdigest(), 16) % 1000 == 0:
            return url
    raise AssertionError("no validation URL")


SHARED = " ".join(sentence("shared", i) for i in range(3))
KEEP = "\n".join(
    [
        sentence("keep", 0),
        "Menu Home About Contact",  # no end mark
        "Too short here.",  # 3 words < 5
        "Please enable JavaScript in your browser settings.",
        "By using this site you agree to our privacy policy.",
        sentence("keep", 1)[:-1] + ".[1]",  # the citation marker goes, the line stays
        "A " + "x" * 1001 + " word here is far too long.",
        sentence("keep", 2) + " " + sentence("keep", 3),
        "Wait for the next part of the story...",  # an ellipsis is no end mark
    ]
)
GERMAN = "\n".join(
    [
        "Der schnelle braune Fuchs springt heute über den faulen Hund.",
        "Das Wetter ist in diesem Sommer sehr schön und angenehm warm.",
        "Wir gehen morgen zusammen mit den Kindern in den großen Park.",
    ]
)


def page(url, text, date=DATE):
    return wet.Page(url, date, text)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("wet")
    span_a = page("http://example.com/span-a", good("alpha").replace("\n", " ") + "\n" + SHARED)
    span_b = page("http://example.com/span-b", SHARED + "\n" + good("beta").replace("\n", " "))
    wet.write_wet_file(
        str(d / "in-a.wet.gz"),
        [
            page("http://example.com/keep", KEEP),
            page(
                "http://example.com/lorem", "Lorem ipsum dolor sit amet, consectetur elit.\n" + good("lorem")
            ),
            page("http://example.com/curly", "The code is var x = {a: 1} in this line.\n" + good("curly")),
            page("http://example.com/few", good("few", 2)),
            page(
                "http://example.com/badword", good("bad") + "\nThe escort walked slowly to the waiting car."
            ),
            page("http://www.example.com/dup/", good("old"), "2019-01-01T00:00:00Z"),
            span_a,
            page(validation_url(), good("valid")),
        ],
    )
    wet.write_wet_file(
        str(d / "in-b.wet.gz"),
        [
            page("http://example.com/toolong", good("long") + "\n" + "word " * 700 + "end."),
            page("http://example.com/german", GERMAN),
            page("https://example.com/dup", good("new"), "2019-06-01T00:00:00Z"),
            span_b,
            page("http://example.com/broken", b"bad \xff bytes in this record."),
        ],
    )
    with open(d / "in-c.wet.gz", "wb") as f:  # one good record, then a record cut short
        f.write(wet.warc_record(page("http://example.com/trunc-ok", good("trunc"))))
        f.write(wet.warc_record(page("http://example.com/trunc-cut", good("cut")))[:-30])
    (d / "in-d.wet.gz").write_bytes(gzip.compress(b"hello\nthis is not a WARC file\n", mtime=0))
    (d / "in-e.wet.gz").write_bytes(b"plain text, not gzip\n")
    return d, span_a, span_b


def run_c4(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["c4", *args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    d, *_ = corpus
    out = tmp_path_factory.mktemp("c4") / "out"
    code, stdout, stderr = run_c4([f"--input={d}/*.wet.gz", f"--output={out}", *BEAM_ARGS])
    assert code == 0, stderr
    return out, stdout, stderr


def read_split(out, split):
    info = json.loads((out / "c4_info.json").read_text())
    n = info["splits"][split]["num_shards"]
    pages = []
    for i in range(n):
        with gzip.open(out / f"c4-{split}-{i:05d}-of-{n:05d}.jsonl.gz", "rt", encoding="utf-8") as f:
            pages += [json.loads(line) for line in f]
    return {p["url"]: p["text"] for p in pages}


def test_pages_lines_and_counters(built, corpus):
    out, stdout, stderr = built
    _, span_a, span_b = corpus
    train = read_split(out, "train")
    # The copy of the shared span that stays is the one whose URL has the smaller md5 (then position).
    a_wins = hashlib.md5(span_a.url.encode()).hexdigest() < hashlib.md5(span_b.url.encode()).hexdigest()
    winner, loser = (span_a, span_b) if a_wins else (span_b, span_a)
    loser_own = good("beta" if loser is span_b else "alpha").replace("\n", " ")
    assert train == {
        "http://example.com/keep": "\n".join(
            [sentence("keep", 0), sentence("keep", 1), sentence("keep", 2) + " " + sentence("keep", 3)]
        ),
        "https://example.com/dup": good("new"),  # the newest of the two copies of example.com/dup
        winner.url: winner.text,
        loser.url: loser_own,
        "http://example.com/trunc-ok": good("trunc"),
    }
    assert read_split(out, "validation") == {validation_url(): good("valid")}
    info = json.loads((out / "c4_info.json").read_text())
    for split, shards in (("train", 8), ("validation", 1)):  # the readers seek by the pages per shard
        assert info["splits"][split].pop("shard_lengths") == [
            len(
                gzip.decompress(
                    (out / f"c4-{split}-{i:05d}-of-{shards:05d}.jsonl.gz").read_bytes()
                ).splitlines()
            )
            for i in range(shards)
        ]
    assert info["splits"] == {
        "train": {"num_examples": 5, "num_shards": 8},
        "validation": {"num_examples": 1, "num_shards": 1},
    }
    assert info["counters"] == {
        "wet-files": 5,
        "wet-files-truncated-gzip": 1,
        "wet-files-not-warc": 1,
        "wet-files-not-gzip": 1,
        "records-invalid-utf8": 1,
        "pages-read": 13,
        "page-too-long": 1,
        "url-duplicate": 1,
        "lines-no-endmark": 2,
        "lines-too-short": 1,
        "lines-javascript": 1,
        "lines-policy": 1,
        "lines-with-too-long-word": 1,
        "lines-valid": 25,
        "filtered-page-loremipsum": 1,
        "filtered-page-squigglybracket": 1,
        "filtered-page-toofewsentences": 1,
        "emitted-clean-pages": 8,
        "filtered-sentences-span_duplicate": 3,
        "language-other": 1,
        "filtered-page-badword": 1,
        "output-train": 5,
        "output-validation": 1,
    }
    assert "pages-read" in stdout and "output-train" in stdout
    # One warning line per bad file or record, naming it; nothing else on stderr.
    lines = stderr.strip().splitlines()
    assert len(lines) == 4, stderr
    assert all(line.startswith("mesh-t5 c4: warning: skipping") for line in lines)
    assert any("in-c.wet.gz: truncated gzip" in line for line in lines)
    assert any("in-d.wet.gz: not a WARC file" in line for line in lines)
    assert any("in-e.wet.gz: not a gzip file" in line for line in lines)
    assert any("http://example.com/broken" in line and "invalid UTF-8" in line for line in lines)
    # Nothing but the shards and the info file; no staging directory left beside it.
    assert sorted(os.listdir(out.parent)) == ["out"]
    assert len(os.listdir(out)) == 2 * 9 + 1


def test_rerun_gives_identical_bytes(built, corpus, tmp_path):
    out, *_ = built
    d, *_ = corpus
    again = tmp_path / "again"
    code, _, stderr = run_c4([f"--input={d}/*.wet.gz", f"--output={again}", *BEAM_ARGS])
    assert code == 0, stderr
    assert sorted(os.listdir(out)) == sorted(os.listdir(again))
    for name in os.listdir(out):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_user_errors_one_line_and_nothing_created(built, tmp_path):
    out, *_ = built
    code, _, stderr = run_c4([f"--input={tmp_path}/none/*.wet.gz", f"--output={tmp_path}/new", *BEAM_ARGS])
    assert code == 2 and stderr.count("\n") == 1 and "matches no file" in stderr
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path) == []
    code, _, stderr = run_c4([f"--input={tmp_path}/*.gz", f"--output={out}", *BEAM_ARGS])
    assert code == 2 and "exists and is not empty" in stderr and stderr.count("\n") == 1
    code, _, stderr = run_c4([f"--input={tmp_path}/*.gz", f"--output={tmp_path}/x", "--language=xx"])
    assert code == 2 and "--language=xx" in stderr and stderr.count("\n") == 1


def test_output_is_a_task_source(built, monkeypatch):
    from test_data_sharding import check_hosts_and_seeks

    from mesh_t5.data import c4_output

    out, *_ = built
    source = c4_output.C4Source(str(out))
    assert source.num_examples("train") == 5 and source.num_examples("validation") == 1
    examples = list(source.iter_split("train"))
    assert {ex["url"]: ex["text"] for ex in examples} == read_split(out, "train")
    assert set(examples[0]) == {"url", "text", "timestamp"}
    lengths = source.info["splits"]["train"]["shard_lengths"]  # hosts read their shards, seeking by these
    urls = check_hosts_and_seeks(
        c4_output, source, "train", lengths, range(5), monkeypatch, lambda r: r["url"]
    )
    assert urls == [ex["url"] for ex in examples]


def test_output_of_an_older_version_is_refused_in_one_line(built, tmp_path):
    from mesh_t5.data import c4_output
    from mesh_t5.errors import UserError

    out, *_ = built
    info = json.loads((out / c4_output.INFO_FILE).read_text())
    del info["splits"]["train"]["shard_lengths"]
    (tmp_path / c4_output.INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(UserError, match="older mesh_t5 .no shard_lengths.: run `mesh-t5 c4` again$"):
        c4_output.C4Source(str(tmp_path)).num_examples("train")


def test_output_trains_a_tiny_model_with_span_corruption(built, tmp_path):
    from mesh_t5 import data, optim, train
    from mesh_t5.config import T5Config
    from mesh_t5.data.c4_output import C4Source
    from mesh_t5.vocab import ByteVocabulary

    out, *_ = built
    vocab = ByteVocabulary(extra_ids=100)  # 359 ids; sentinels are the top 100
    inputs_length = 64
    _, targets_length = data.random_spans_helper(inputs_length, 0.15, 3.0, 1, 1)
    data.TaskRegistry.add(
        "test_c4_local",
        C4Source(str(out)),
        data.unsupervised_preprocessors("span_corruption", default_inputs_length=inputs_length),
        {"inputs": data.Feature(vocab, required=False), "targets": data.Feature(vocab)},
        overwrite=True,
    )
    lengths = {"inputs": inputs_length, "targets": targets_length}
    example = next(data.get_task("test_c4_local").get_dataset("train", sequence_length=lengths))
    assert len(example["inputs"]) == inputs_length and (example["inputs"] >= vocab.vocab_size - 100).any()
    config = T5Config(
        vocab_size=384, d_model=32, d_ff=64, num_heads=2, d_kv=16, num_encoder_layers=1, num_decoder_layers=1,
        dropout_rate=0.0,
    )  # fmt: skip
    result = train.train(
        model_config=config, model_dir=str(tmp_path / "model"), mixture_or_task_name="test_c4_local",
        task_feature_lengths=lengths, train_steps=3, batch_size=4, learning_rate=optim.constant_schedule(1e-2),
        checkpoint_period=1000, tensorboard=False, progress=False, log_period=1, z_loss=0.0,
    )  # fmt: skip
    losses = [m["loss"] for _, m in result.history]
    assert len(losses) == 3 and all(4.0 < loss < 7.0 for loss in losses), losses  # ~ln(384) = 5.95 at init
    data.TaskRegistry.remove("test_c4_local")


@pytest.mark.parametrize("detector", ["langdetect", "py3langid"])
def test_language_detectors_keep_english_only(detector):
    from mesh_t5.data.c4_beam import LanguageFn

    fn = LanguageFn("en", 0.99, detector)
    fn.setup()
    english = (
        "The library opened its new reading room last spring, and since then the number of visitors has "
        "doubled. Children come after school to do their homework, while older readers prefer the quiet "
        "mornings. The staff plan to extend the opening hours in the summer."
    )
    french = "Le renard brun rapide saute par-dessus le chien paresseux. Il fait très beau aujourd'hui dans le parc."
    assert list(fn.process({"text": english})) == [{"text": english}]
    assert list(fn.process({"text": GERMAN})) == [] and list(fn.process({"text": french})) == []
