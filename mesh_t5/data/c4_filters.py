"""C4's cleaning rules (paper §2.2; TFDS `c4_utils.clean_page`) as plain functions.

Pure Python, no Beam and no TensorFlow: the demo corpus uses them in memory, and the
Beam C4 pipeline can call the same functions inside its `FlatMap`s. A "page" is a
string whose lines are separated by newlines (a web page's lines in C4; a docstring's
paragraphs in the demo). Counters, when given, use the TFDS counter names so both
pipelines report the same statistics.

Rules, with the values of the paper and of TFDS's `c4_utils` (`_MIN_WORDS_PER_LINE = 5`,
`_MIN_NUM_SENTENCES = 3`, the code that made the released C4):
- a line is kept only if it ends in a terminal mark (. ? ! ") and not in an ellipsis;
- a line with fewer than `min_words_per_line` (5) words is dropped;
- a line with a word longer than `max_word_length` (1000) characters is dropped;
- citation markers ([1], [edit], [citation needed]) are removed from lines;
- a line mentioning "javascript" or a cookie/privacy/terms policy is dropped;
- a page containing "lorem ipsum", a curly bracket, or a word of a bad-word list is dropped;
- a page with fewer than `min_num_sentences` (3) sentences after cleaning is dropped;
- duplicates: C4 keeps one copy of every repeated line (TFDS) and the paper describes
  keeping one copy of every repeated three-sentence span; both are here.
"""

from __future__ import annotations

import collections
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence

MIN_WORDS_PER_LINE = 5
MIN_NUM_SENTENCES = 3
MAX_WORD_LENGTH = 1000
MAX_PAGE_LENGTH = 190_000  # characters; TFDS `is_valid_length`
END_MARKS = (".", "?", "!", '"')
ELLIPSIS = "..."
POLICY_SUBSTRINGS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
CITATION_REGEX = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
DEDUPE_SPAN_SENTENCES = 3

# A sentence ends at . ? ! (optionally followed by closing quotes/brackets) before
# whitespace and a capital, digit or opening quote. TFDS used NLTK's punkt, which needs
# a download; this rule agrees with it on ordinary prose and has no data file.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "Mr.", "Mrs.", "Dr.", "St.", "No.", "approx.")

Counters = collections.Counter


def split_sentences(text: str) -> list[str]:
    """Returns the sentences of `text` (one line or several), split at terminal marks."""
    sentences: list[str] = []
    for line in text.splitlines():
        pieces = _SENTENCE_END.split(line.strip())
        current = ""
        for piece in pieces:
            current = f"{current} {piece}" if current else piece
            # Do not end a sentence after an abbreviation or a single initial ("J. Smith").
            if current.endswith(_ABBREVIATIONS) or re.search(r"(?:^|\s)[A-Za-z]\.$", current):
                continue
            sentences.append(current)
            current = ""
        if current:
            sentences.append(current)
    return [s for s in sentences if s]


def compile_badwords(badwords: Iterable[str]) -> re.Pattern[str] | None:
    """Returns a regex matching any bad word flanked by non-word characters (TFDS c4 3.1's regex).

    Search it in the lower-cased text. TFDS before 3.1 used `[^a-z](w)[^a-z]` unescaped, which
    missed a bad word at the very start or end of a line.
    """
    words = sorted({w.strip().lower() for w in badwords if w.strip()})
    if not words:
        return None
    return re.compile(r"(?:\W|^)(" + "|".join(map(re.escape, words)) + r")(?:\W|$)")


def has_too_long_word(line: str, max_word_length: int = MAX_WORD_LENGTH) -> bool:
    """True if some whitespace-separated word of `line` is longer than `max_word_length`."""
    return any(len(word) > max_word_length for word in line.split())


def clean_page(
    text: str,
    *,
    min_words_per_line: int = MIN_WORDS_PER_LINE,
    min_num_sentences: int = MIN_NUM_SENTENCES,
    max_word_length: int = MAX_WORD_LENGTH,
    max_page_length: int | None = MAX_PAGE_LENGTH,
    badwords_regex: re.Pattern[str] | None = None,
    sentence_splitter: Callable[[str], list[str]] | None = None,
    counters: Counters | None = None,
) -> str | None:
    """Returns the page with C4's line filters applied, or None if C4 drops the whole page.

    `sentence_splitter` counts sentences (default `split_sentences`; the Beam pipeline passes
    Punkt, as TFDS); `max_page_length=None` leaves the length to an earlier step.
    """
    count = counters if counters is not None else collections.Counter()
    splitter = sentence_splitter or split_sentences
    if max_page_length is not None and len(text) > max_page_length:
        count["filtered-page-contenttoolong"] += 1
        return None
    valid_lines: list[str] = []
    num_sentences = 0
    for raw in text.splitlines():
        line = raw.strip()
        if has_too_long_word(line, max_word_length):
            count["lines-with-too-long-word"] += 1
            continue
        line = CITATION_REGEX.sub("", line)
        if not line.endswith(END_MARKS) or line.endswith(ELLIPSIS):
            count["lines-no-endmark"] += 1
            continue
        if len(line.split()) < min_words_per_line:
            count["lines-too-short"] += 1
            continue
        lower = line.lower()
        if "lorem ipsum" in lower:
            count["filtered-page-loremipsum"] += 1
            return None
        if "javascript" in lower:
            count["lines-javascript"] += 1
            continue
        if "{" in line:  # probably code
            count["filtered-page-squigglybracket"] += 1
            return None
        if any(p in lower for p in POLICY_SUBSTRINGS):
            count["lines-policy"] += 1
            continue
        if badwords_regex is not None and badwords_regex.search(lower):
            count["filtered-page-badword"] += 1
            return None
        num_sentences += len(splitter(line))
        valid_lines.append(line)
        count["lines-valid"] += 1
    if num_sentences < min_num_sentences:
        count["filtered-page-toofewsentences"] += 1
        return None
    count["emitted-clean-pages"] += 1
    return "\n".join(valid_lines).strip()


