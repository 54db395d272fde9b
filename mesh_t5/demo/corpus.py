"""The demo's offline corpus: the docstrings of the Python standard library, cleaned like C4.

Every Python installation carries a few MB of real English prose in its standard
library's docstrings. They are read by parsing the source files with `ast` (importing
stdlib modules would run their side effects), turned into "pages" (one docstring, one
line per paragraph), cleaned with C4's rules (`mesh_t5.data.c4_filters`), deduplicated,
and split deterministically into train / validation / test by a hash of their id.
`write_task_files` derives the fine-tuning tasks from the same documents.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import hashlib
import json
import random
import re
import sysconfig
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from mesh_t5.data import c4_filters
from mesh_t5.errors import UserError

SPLITS = ("train", "validation", "test")
# Per mille of documents in validation and test; the rest trains.
SPLIT_PER_MILLE = {"validation": 50, "test": 100}
# Directories of the stdlib whose files are tests, vendored code or generated tables.
SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "pydoc_data", "lib2to3"}
)
SKIP_DIR_PREFIXES = ("config-",)  # config-3.11-x86_64-linux-gnu: build files
# A docstring needs this many sentences after cleaning: the paper's C4 uses 3 per web page,
# but a docstring is a short page, and one-sentence docstrings are still good prose.
DEMO_MIN_NUM_SENTENCES = 1
# A docstring line is a whole paragraph, rarely a navigation fragment: the demo keeps lines of
# 3+ words (C4 asks 5 of a web page's lines), which keeps short summaries such as "Return the value."
DEMO_MIN_WORDS_PER_LINE = 3

_REST_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")  # :func:`os.path.join` -> os.path.join
_BACKTICKS = re.compile(r"`{1,2}([^`]+)`{1,2}")
_LIST_ITEM = re.compile(r"^(?:[-*+]|\d+[.)]|\(\w\)|[a-z]\))\s")
_UNDERLINE = re.compile(r"^([-=~^*#])\1{2,}$")
# "name: text", "name (type): text", "name -- text": one entry of an argument list.
_FIELD = re.compile(r"^\*{0,2}\w+(?: \([^)]*\))?(?::| --) ")


@dataclasses.dataclass(frozen=True)
class Document:
    """One cleaned docstring: `text` has one paragraph per line."""

    id: str  # "email.message:Message.get_content_type"
    module: str  # "email.message"
    family: str  # top-level package or module: "email"
    name: str  # qualified name inside the module ("" for the module docstring)
    kind: str  # "module" | "class" | "function"
    text: str

    @property
    def split(self) -> str:
        return split_of(self.id)


def default_stdlib_dir() -> Path:
    """Returns the directory of the running interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(doc_id: str) -> str:
    """Returns "train", "validation" or "test" for a document id: a stable hash, not a random draw."""
    bucket = int(hashlib.md5(doc_id.encode("utf-8")).hexdigest()[:8], 16) % 1000
    if bucket < SPLIT_PER_MILLE["test"]:
        return "test"
    if bucket < SPLIT_PER_MILLE["test"] + SPLIT_PER_MILLE["validation"]:
        return "validation"
    return "train"


def stdlib_source_files(stdlib_dir: Path | str | None = None) -> list[Path]:
    """Returns the stdlib's .py files in sorted order, without tests, site-packages and build files."""
    root = Path(stdlib_dir) if stdlib_dir else default_stdlib_dir()
    if not root.is_dir():
        raise UserError(f"standard library directory {str(root)!r} does not exist; pass an existing one")
    files = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts[:-1]
        if any(p in SKIP_DIRS or p.startswith(SKIP_DIR_PREFIXES) for p in parts):
            continue
        if path.name.startswith("test_"):
            continue
        files.append(path)
    return files


def module_name(path: Path, root: Path) -> str:
    """Returns the dotted module name of a source file under `root` ("email/message.py" -> "email.message")."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def iter_docstrings(source: str, module: str) -> Iterator[tuple[str, str, str]]:
    """Yields (qualified name, kind, raw docstring) for the module and every class and function in it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # invalid escapes in old stdlib strings
        tree = ast.parse(source)

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child, clean=True)
                if doc:
                    yield name, "class" if isinstance(child, ast.ClassDef) else "function", doc
                yield from visit(child, f"{name}.")

    doc = ast.get_docstring(tree, clean=True)
    if doc:
        yield "", "module", doc
    yield from visit(tree, "")


def docstring_to_page(doc: str) -> str:
    """Returns a docstring as a C4 "page": one line per prose paragraph, markup and code removed.

    Docstrings are hard-wrapped, so a paragraph's physical lines are joined (a web
    page's WET line is a paragraph too). Paragraphs that are code, doctests, tables,
    directives or indented lists stay one line per physical line, so C4's line filters
    drop their pieces that are not sentences.
    """
    lines: list[str] = []
    for paragraph in re.split(r"\n\s*\n", doc.strip()):
        raw = [line.rstrip() for line in paragraph.splitlines() if line.strip()]
        # Doctests are code even when their line happens to end in a quote mark.
        lines.extend(
            _strip_markup(" ".join(item)) for item in _paragraph_items(raw) if not item[0].startswith(">>>")
        )
    return "\n".join(line for line in lines if line)


