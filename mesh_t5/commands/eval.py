"""`mesh-t5 eval`: evaluate the checkpoints of a run (or a model dir) on a task or mixture."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gin
import jax

from mesh_t5 import checkpoints, evaluation, layouts, network, validate
from mesh_t5 import train as train_lib
from mesh_t5.commands.train import call, configure, parse_args
from mesh_t5.config import T5Config
from mesh_t5.errors import UserError
from mesh_t5.logging_utils import MetricWriter

REQUIRED_MACROS = ("CHECKPOINT_PATH", "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "BATCH_SIZE")

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
"""


def _checkpoint_dirs(path: Path, steps: str | Sequence[int]) -> list[tuple[int, Path]]:
    """[(step, dir)] to evaluate: the run's checkpoints/<step> dirs, or the path itself."""
    root = path / checkpoints.CHECKPOINTS_DIR
    if not root.is_dir():
        return [(-1, path)]
    available = sorted(int(p.name) for p in root.glob("*") if p.name.isdigit() and (p / "state").is_dir())
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
    """Returns {step: results} for the chosen checkpoints (step -1: an exported model dir)."""
    path = Path(
        validate.input_dir(checkpoint_path, "CHECKPOINT_PATH", "pass a training MODEL_DIR or a model dir")
    ).absolute()
    task_feature_lengths = validate.feature_lengths(task_feature_lengths)
    validate.integer(batch_size, "BATCH_SIZE")
    validate.integer(beam_size, "evaluate_checkpoints.beam_size")
    validate.optional_integer(max_batches, "evaluate_checkpoints.max_batches")
    validate.optional_integer(max_decode_examples, "evaluate_checkpoints.max_decode_examples", minimum=0)
    config_dir = path if (path / checkpoints.CONFIG_FILE).is_file() else path.parent.parent
    if model_config is None and not (config_dir / checkpoints.CONFIG_FILE).is_file():
        raise UserError(
            f"CHECKPOINT_PATH {path} has no {checkpoints.CONFIG_FILE}; pass a training MODEL_DIR, one of its "
            "checkpoints/<step> dirs or a model dir"
        )
    config = model_config or checkpoints.read_config(config_dir)
    eval_dir = output_dir or str((config_dir if config_dir != path.parent.parent else path) / "eval")
    validate.output_dir(eval_dir, "evaluate_checkpoints.output_dir", empty=False)
    tasks = evaluation._tasks_of(mixture_or_task_name)
    validate.feature_lengths_fit(task_feature_lengths, tasks)
    validate.task_vocabularies_fit(tasks, config.vocab_size)
    layout = (
        layouts.make_layout(mesh_shape, layout_rules)
        if (mesh_shape or layout_rules or jax.device_count() > 1)
        else None
    )
    shardings = None if layout is None else layout.tree_shardings(network.param_axes(config))
    abstract = jax.eval_shape(lambda: network.init_params(config, jax.random.key(0)))
    chosen = _checkpoint_dirs(path, steps)
    eval_step_fn = train_lib.make_eval_step(config, layout)
    writer = MetricWriter(eval_dir)
    results: dict[int, dict[str, float]] = {}
    try:
        for step, directory in chosen:
            params, saved_step, _ = checkpoints.load_params(directory, abstract, shardings)
            step = saved_step if step < 0 else step
            results[step] = evaluation.evaluate(
                params, config, mixture_or_task_name=mixture_or_task_name,
                task_feature_lengths=task_feature_lengths, batch_size=batch_size, split=split,
                max_batches=max_batches, decode=decode, max_decode_examples=max_decode_examples,
                beam_size=beam_size, layout=layout, eval_step_fn=eval_step_fn,
            )  # fmt: skip
            writer.write_scalars(step, results[step])
            line = "  ".join(f"{k} {v:.4g}" for k, v in sorted(results[step].items()))
            print(f"step {step}: {line}", file=sys.stderr, flush=True)
    finally:
        writer.close()
    return results


_CONFIGURABLE: list[Any] = []


def main(argv: Sequence[str]) -> int:
    """Runs `mesh-t5 eval`; returns the exit status."""
    try:
        args, bindings = parse_args("mesh-t5 eval", HELP, argv)
    except SystemExit as e:
        return int(e.code or 0)
    if not _CONFIGURABLE:
        with gin.unlock_config():  # an earlier command in this process may have locked it
            _CONFIGURABLE.append(gin.external_configurable(evaluate_checkpoints, "evaluate_checkpoints"))
    configure(args, bindings, REQUIRED_MACROS)
    output = call(_CONFIGURABLE[0])
    return 0 if output else 1
