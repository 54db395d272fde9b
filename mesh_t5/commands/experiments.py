"""`mesh-t5 experiments [REGEX]`: the paper's Tables 1-14 as named configurations (table, row, what
the row varies, the paper's scores); `mesh-t5 train --experiment=NAME [--stage=S]` runs one."""

from __future__ import annotations

import argparse
import re

from mesh_t5 import experiments, validate
from mesh_t5.errors import UserError

EPILOG = """\
Run a row: each row is a pre-training then a fine-tuning per benchmark (column), or one run:
  mesh-t5 train --experiment=table7_span_length_10 --gin.MODEL_DIR=/runs/span10
  mesh-t5 train --experiment=table7_span_length_10 --stage=finetune --gin.PRETRAIN_DIR=/runs/span10 \\
    --gin.FINETUNE_TASK=glue_v002_proportional --gin.MODEL_DIR=/runs/span10_glue
Change one factor: add --gin_file or --gin.NAME=VALUE after it (later bindings win), e.g.
  --gin.T5Config.num_heads=16 or --gin_file=models/t5_small.gin.
Scores: validation sets after fine-tuning (Table 14: test sets, SQuAD validation); GLUE and SGLUE are
averages, CNNDM ROUGE-2-F, SQuAD exact match, EnDe/EnFr/EnRo BLEU.
"""


def _parser() -> argparse.ArgumentParser:
    p = validate.ArgumentParser(
        prog="mesh-t5 experiments", description=__doc__, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("pattern", nargs="?", default="", help="regular expression the names (or rows) must match")
    p.add_argument("-v", "--verbose", action="store_true", help="also show each row's stages and gin files")
    return p


def _score(value: float | None, table: int, benchmark: str) -> str:
    """Returns the score as the paper prints it: 2 decimals, Table 14's averages and BLEU 1."""
    if value is None:
        return "-"
    return f"{value:.1f}" if table == 14 and benchmark not in ("CNNDM", "SQuAD") else f"{value:.2f}"


def main(argv: list[str]) -> int:
    """Prints the experiments whose name or row matches the pattern; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        pattern = re.compile(args.pattern)
    except re.error as e:
        raise UserError(f"pattern {args.pattern!r} is not a regular expression: {e}") from None
    names = [
        n for n in experiments.experiment_names()
        if pattern.search(n) or pattern.search(experiments.get_experiment(n)["row"])
    ]  # fmt: skip
    if not names:
        raise UserError(f"no experiment matches {args.pattern!r}; `mesh-t5 experiments` lists them all")
    width = max(map(len, names))
    header = "  ".join(f"{b:>6}" for b in experiments.BENCHMARKS)
    print(f"{'experiment'.ljust(width)}  table  {header}  varies")
    for name in names:
        row = experiments.get_experiment(name)
        scores = "  ".join(
            f"{_score(row['scores'].get(b), row['table'], b):>6}" for b in experiments.BENCHMARKS
        )
        print(f"{name.ljust(width)}  {row['table']:>5}  {scores}  {row['varies']}")
        if args.verbose:
            print(f"{''.ljust(width)}  row {row['row']!r}" + (f"; {row['note']}" if row.get("note") else ""))
            for stage, files in experiments.stages(name).items():
                print(f"{''.ljust(width)}  --stage={stage}: {' + '.join(files)}")
    print(f"{len(names)} experiments; `mesh-t5 experiments --help` shows how to run and vary one")
    return 0
