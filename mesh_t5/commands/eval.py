"""`mesh-t5 eval`: evaluate the checkpoints of a run (or a model dir, or an ensemble) on a task or
mixture, or score a predictions file without a model."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mesh_t5 import checkpoints, evaluation, gin_utils, layouts, network, validate
from mesh_t5.commands.ensemble import split_checkpoints
from mesh_t5.config import T5Config
from mesh_t5.errors import UserError
from mesh_t5.logging_utils import MetricWriter
from mesh_t5.steps import make_eval_step

REQUIRED_MACROS = ("CHECKPOINT_PATH", "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "BATCH_SIZE")
RESULTS_FILE = "eval_results.jsonl"  # one JSON object per evaluated step, beside the TensorBoard events

HELP = """\
Evaluate checkpoints: the loss on the split, and the task's metrics on decoded predictions
(greedy by default). Results are printed, and written as TensorBoard events to
EVAL_OUTPUT_DIR (default CHECKPOINT_PATH/eval).

  mesh-t5 eval --gin_file=runs/eval.gin --gin.CHECKPOINT_PATH=/tmp/run \\
    --gin.MIXTURE_OR_TASK_NAME=my_task --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 114}" \\
    --gin.BATCH_SIZE=32 [--gin.STEPS="'all'"]

required macros: CHECKPOINT_PATH (a training MODEL_DIR, one of its checkpoints/<step> dirs, or an
  exported model dir), MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS, BATCH_SIZE.
bindings: evaluate_checkpoints.steps ('latest' | 'all' | [step, ...]), .split, .beam_size,
  .max_batches, .max_decode_examples, .mesh_shape, .output_dir, .model_config (default: config.json).
Results also go to EVAL_OUTPUT_DIR/eval_results.jsonl; a mixture with every GLUE (SuperGLUE) metric
  also gets glue_average (super_glue_average), computed as T5's eval_utils does.