def _paragraph_items(raw: list[str]) -> list[list[str]]:
    """Groups a paragraph's physical lines into items: wrapped prose joins, list entries and code split."""
    items: list[list[str]] = []
    previous = 0  # indentation of the previous line
    for line in raw:
        indent = len(line) - len(line.lstrip())
        text = line.strip()
        in_doctest = bool(items) and items[-1][0].startswith(">>>") and not text.startswith(">>>")
        starts_item = not in_doctest and (  # a doctest's output lines belong to its item
            not items
            or text.startswith((">>>", "...", "..", ":", "|", "+"))
            or bool(_LIST_ITEM.match(text) or _UNDERLINE.match(text) or _FIELD.match(text))
            or indent < previous
            or items[-1][0].startswith("..")
            or items[-1][-1].endswith(":")
        )
        if starts_item:
            items.append([text])
        else:
            items[-1].append(text)
        previous = indent
    return items


def _strip_markup(text: str) -> str:
    text = _REST_ROLE.sub(r"\1", text)
    text = _BACKTICKS.sub(r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def collect_documents(
    stdlib_dir: Path | str | None = None,
    *,
    min_num_sentences: int = DEMO_MIN_NUM_SENTENCES,
    max_files: int | None = None,
    counters: collections.Counter | None = None,
) -> list[Document]:
    """Returns the cleaned, deduplicated docstrings of the standard library, in file order.

    C4 rules: `c4_filters.clean_page` per docstring, then `dedupe_lines` and
    `dedupe_sentence_spans` across all of them. `max_files` keeps the first files only
    (for quick runs and tests).
    """
    root = Path(stdlib_dir) if stdlib_dir else default_stdlib_dir()
    count = counters if counters is not None else collections.Counter()
    raw_docs: list[tuple[str, str, str, str, str]] = []
    files = stdlib_source_files(root)
    for path in files[:max_files] if max_files else files:
        module = module_name(path, root)
        try:
            source = path.read_text(encoding="utf-8")
            found = list(iter_docstrings(source, module))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            count["files-unparseable"] += 1
            continue
        count["files"] += 1
        for name, kind, doc in found:
            count["docstrings"] += 1
            page = c4_filters.clean_page(
                docstring_to_page(doc),
                min_words_per_line=DEMO_MIN_WORDS_PER_LINE,
                min_num_sentences=min_num_sentences,
                counters=count,
            )
            if page is not None:
                raw_docs.append((module, name, kind, doc, page))
    pages = c4_filters.dedupe_lines(
        [p for *_, p in raw_docs], min_num_sentences=min_num_sentences, counters=count
    )
    pages = c4_filters.dedupe_sentence_spans(
        [p or "" for p in pages], min_num_sentences=min_num_sentences, counters=count
    )
    documents = []
    ids: collections.Counter[str] = collections.Counter()
    for (module, name, kind, _, _), page in zip(raw_docs, pages, strict=True):
        doc_id = f"{module}:{name}"
        ids[doc_id] += 1
        if ids[doc_id] > 1:  # the same name defined twice (per platform, say)
            doc_id += f"#{ids[doc_id]}"
        if page:
            documents.append(Document(doc_id, module, module.split(".")[0], name, kind, page))
    count["documents"] = len(documents)
    return documents


def write_jsonl(path: Path | str, records: Iterable[dict]) -> Path:
    """Writes one JSON object per line (UTF-8, not ASCII-escaped); returns the path."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return Path(path)


def read_examples(path: Path | str) -> list[dict]:
    """Reads a JSONL file (a task file written by `write_task_files`, predictions, ...)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_documents(documents: list[Document], path: Path | str) -> None:
    """Writes documents as JSONL (one JSON object per line, with its split)."""
    write_jsonl(path, ({**dataclasses.asdict(doc), "split": doc.split} for doc in documents))


def read_documents(path: Path | str) -> list[Document]:
    """Reads documents written by `write_documents`."""
    fields = {f.name for f in dataclasses.fields(Document)}
    return [Document(**{k: v for k, v in d.items() if k in fields}) for d in read_examples(path)]


def write_pretraining_text(documents: list[Document], path: Path | str, split: str = "train") -> int:
    """Writes one document per line (paragraphs joined by spaces) for `split`; returns the byte count."""
    text = "".join(doc.text.replace("\n", " ") + "\n" for doc in documents if doc.split == split)
    Path(path).write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


# ---- Derived text-to-text tasks -------------------------------------------------------------
# Both are chosen so that a model of a few million parameters learns them in minutes on a CPU,
# and both have a trivial baseline it must beat: copying the lead sentence, the majority class.

SUMMARIZE_PREFIX = "summarize: "
FAMILY_PREFIX = "which module: "
# Top-level stdlib packages with the most docstrings, distinct enough to tell apart by topic.
FAMILY_LABELS = ("asyncio", "distutils", "email", "importlib", "logging", "tkinter", "unittest", "xml")
# The summarize input holds the summary line and the sentences after it, at most this many and
# this many characters in all, so that nearly every input fits the demo's 128 input tokens (the
# summary line is not cut off). Summary lines are at most 110 characters; with the demo's 2,000-piece
# vocabulary ~99% of them fit its 32 target tokens, and fine-tuning warns about the rest, which are
# cut (27 of 2,174 training targets in a full run, 2026-12-01: code-like lines take more pieces).
SUMMARIZE_MAX_SENTENCES = 4
SUMMARIZE_MAX_CHARS = 300
SUMMARIZE_MAX_TARGET_CHARS = 110
TASK_FILES = {"summarize": "summarize_{split}.jsonl", "family": "family_{split}.jsonl"}


def task_file(data_dir: Path | str, task: str, split: str) -> Path:
    """Returns the JSONL file of a derived task ("summarize" or "family") and split in a data directory."""
    return Path(data_dir) / TASK_FILES[task].format(split=split)


def summarize_example(doc: Document, seed: int = 0) -> dict[str, str] | None:
    """Returns {"id", "inputs", "targets"}: a docstring's sentences, shuffled -> its summary line.

    Extractive summarisation: the input is "summarize: <name>: " and the docstring's first
    sentences (its summary line and up to SUMMARIZE_MAX_SENTENCES - 1 after it) in an order
    drawn from `seed` and the document id; the target is the summary line (the first sentence
    of the docstring). The model has to tell which sentence summarises the object (short,
    often imperative, naming what `name` does); `mesh-t5 demo` scores the sentence it ranks
    highest and its generation. Copying the input's lead sentence, the baseline, is right when
    the shuffle happened to put the summary line first. None when the
    docstring has one sentence, its first two are over SUMMARIZE_MAX_CHARS, its summary line
    over SUMMARIZE_MAX_TARGET_CHARS, or the joined sentences would not split back into the
    same ones (the baseline must see the sentences the target was cut from).
    """
    sentences = c4_filters.split_sentences(doc.text)[:SUMMARIZE_MAX_SENTENCES]
    while len(sentences) > 2 and sum(len(s) + 1 for s in sentences) > SUMMARIZE_MAX_CHARS:
        sentences.pop()
    if len(sentences) < 2 or sum(len(s) + 1 for s in sentences) > SUMMARIZE_MAX_CHARS:
        return None
    if len(sentences[0]) > SUMMARIZE_MAX_TARGET_CHARS:
        return None
    order = list(sentences)
    random.Random(f"{seed}:{doc.id}").shuffle(order)
    body = " ".join(order)
    if c4_filters.split_sentences(body) != order:
        return None
    name = f"{doc.module}.{doc.name}" if doc.name else doc.module
    return {"id": doc.id, "inputs": f"{SUMMARIZE_PREFIX}{name}: {body}", "targets": sentences[0]}


def family_example(doc: Document) -> dict[str, str] | None:
    """Returns {"inputs", "targets"}: a docstring -> the stdlib package it comes from (or None)."""
    if doc.family not in FAMILY_LABELS:
        return None
    return {"id": doc.id, "inputs": FAMILY_PREFIX + doc.text.replace("\n", " "), "targets": doc.family}


def summarize_sentences(inputs: str) -> list[str]:
    """Returns the sentences of a `summarize` input in the order given (the candidates for its summary line)."""
    body = inputs[len(SUMMARIZE_PREFIX) :] if inputs.startswith(SUMMARIZE_PREFIX) else inputs
    body = body.split(": ", 1)[-1]  # after the object's name
    return c4_filters.split_sentences(body) or [body]


def lead_sentence(inputs: str) -> str:
    """The lead baseline for `summarize`: the first sentence of the input as given (after the name)."""
    return summarize_sentences(inputs)[0]


def shortest_sentence(inputs: str) -> str:
    """A hand-made rule for `summarize`, reported for reference: the input's shortest sentence."""
    return min(summarize_sentences(inputs), key=len)


def majority_label(targets: list[str]) -> str:
    """The majority-class baseline: the most frequent training label (ties: alphabetical)."""
    counts = collections.Counter(targets)
    return min(counts, key=lambda label: (-counts[label], label))


def write_task_files(documents: list[Document], output_dir: Path | str) -> dict[str, dict[str, int]]:
    """Writes the derived tasks as JSONL files (one per task and split); returns the example counts.

    Files: `<output_dir>/summarize_{train,validation,test}.jsonl` and `family_*.jsonl`,
    each line {"id", "inputs", "targets"}. A document's split is its own (`split_of`),
    so nothing held out appears in pre-training text or vocabulary training either.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    for task, make in (("summarize", summarize_example), ("family", family_example)):
        by_split: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
        for doc in documents:
            example = make(doc)
            if example is not None:
                by_split[doc.split].append(example)
        for split, examples in by_split.items():
            write_jsonl(task_file(out, task, split), examples)
        counts[task] = {s: len(v) for s, v in by_split.items()}
    return counts
