"""`mesh-t5 c4 --input=GLOB --output=DIR [--runner=DirectRunner] [--language=en] [beam options]`:
builds a C4-style corpus from Common Crawl WET files with the paper's cleaning rules, on Apache Beam.

Flags this command does not know are Beam pipeline options (`--runner=DataflowRunner --project=...
--region=... --temp_location=gs://...`, `--runner=FlinkRunner --flink_master=...`,
`--runner=SparkRunner ...`, `--direct_num_workers=0` for every local core). README: "Building C4".
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
from importlib import resources
from typing import Any

from mesh_t5.errors import UserError

PACKAGED_BADWORDS = {"en": "en.txt"}  # mesh_t5/data/badwords/ (CC-BY-4.0, see NOTICE there)


def _parser() -> argparse.ArgumentParser:
    from mesh_t5.data import c4_filters

    p = argparse.ArgumentParser(prog="mesh-t5 c4", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="glob of WET files (*.warc.wet.gz), local or gs://")
    p.add_argument("--output", required=True, help="new directory for the shards and c4_info.json")
    p.add_argument("--language", default="en", help="langdetect code of the pages to keep (default en)")
    p.add_argument("--min_language_probability", type=float, default=0.99)
    p.add_argument(
        "--language_detector",
        default="langdetect",
        choices=("langdetect", "py3langid"),
        help="langdetect: the paper's (default); py3langid: ~17x faster, another model",
    )
    p.add_argument("--min_words_per_line", type=int, default=c4_filters.MIN_WORDS_PER_LINE)
    p.add_argument("--min_num_sentences", type=int, default=c4_filters.MIN_NUM_SENTENCES)
    p.add_argument("--max_word_length", type=int, default=c4_filters.MAX_WORD_LENGTH)
    p.add_argument("--max_page_length", type=int, default=c4_filters.MAX_PAGE_LENGTH)
    p.add_argument(
        "--dedup",
        default="spans",
        choices=("spans", "lines", "none"),
        help="spans: the paper's three-sentence spans (default); lines: the released C4's (TFDS)",
    )
    p.add_argument("--span_sentences", type=int, default=c4_filters.DEDUPE_SPAN_SENTENCES)
    p.add_argument(
        "--badwords_file",
        default=None,
        help="one bad word or phrase a line; default: the packaged LDNOOBW list for en; 'none': no list",
    )
    p.add_argument("--num_shards", type=int, default=8, help="train shards (default 8)")
    p.add_argument("--num_validation_shards", type=int, default=1)
    return p


def read_badwords(path: str | None, language: str) -> tuple[str, ...]:
    """Returns the bad-word list: `path`'s lines, the packaged list for `language`, or () for "none"."""
    if path == "none":
        return ()
    if path is None:
        if language not in PACKAGED_BADWORDS:
            logging.getLogger("mesh_t5.c4").warning(
                "no packaged bad-word list for --language=%s: the bad-word rule is off; "
                "give --badwords_file (e.g. LDNOOBW's list for the language)",
                language,
            )
            return ()
        text = (
            resources.files("mesh_t5.data")
            .joinpath("badwords", PACKAGED_BADWORDS[language])
            .read_text("utf-8")
        )
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--badwords_file={path!r} cannot be read as UTF-8 text ({e})") from None
    return tuple(w.strip() for w in text.splitlines() if w.strip())


class _StderrHandler(logging.StreamHandler):
    """Writes to the sys.stderr of the moment (a test or a caller may have redirected it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def quiet_logs() -> None:
    """Our warnings (skipped files and records) one line each on stderr; Beam's and TF's start-up chatter off."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    ours = logging.getLogger("mesh_t5.c4")
    if not ours.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("mesh-t5 c4: warning: %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.WARNING)
        ours.propagate = False


def import_beam_module(name: str, command: str) -> Any:
    """Imports mesh_t5.data.`name`; without the [c4] extra installed, one line saying to install it."""
    # Beam logs optional-dependency notices ("apitools not found") on the root logger at import: hide them
    # for the import only (a process-wide root level would also hide the caller's own warnings).
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return importlib.import_module(f"mesh_t5.data.{name}")
    except ModuleNotFoundError as e:
        raise UserError(
            f"`mesh-t5 {command}` needs the c4 extra ({e.name} is missing): pip install 'mesh_t5[c4]'"
        ) from None
    finally:
        root.setLevel(level)


def with_default_runner(beam_args: list[str]) -> list[str]:
    """The Beam options, with the DirectRunner unless a --runner is given."""
    return (
        beam_args
        if any(a.startswith("--runner") for a in beam_args)
        else ["--runner=DirectRunner", *beam_args]
    )


def main(argv: list[str]) -> int:
    args, beam_args = _parser().parse_known_args(argv)
    quiet_logs()
    c4_beam = import_beam_module("c4_beam", "c4")
    beam_args = with_default_runner(beam_args)
    options = c4_beam.C4Options(
        language=args.language,
        min_language_probability=args.min_language_probability,
        language_detector=args.language_detector,
        min_words_per_line=args.min_words_per_line,
        min_num_sentences=args.min_num_sentences,
        max_word_length=args.max_word_length,
        max_page_length=args.max_page_length,
        dedup=args.dedup,
        span_sentences=args.span_sentences,
        num_shards=args.num_shards,
        num_validation_shards=args.num_validation_shards,
    )  # checked before the bad-word list is read: a wrong --language gets one line, not a warning first
    options = dataclasses.replace(options, badwords=read_badwords(args.badwords_file, args.language))
    counters = c4_beam.run(args.input, args.output, options, beam_args)
    width = max(map(len, counters), default=0)
    print(f"mesh-t5 c4: wrote {args.output}")
    for name, value in counters.items():
        print(f"  {name.ljust(width)}  {value}")
    return 0
