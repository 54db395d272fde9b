"""The demo corpus: docstrings read with `ast` (never imported), cleaned like C4, split by hash."""

import collections
import json

import pytest

from mesh_t5.data import c4_filters
from mesh_t5.demo import corpus as dc
from mesh_t5.errors import UserError

PKG_INIT = '''"""Tools for the fake package.

It has a second sentence about the package."""
raise SystemExit("importing this file would exit: the collector must only parse it")
'''

PKG_MOD = '''"""Short."""


class Widget:
    """A widget that draws itself on a canvas.

    The widget keeps its state between calls.

    Call draw() to show it::

        w = Widget()
        w.draw({"x": 1})

    >>> Widget().draw()
    True
    """

    def draw(self):
        """Draw the widget on the canvas.

        Returns True when the canvas accepted the drawing.
        """

        def inner():
            """Inner helper that nobody documents well."""


async def fetch(url):
    """Fetch a URL and return its body. Raises OSError on failure."""
'''


@pytest.fixture
def fake_stdlib(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(PKG_INIT)
    (tmp_path / "pkg" / "mod.py").write_text(PKG_MOD)
    for skipped in ("test", "site-packages", "config-3.11-x86_64-linux-gnu"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "x.py").write_text('"""This file must never be read by the collector."""\n')
    (tmp_path / "test_thing.py").write_text('"""A test module that must be skipped too."""\n')
    (tmp_path / "broken.py").write_text('"""Broken file with a fine docstring here."""\ndef (:\n')
    return tmp_path


def test_source_files_skip_tests_site_packages_and_build_dirs(fake_stdlib):
    files = [p.relative_to(fake_stdlib).as_posix() for p in dc.stdlib_source_files(fake_stdlib)]
    assert files == ["broken.py", "pkg/__init__.py", "pkg/mod.py"]
    assert dc.module_name(fake_stdlib / "pkg" / "__init__.py", fake_stdlib) == "pkg"
    assert dc.module_name(fake_stdlib / "pkg" / "mod.py", fake_stdlib) == "pkg.mod"
    with pytest.raises(UserError, match="does not exist"):
        dc.stdlib_source_files(fake_stdlib / "nope")


def test_iter_docstrings_finds_nested_objects_without_importing():
    found = list(dc.iter_docstrings(PKG_MOD, "pkg.mod"))
    assert [(name, kind) for name, kind, _ in found] == [
        ("", "module"),
        ("Widget", "class"),
        ("Widget.draw", "function"),
        ("Widget.draw.inner", "function"),
        ("fetch", "function"),
    ]
    assert (
        found[2][2] == "Draw the widget on the canvas.\n\nReturns True when the canvas accepted the drawing."
    )


def test_docstring_to_page_joins_wrapped_prose_and_splits_code():
    doc = (
        "Return the sum of\n"
        "the :func:`len` of ``a`` and b.\n\n"
        "Args:\n"
        "    a: the first value, which is\n"
        "       wrapped here.\n"
        "    b: the second.\n\n"
        ">>> add(1, 2)\n"
        "3\n\n"
        "- first item is here.\n"
        "- second item\n"
        "  continues here."
    )
    assert dc.docstring_to_page(doc).splitlines() == [
        "Return the sum of the len of a and b.",
        "Args:",
        "a: the first value, which is wrapped here.",
        "b: the second.",
        "- first item is here.",
        "- second item continues here.",
    ]


def test_collect_documents_cleans_and_counts(fake_stdlib):
    counters = collections.Counter()
    docs = dc.collect_documents(fake_stdlib, counters=counters)
    by_id = {d.id: d for d in docs}
    assert set(by_id) == {
        "pkg:",
        "pkg.mod:Widget",
        "pkg.mod:Widget.draw",
        "pkg.mod:Widget.draw.inner",
        "pkg.mod:fetch",
    }
    # "Short." has one word: too short a line, so the module docstring is dropped.
    assert counters["files-unparseable"] == 1 and counters["files"] == 2
    # The code block of Widget (with its curly bracket) sits on lines without end marks and goes;
    # the doctest goes; the prose stays.
    assert by_id["pkg.mod:Widget"].text == (
        "A widget that draws itself on a canvas.\nThe widget keeps its state between calls."
    )
    assert by_id["pkg:"].family == "pkg" and by_id["pkg.mod:fetch"].kind == "function"
    assert by_id["pkg.mod:Widget.draw"].name == "Widget.draw"


def test_split_is_a_stable_hash_with_the_configured_proportions():
    ids = [f"mod{i}:f{i}" for i in range(20000)]
    counts = collections.Counter(dc.split_of(i) for i in ids)
    assert abs(counts["test"] / 20000 - 0.10) < 0.01
    assert abs(counts["validation"] / 20000 - 0.05) < 0.01
    assert dc.split_of("email.message:Message.get_content_type") == dc.split_of(
        "email.message:Message.get_content_type"
    )


def _doc(text, doc_id="email.message:Message.get"):
    module, name = doc_id.split(":")
    return dc.Document(doc_id, module, module.split(".")[0], name, "function", text)


def test_summarize_shuffles_the_sentences_and_targets_the_summary_line():
    sentences = [
        "Get a header value.",
        "Like __getitem__ but return failobj instead of None when the field is missing.",
        "Names are matched case-insensitively.",
        "The first match wins.",
    ]
    doc = _doc(" ".join(sentences[:2]) + "\n" + " ".join(sentences[2:]) + " A fifth sentence is dropped.")
    ex = dc.summarize_example(doc)
    assert ex["id"] == doc.id and ex["targets"] == "Get a header value."
    prefix = "summarize: email.message.Message.get: "
    assert ex["inputs"].startswith(prefix)
    shown = c4_filters.split_sentences(ex["inputs"][len(prefix) :])
    # Every one of the first four sentences exactly once, in a shuffled order; the fifth is cut.
    assert sorted(shown) == sorted(sentences) and shown != sentences
    # The baseline copies the input's lead sentence, whatever the shuffle put there.
    assert dc.lead_sentence(ex["inputs"]) == shown[0]
    # Deterministic per seed; other seeds draw other orders.
    assert dc.summarize_example(doc) == ex
    orders = {dc.summarize_example(doc, seed=s)["inputs"] for s in range(20)}
    assert len(orders) > 5
    leads = collections.Counter(
        dc.lead_sentence(dc.summarize_example(doc, seed=s)["inputs"]) for s in range(400)
    )
    assert set(leads) == set(sentences) and min(leads.values()) > 60  # every sentence leads ~1/4 of the time


def test_summarize_keeps_inputs_short_and_skips_what_it_cannot_use():
    long_tail = "Return the thing. " + " ".join(
        f"Sentence number {i} has a few words in it." for i in range(9)
    )
    ex = dc.summarize_example(_doc(long_tail))
    body = ex["inputs"].split(": ", 1)[1]
    assert len(body) <= dc.SUMMARIZE_MAX_CHARS and "Return the thing." in c4_filters.split_sentences(body)
    assert len(c4_filters.split_sentences(body)) == dc.SUMMARIZE_MAX_SENTENCES
    assert dc.summarize_example(_doc("Return the thing.")) is None  # one sentence: nothing to choose
    assert (
        dc.summarize_example(_doc("Return " + "very " * 30 + "much. It is short.")) is None
    )  # summary too long
    two_long = "Return the thing. " + "word " * 70 + "ends."
    assert dc.summarize_example(_doc(two_long)) is None  # even two sentences overflow the budget


def test_family_examples_and_majority_baseline():
    doc = _doc(
        "Get a header value. Like __getitem__ but return failobj instead of None\nwhen the field is missing."
    )
    assert dc.family_example(doc)["targets"] == "email"
    assert dc.family_example(doc)["inputs"].startswith("which module: Get a header value. Like")
    assert dc.family_example(_doc("Return the thing.", "x:y")) is None  # x is not a family label
    assert dc.majority_label(["b", "a", "b", "a", "c"]) == "a"


def test_write_task_files_respects_document_splits(tmp_path):
    docs = [
        dc.Document(
            f"email.m:f{i}",
            "email.m",
            "email",
            f"f{i}",
            "function",
            f"Return value number {i}. It is computed from the inputs given to it today.",
        )
        for i in range(300)
    ]
    counts = dc.write_task_files(docs, tmp_path)
    assert sum(counts["summarize"].values()) == 300 and sum(counts["family"].values()) == 300
    seen = {}
    for task in ("summarize", "family"):
        for split in dc.SPLITS:
            for line in (tmp_path / f"{task}_{split}.jsonl").read_text().splitlines():
                example = json.loads(line)
                assert dc.split_of(example["id"]) == split
                seen.setdefault(example["id"], set()).add(split)
    assert all(len(s) == 1 for s in seen.values())
    assert counts["summarize"]["test"] == sum(dc.split_of(d.id) == "test" for d in docs) > 0


def test_real_stdlib_corpus_is_large_english_and_clean():
    counters = collections.Counter()
    docs = dc.collect_documents(counters=counters)
    total = sum(len(d.text) for d in docs)
    assert len(docs) > 3000 and total > 800_000, (len(docs), total)
    assert not any("{" in d.text or ">>>" in d.text for d in docs)
    assert all(
        line.rstrip().endswith((".", "?", "!", '"')) for d in docs[:500] for line in d.text.splitlines()
    )
    assert len({d.id for d in docs}) == len(docs)
    families = collections.Counter(d.family for d in docs)
    assert all(families[f] >= 100 for f in dc.FAMILY_LABELS), families
    # The summarize task: enough examples, and the lead baseline is right about as often as a
    # uniform shuffle of 2-4 sentences makes it (not rigged either way).
    examples = [e for e in map(dc.summarize_example, docs) if e is not None]
    assert len(examples) > 2000, len(examples)
    lead_right = sum(dc.lead_sentence(e["inputs"]) == e["targets"] for e in examples) / len(examples)
    assert 0.3 < lead_right < 0.5, lead_right
