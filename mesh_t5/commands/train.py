"""`mesh-t5 train`: pre-train or fine-tune a model, configured by gin."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import gin

from mesh_t5 import gin_utils, optim, validate
from mesh_t5 import train as train_lib
from mesh_t5.errors import UserError

REQUIRED_MACROS = ("MODEL_DIR", "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS", "BATCH_SIZE")

HELP = """\
Pre-train or fine-tune a T5 model. Compose a model file and a run file with --gin_file
(searched in --gin_search_paths, then the shipped gin/ directory) and set the run's macros
with --gin.NAME=VALUE:

  mesh-t5 train --gin_file=models/t5_small.gin --gin_file=runs/pretrain.gin \\
    --gin.MODEL_DIR=/tmp/run --gin.MIXTURE_OR_TASK_NAME=my_task \\
    --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 114}" \\
    --gin.TRAIN_STEPS=524288 --gin.BATCH_SIZE=128

required macros: MODEL_DIR (checkpoints, config.json, TensorBoard logs), MIXTURE_OR_TASK_NAME
  (a registered task or mixture: multi-task training is a mixture), TASK_FEATURE_LENGTHS,
  TRAIN_STEPS (total steps: a resumed or fine-tuning run counts the steps already done),
  BATCH_SIZE (examples per step, global).

run files: runs/pretrain.gin (Adafactor, rsqrt schedule 1/sqrt(max(step, 10^4))),
  runs/finetune.gin (constant 1e-3; set INIT_CHECKPOINT to a pre-trained MODEL_DIR).

useful bindings (all of mesh_t5.train.train's keyword arguments are configurable as train.*):
  train.checkpoint_period, train.keep_checkpoints, train.restore_mode ('latest'|'specific'),
  train.restore_step, train.num_microbatches, train.loss_normalizer ('tokens' or a number),
  train.eval_period, train.eval_decode_examples, train.finetune_method
  ('all'|'adapters'|'gradual_unfreezing'), train.unfreeze_every, train.mesh_shape
  ('data:2,model:4'), train.layout_rules, optimizer.clip_grad_norm, constant_schedule.value,
  rsqrt_schedule.warmup_steps.

A run restarts from the latest checkpoint in MODEL_DIR, data position included.

the paper's experiments: --experiment=NAME [--stage=pretrain|finetune|train] puts that row's gin
  files first (`mesh-t5 experiments` lists the rows and their stages); your --gin_file and --gin.*
  flags come after it and win, so they change one factor.
"""

# The gin-wrapped library functions (calling the wrapper applies the bindings).
CONFIGURABLES: dict[str, Any] = {}


def register_configurables() -> None:
    """Makes the training library configurable by gin (once per process)."""
    if CONFIGURABLES:
        return
    CONFIGURABLES["train"] = gin.external_configurable(train_lib.train, "train")
    gin.external_configurable(optim.rsqrt_schedule, "rsqrt_schedule")
    gin.external_configurable(optim.constant_schedule, "constant_schedule")
    gin.external_configurable(optim.linear_warmup_decay_schedule, "linear_warmup_decay_schedule")
    gin.external_configurable(optim.make_optimizer, "optimizer")


def experiment_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Replaces --experiment=NAME [--stage=S] in argv by the row's --gin_file flags (put first, so the
    user's files and bindings override them); returns (argv, macros the stage needs from the user)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--experiment")
    parser.add_argument("--stage")
    args, rest = parser.parse_known_args(list(argv))
    if args.experiment is None:
        if args.stage is not None:
            raise UserError("--stage needs --experiment=NAME (`mesh-t5 experiments` lists them)")
        return rest, []
    from mesh_t5 import experiments

    files, required = experiments.stage_files(args.experiment, args.stage)
    return [f"--gin_file={f}" for f in files] + rest, required


def parse_args(prog: str, help_text: str, argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Returns (argparse namespace with gin_file/gin_search_paths, gin bindings)."""
    rest, bindings = gin_utils.split_gin_bindings(argv)
    parser = validate.ArgumentParser(
        prog=prog, description=help_text, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    gin_utils.add_gin_flags(parser)
    args, unknown = parser.parse_known_args(rest)
    if unknown:
        raise UserError(
            f"unknown flag {unknown[0]!r}; use --gin_file, --gin_search_paths or --gin.NAME=VALUE"
        )
    if not args.gin_file:
        raise UserError(
            "no --gin_file given; pass a model and a run file, e.g. "
            "--gin_file=models/tiny.gin --gin_file=runs/pretrain.gin"
        )
    return args, bindings


def configure(args: argparse.Namespace, bindings: Sequence[str], required: Sequence[str]) -> None:
    """Parses the gin files and bindings; reports a missing required macro by name."""
    gin.clear_config()  # also unlocks a config an earlier command in this process finalized
    register_configurables()
    # Check the required macros before finalizing: gin's own finalize error names "NAME/gin.macro".
    gin_utils.parse_gin(args.gin_file, bindings, args.gin_search_paths, finalize=False)
    for name in required:
        gin_utils.query_macro(name)
    try:
        gin.finalize()
    except Exception as e:
        raise UserError(
            f"gin: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        ) from None


def call(configurable: Any) -> Any:
    """Calls a gin-wrapped function; a UserError keeps only its first line (gin appends "In call to...")."""
    try:
        return configurable()
    except UserError as e:
        lines = str(e).strip().splitlines()
        raise UserError(lines[0] if lines else type(e).__name__) from None


def main(argv: Sequence[str]) -> int:
    """Runs `mesh-t5 train`; returns the exit status."""
    argv, experiment_macros = experiment_flags(argv)
    try:
        args, bindings = parse_args("mesh-t5 train", HELP, argv)
    except SystemExit as e:  # --help, or argparse's own usage error
        return int(e.code or 0)
    configure(args, bindings, [*experiment_macros, *REQUIRED_MACROS])
    model_dir = str(gin_utils.query_macro("MODEL_DIR"))
    result = call(CONFIGURABLES["train"])
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "operative_config.gin"), "w") as f:
        f.write(gin.operative_config_str())
    loss = result.history[-1][1]["loss"] if result.history else float("nan")
    print(f"mesh-t5 train: step {result.step}, loss {loss:.4f}, checkpoints in {model_dir}", file=sys.stderr)
    return 0