def hash_text(text: str) -> str:
    """The md5 hex digest of a normalised (stripped, lower-cased) line or span: the dedupe key."""
    return hashlib.md5(text.strip().lower().encode("utf-8")).hexdigest()


def dedupe_lines(
    pages: Sequence[str],
    *,
    min_num_sentences: int = MIN_NUM_SENTENCES,
    counters: Counters | None = None,
) -> list[str | None]:
    """Returns the pages with every repeated line kept only in its first page (None: page dropped).

    TFDS picks the page that keeps a line by hashing, to spread work across Beam
    workers; in memory, first-in-order is the deterministic equivalent.
    """
    count = counters if counters is not None else collections.Counter()
    seen: set[str] = set()
    out: list[str | None] = []
    for page in pages:
        kept: list[str] = []
        local: set[str] = set()
        for line in page.split("\n"):
            key = hash_text(line)
            if key in local:
                count["filtered-lines-local_duplicate"] += 1
            elif key in seen:
                count["filtered-lines-global_duplicate"] += 1
            else:
                kept.append(line)
                local.add(key)
        seen |= local
        out.append(finish_deduped(kept, min_num_sentences, count))
    return out


def sentence_windows(
    page: str, span: int = DEDUPE_SPAN_SENTENCES, sentence_splitter: Callable[[str], list[str]] | None = None
) -> tuple[list[list[str]], list[tuple[str, list[tuple[int, int]]]]]:
    """Returns (the sentences of each line, [(dedupe key, [(line, sentence) of the window])]).

    Windows are `span` consecutive sentences of the page, crossing line boundaries; the key is
    `hash_text` of the window's sentences joined by a space.
    """
    splitter = sentence_splitter or split_sentences
    lines = [splitter(line) for line in page.split("\n")]
    flat = [(i, j) for i, sentences in enumerate(lines) for j in range(len(sentences))]
    windows = []
    for start in range(len(flat) - span + 1):
        window = flat[start : start + span]
        windows.append((hash_text(" ".join(lines[i][j] for i, j in window)), window))
    return lines, windows


def remove_sentences(lines: list[list[str]], drop: set[tuple[int, int]]) -> list[str]:
    """Returns the non-empty lines left after removing the (line, sentence) positions in `drop`."""
    kept = [
        " ".join(s for j, s in enumerate(sentences) if (i, j) not in drop)
        for i, sentences in enumerate(lines)
    ]
    return [k for k in kept if k]


def dedupe_sentence_spans(
    pages: Sequence[str],
    *,
    span: int = DEDUPE_SPAN_SENTENCES,
    min_num_sentences: int = MIN_NUM_SENTENCES,
    sentence_splitter: Callable[[str], list[str]] | None = None,
    counters: Counters | None = None,
) -> list[str | None]:
    """Returns the pages with all but the first copy of any repeated `span`-sentence window removed.

    The paper's rule ("discarded all but one of any three-sentence span occurring more
    than once"). A window seen earlier (in an earlier page or earlier in the same page)
    has its sentences removed here; lines keep their boundaries; None: page dropped.
    """
    count = counters if counters is not None else collections.Counter()
    seen: set[str] = set()
    out: list[str | None] = []
    for page in pages:
        lines, windows = sentence_windows(page, span, sentence_splitter)
        drop: set[tuple[int, int]] = set()
        for key, window in windows:
            if key in seen:
                drop.update(window)
            else:
                seen.add(key)
        count["filtered-sentences-span_duplicate"] += len(drop)
        kept = remove_sentences(lines, drop)
        out.append(finish_deduped(kept, min_num_sentences, count, sentence_splitter))
    return out


def finish_deduped(
    lines: list[str],
    min_num_sentences: int,
    count: Counters,
    sentence_splitter: Callable[[str], list[str]] | None = None,
) -> str | None:
    """Returns the deduplicated page's text, or None (counted) if empty or under `min_num_sentences`."""
    text = "\n".join(lines)
    if not text:
        count["filtered-deduped_page-empty"] += 1
        return None
    if min_num_sentences and len((sentence_splitter or split_sentences)(text)) < min_num_sentences:
        count["filtered-deduped_page-toofewsentences"] += 1
        return None
    return text
