"""The paper's study as named experiments: every row of Tables 1-14 (Raffel et al. 2020) is a gin file in
gin/experiments/, and gin/experiments/paper_scores.json holds the paper's scores for each row plus its
headline tables (the baseline's mean and standard deviation, the final T5 models' test scores).

A row is one to two stages (the paper pre-trains, then fine-tunes on each benchmark):
- "pretrain_then_finetune": the row changes pre-training (architecture, objective, data, mixture, size);
  stage pretrain = its file, stage finetune = its file + experiments/finetune.gin.
- "finetune_row": the row changes fine-tuning (Table 10, fine-tune-only ensembles); stage pretrain =
  experiments/baseline.gin, stage finetune = its file.
- "single": one training run (multi-task training of Table 11, no pre-training of Table 1).

Table 3 only shows examples of the objectives; they are rows of Tables 4, 5 and 7. The paper's
numbering is kept: corruption rates are Table 6 (`table6_corruption_rate_25`), span lengths Table 7.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from mesh_t5.errors import UserError
from mesh_t5.gin_utils import PACKAGE_GIN_DIR

EXPERIMENTS_DIR = PACKAGE_GIN_DIR / "experiments"
SCORES_FILE = EXPERIMENTS_DIR / "paper_scores.json"
FINETUNE_STAGE = "experiments/finetune.gin"
BASELINE = "experiments/baseline.gin"
BENCHMARKS = ("GLUE", "CNNDM", "SQuAD", "SGLUE", "EnDe", "EnFr", "EnRo")


@functools.cache
def paper_scores() -> dict[str, Any]:
    """Returns the parsed paper_scores.json: {"benchmarks", "finetune_tasks", "headline", "experiments"}.

    headline["baseline"]["mean"] / ["std"] are the baseline's scores per benchmark (Table 1, validation);
    headline["t5_final"]["models"]["T5-11B"] the final models' (Table 14, test; SQuAD validation).
    """
    with open(SCORES_FILE, encoding="utf-8") as f:
        return json.load(f)


def experiment_names() -> list[str]:
    """Returns every experiment name, in table order."""
    rows = paper_scores()["experiments"]
    return sorted(rows, key=lambda n: rows[n]["table"])  # stable: the paper's row order within a table


def get_experiment(name: str) -> dict[str, Any]:
    """Returns the metadata of experiment `name` (table, row, varies, kind, scores); unknown -> UserError."""
    rows = paper_scores()["experiments"]
    if name not in rows:
        close = difflib.get_close_matches(name, list(rows), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "`mesh-t5 experiments` lists them"
        raise UserError(f"unknown experiment {name!r}; {hint}")
    return rows[name]


def stages(name: str) -> dict[str, list[str]]:
    """Returns {stage: gin files (relative to the gin search path)} of experiment `name`; the first is the default."""
    kind = get_experiment(name)["kind"]
    own = f"experiments/{name}.gin"
    if kind == "pretrain_then_finetune":
        return {"pretrain": [own], "finetune": [own, FINETUNE_STAGE]}
    if kind == "finetune_row":
        return {"pretrain": [BASELINE], "finetune": [own]}
    return {"train": [own]}


def stage_files(name: str, stage: str | None = None) -> tuple[list[str], list[str]]:
    """Returns (gin files, macros the user must set) for one stage of experiment `name` (default: its first)."""
    options = stages(name)
    stage = stage or next(iter(options))
    if stage not in options:
        raise UserError(f"experiment {name!r} has stages {', '.join(options)}, not {stage!r}")
    files = options[stage]
    text = "".join((PACKAGE_GIN_DIR / f).read_text(encoding="utf-8") for f in files)
    required = []
    if FINETUNE_STAGE in files or re.search(f"^include '{FINETUNE_STAGE}'$", text, re.M):
        required.append("FINETUNE_TASK")
        if not re.search(r"^INIT_CHECKPOINT = None$", text, re.M):
            required.append("PRETRAIN_DIR")
    return files, required


def compare(
    results: Mapping[str, float], experiment: str = "baseline"
) -> list[tuple[str, float, float, float]]:
    """Returns [(benchmark, ours, paper, ours - paper)] for the benchmarks both `results` and the paper's
    row `experiment` have (benchmark names as in BENCHMARKS)."""
    paper = get_experiment(experiment)["scores"]
    return [
        (b, float(results[b]), paper[b], float(results[b]) - paper[b])
        for b in BENCHMARKS
        if b in results and b in paper
    ]
