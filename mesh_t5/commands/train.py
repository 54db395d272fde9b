"""`mesh-t5 train`: pre-train or fine-tune a model, configured by gin."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import gin

from mesh_t5 import gin_utils, optim
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

# The library functions `train` exposes to gin, by gin name.
CONFIGURABLES: dict[str, Any] = {
    "train": train_lib.train,
    "rsqrt_schedule": optim.rsqrt_schedule,
    "constant_schedule": optim.constant_schedule,
    "linear_warmup_decay_schedule": optim.linear_warmup_decay_schedule,
    "optimizer": optim.make_optimizer,
}


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


def main(argv: Sequence[str]) -> int:
    """Runs `mesh-t5 train`; returns the exit status."""
    argv, experiment_macros = experiment_flags(argv)
    try:
        args, bindings = gin_utils.parse_gin_flags("mesh-t5 train", HELP, argv)
    except SystemExit as e:  # --help, or argparse's own usage error
        return int(e.code or 0)
    configurables = gin_utils.configure(
        args, bindings, CONFIGURABLES, required=[*experiment_macros, *REQUIRED_MACROS]
    )
    model_dir = str(gin_utils.query_macro("MODEL_DIR"))
    result = gin_utils.call(configurables["train"])
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "operative_config.gin"), "w") as f:
        f.write(gin.operative_config_str())
    loss = result.history[-1][1]["loss"] if result.history else float("nan")
    print(f"mesh-t5 train: step {result.step}, loss {loss:.4f}, checkpoints in {model_dir}", file=sys.stderr)
    return 0