Ensemble (the paper's Table 13): --checkpoint=A --checkpoint=B (or CHECKPOINT_PATH="A,B") decodes with
  the mean of the members' per-token log-probabilities; each member's latest checkpoint is used.

Score a predictions file (what `mesh-t5 infer --task=...` writes), no model needed:
  mesh-t5 eval --predictions=preds.jsonl --gin.MIXTURE_OR_TASK_NAME=glue_v002_proportional \\
    [--gin.SPLIT=validation] [--gin.EVAL_OUTPUT_DIR=DIR]
"""


def _checkpoint_dirs(path: Path, steps: str | Sequence[int]) -> list[tuple[int, Path]]:
    """[(step, dir)] to evaluate: the run's checkpoints/<step> dirs, or the path itself."""
    root = path / checkpoints.CHECKPOINTS_DIR
    if not root.is_dir():
        return [(-1, path)]
    available = checkpoints.checkpoint_steps(root)
    if not available:
        raise UserError(f"{path} has no checkpoints yet (checkpoints/ is empty)")
    if steps == "latest":
        chosen = available[-1:]
    elif steps == "all":
        chosen = available
    elif isinstance(steps, str):
        raise UserError(f"steps={steps!r} is unknown; use 'latest', 'all' or a list of steps")
    else:
        steps = [steps] if isinstance(steps, int) else steps
        if not isinstance(steps, Sequence) or not steps:
            raise UserError(f"steps={steps!r} is unknown; use 'latest', 'all' or a list of steps")
        steps = [validate.integer(s, "evaluate_checkpoints.steps", minimum=0) for s in steps]
        missing = sorted(set(steps) - set(available))
        if missing:
            raise UserError(f"steps {missing} are not checkpoints of {path}; available: {available}")
        chosen = sorted(steps)
    return [(s, root / str(s)) for s in chosen]


def evaluate_checkpoints(
    *,
    checkpoint_path: str,
    mixture_or_task_name: str,
    task_feature_lengths: Mapping[str, int],
    batch_size: int,
    steps: str | Sequence[int] = "latest",
    split: str = "validation",
    model_config: T5Config | None = None,
    beam_size: int = 1,
    decode: bool = True,
    max_batches: int | None = None,
    max_decode_examples: int | None = None,
    mesh_shape: str | None = None,
    layout_rules: str | None = None,
    output_dir: str | None = None,
) -> dict[int, dict[str, float]]:
    """Returns {step: results} for the chosen checkpoints (step -1: an exported model dir).

    Several comma-separated (or listed) checkpoint paths are an ensemble: each member's latest
    checkpoint (or the checkpoints/<step> dir given) is loaded and they decode together."""
    members = split_checkpoints(checkpoint_path)
    if not members:
        raise UserError("CHECKPOINT_PATH is empty; pass a model dir (or several, for an ensemble)")
    paths = [
        Path(validate.input_dir(p, "CHECKPOINT_PATH", "pass a training MODEL_DIR or a model dir")).absolute()
        for p in members
    ]
    if len(paths) > 1 and steps != "latest":
        raise UserError(
            f"steps={steps!r} picks checkpoints of one run; an ensemble uses each member's latest checkpoint "
            "(or give checkpoints/<step> dirs as its members)"
        )
    task_feature_lengths = validate.feature_lengths(task_feature_lengths)
    validate.integer(batch_size, "BATCH_SIZE")
    validate.integer(beam_size, "evaluate_checkpoints.beam_size")
    validate.optional_integer(max_batches, "evaluate_checkpoints.max_batches")
    validate.optional_integer(max_decode_examples, "evaluate_checkpoints.max_decode_examples", minimum=0)
    path = paths[0]
    config_dir = _config_dir(path)
    if model_config is None:
        for p in paths:
            if not (_config_dir(p) / checkpoints.CONFIG_FILE).is_file():
                raise UserError(
                    f"CHECKPOINT_PATH {p} has no {checkpoints.CONFIG_FILE}; pass a training MODEL_DIR, one of "
                    "its checkpoints/<step> dirs or a model dir"
                )
    config = model_config or checkpoints.read_config(config_dir)
    for p in paths[1:]:
        if model_config is None and checkpoints.read_config(_config_dir(p)) != config:
            raise UserError(
                f"ensemble member {p} has another model config than {path}; members must share one"
            )
    eval_dir = output_dir or str((config_dir if config_dir != path.parent.parent else path) / "eval")
    validate.output_dir(eval_dir, "evaluate_checkpoints.output_dir", empty=False)
    tasks = evaluation.member_tasks(mixture_or_task_name)
    validate.feature_lengths_fit(task_feature_lengths, tasks)
    validate.task_vocabularies_fit(tasks, config.vocab_size)
    layout = layouts.layout_for(mesh_shape, layout_rules, config, batch_size=batch_size)
    shardings = None if layout is None else layout.tree_shardings(network.param_axes(config))
    abstract = network.param_shapes(config)
    chosen = _checkpoint_dirs(path, steps)
    eval_step_fn = make_eval_step(config, layout)
    others = [
        checkpoints.load_params(_checkpoint_dirs(p, "latest")[-1][1], abstract, shardings)[0]
        for p in paths[1:]
    ]
    writer = MetricWriter(eval_dir)
    results: dict[int, dict[str, float]] = {}
    try:
        for step, directory in chosen:
            params, saved_step, _ = checkpoints.load_params(directory, abstract, shardings)
            step = saved_step if step < 0 else step
            if others:
                params = [params, *others]
            results[step] = evaluation.evaluate(
                params, config, mixture_or_task_name=mixture_or_task_name,
                task_feature_lengths=task_feature_lengths, batch_size=batch_size, split=split,
                max_batches=max_batches, decode=decode, max_decode_examples=max_decode_examples,
                beam_size=beam_size, layout=layout, eval_step_fn=eval_step_fn,
            )  # fmt: skip
            writer.write_scalars(step, results[step])
            write_results(eval_dir, step, results[step])
            report(f"step {step}", results[step])
    finally:
        writer.close()
    return results


def _config_dir(path: Path) -> Path:
    return path if (path / checkpoints.CONFIG_FILE).is_file() else path.parent.parent


def write_results(output_dir: str, step: int, results: Mapping[str, float]) -> None:
    """Appends {"step", **results} as one line to output_dir/eval_results.jsonl."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, RESULTS_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in results.items()}}) + "\n")


def report(label: str, results: Mapping[str, float]) -> None:
    """Prints the results on one line, then the benchmark averages on their own line (stderr)."""
    line = "  ".join(f"{k} {v:.4g}" for k, v in sorted(results.items()))
    print(f"{label}: {line}", file=sys.stderr, flush=True)
    names = {"glue_average": "GLUE average", "super_glue_average": "SuperGLUE average"}
    averages = "  ".join(f"{text} {results[k]:.2f}" for k, text in names.items() if k in results)
    if averages:
        print(f"{label}: {averages}", file=sys.stderr, flush=True)


def evaluate_predictions_file(
    path: str, mixture_or_task_name: str, split: str, output_dir: str | None
) -> dict:
    """Scores a predictions JSONL; prints the results (stderr, and one JSON object on stdout) and, with
    `output_dir`, writes them there as eval_results.jsonl and TensorBoard events (step 0)."""
    from mesh_t5.predictions import score_predictions

    results = score_predictions(path, mixture_or_task_name, split)  # refuses a mismatched file first
    report(f"{os.path.basename(path)} ({split})", results)
    print(json.dumps(results, sort_keys=True), flush=True)
    if output_dir:
        writer = MetricWriter(output_dir)
        try:
            writer.write_scalars(0, results)
        finally:
            writer.close()
        write_results(output_dir, 0, results)
    return results


CONFIGURABLES: dict[str, Any] = {"evaluate_checkpoints": evaluate_checkpoints}


def main(argv: Sequence[str]) -> int:
    """Runs `mesh-t5 eval`; returns the exit status."""
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--predictions", default=None)
    own.add_argument("--checkpoint", action="append", default=None)
    flags, argv = own.parse_known_args(list(argv))
    if flags.predictions is not None and flags.checkpoint:
        raise UserError("give either --predictions=FILE (no model) or --checkpoint=DIR, not both")
    try:
        args, bindings = gin_utils.parse_gin_flags(
            "mesh-t5 eval", HELP, argv, gin_file_required=flags.predictions is None
        )
    except SystemExit as e:  # --help
        return int(e.code or 0)
    if flags.predictions is not None:
        gin_utils.configure(args, bindings, CONFIGURABLES, finalize=False)
        evaluate_predictions_file(
            flags.predictions,
            str(gin_utils.query_macro("MIXTURE_OR_TASK_NAME")),
            str(gin_utils.query_macro("SPLIT", required=False) or "validation"),
            gin_utils.query_macro("EVAL_OUTPUT_DIR", required=False),
        )
        return 0
    if flags.checkpoint:
        bindings = [*bindings, f"CHECKPOINT_PATH = {','.join(flags.checkpoint)!r}"]
    configurables = gin_utils.configure(args, bindings, CONFIGURABLES, required=REQUIRED_MACROS)
    return 0 if gin_utils.call(configurables["evaluate_checkpoints"]) else 1
