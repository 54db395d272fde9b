"""The training loop: data, checkpoints (resume, init from a pre-trained model), logging, eval.

The steps it runs are the pure functions of steps.py; the state is steps.State.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mesh_t5 import checkpoints, data, evaluation, layouts, optim, steps, stopping, validate
from mesh_t5.config import T5Config
from mesh_t5.errors import UserError


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the final state and the metrics it logged."""

    step: int
    state: steps.State
    history: list[tuple[int, dict[str, float]]]
    eval_history: list[tuple[int, dict[str, float]]]


def _vocab_path(name: str, explicit: str | None) -> str | None:
    if explicit:
        return explicit
    try:
        vocabulary = evaluation.member_tasks(name)[0].output_features["targets"].vocabulary
    except Exception:
        return None
    return getattr(vocabulary, "path", None)


def _host_tokens(batch: Mapping[str, np.ndarray]) -> int:
    names = ("encoder_input_tokens", "decoder_target_tokens")
    return int(sum(np.count_nonzero(np.asarray(batch[n])) for n in names if n in batch))


def check_yields_a_batch(dataset: Any, name: str) -> None:
    """Refuses a train split that yields nothing, leaving the pipeline where it was (resumable state)."""
    fresh = copy.deepcopy(dataset.get_state())  # the packer's state holds its live lists
    try:
        next(dataset)
    except StopIteration:
        raise UserError(f"the train split of {name!r} yields no examples; check its source") from None
    dataset.set_state(fresh)


def _check_arguments(**args: Any) -> dict[str, int]:
    """Refuses (one line each) the arguments of `train` no run can use; returns the feature lengths."""
    validate.integer(args["train_steps"], "TRAIN_STEPS")
    validate.integer(args["batch_size"], "BATCH_SIZE")
    validate.text(args["mixture_or_task_name"], "MIXTURE_OR_TASK_NAME")
    validate.output_dir(args["model_dir"], "MODEL_DIR", empty=False)
    if not isinstance(args["model_config"], T5Config):
        raise UserError(
            f"model_config must be a T5Config (gin: MODEL_CONFIG = @T5Config()); got {args['model_config']!r}"
        )
    for name in ("checkpoint_period", "log_period", "num_microbatches"):
        validate.integer(args[name], f"train.{name}")
    for name in ("eval_period", "seed"):
        validate.integer(args[name], f"train.{name}", minimum=0)
    validate.optional_integer(args["keep_checkpoints"], "train.keep_checkpoints")
    validate.optional_integer(args["eval_batches"], "train.eval_batches")
    validate.optional_integer(args["eval_decode_examples"], "train.eval_decode_examples", minimum=0)
    validate.optional_integer(args["restore_step"], "train.restore_step", minimum=0)
    validate.integer(args["eval_beam_size"], "train.eval_beam_size")
    for name in ("init_optimizer_state", "eval_decode", "pack", "shuffle", "tensorboard", "progress"):
        validate.boolean(args[name], f"train.{name}")
    validate.number(args["z_loss"], "train.z_loss", minimum=0)
    validate.number(args["label_smoothing"], "train.label_smoothing", 0, 1, open_max=True)
    learning_rate = args["learning_rate"]
    if learning_rate is not None and not callable(learning_rate):
        validate.number(learning_rate, "train.learning_rate", minimum=0)
    if args["init_checkpoint"] is not None:
        validate.input_dir(
            args["init_checkpoint"], "INIT_CHECKPOINT", "pass a mesh_t5 MODEL_DIR or checkpoint dir"
        )
    if args["vocab_path"] is not None:
        validate.input_file(args["vocab_path"], "train.vocab_path")
    return validate.feature_lengths(args["task_feature_lengths"])


def train(
    *,
    model_config: T5Config,
    model_dir: str,
    mixture_or_task_name: str,
    task_feature_lengths: Mapping[str, int],
    train_steps: int,
    batch_size: int,
    learning_rate: float | Callable[[jax.Array], jax.Array] | None = None,
    optimizer: optax.GradientTransformation | None = None,
    seed: int = 0,
    num_microbatches: int = 1,
    loss_normalizer: str | float = "tokens",
    z_loss: float = 1e-4,
    label_smoothing: float = 0.0,
    checkpoint_period: int = 1000,
    keep_checkpoints: int | None = None,
    restore_mode: str = "latest",
    restore_step: int | None = None,
    init_checkpoint: str | None = None,
    init_optimizer_state: bool = False,
    finetune_method: str = "all",
    unfreeze_every: int | None = None,
    eval_period: int = 0,
    eval_split: str = "validation",
    eval_batches: int | None = None,
    eval_decode: bool = True,
    eval_decode_examples: int | None = None,
    eval_beam_size: int = 1,
    mesh_shape: str | None = None,
    layout_rules: str | None = None,
    pack: bool = True,
    shuffle: bool = True,
    feature_converter: Any = None,
    log_period: int = 100,
    tensorboard: bool = True,
    progress: bool = True,
    vocab_path: str | None = None,
    on_nonfinite: str = "stop",
) -> TrainResult:
    """Trains to `train_steps` (total, counting steps already in MODEL_DIR); returns the result.

    Resumes from the latest checkpoint in model_dir (restore_mode="latest") or a given one
    ("specific" + restore_step); else initialises from `init_checkpoint` (fine-tuning: params,
    and the optimizer state if init_optimizer_state) keeping its step, else from scratch.
    Everything that can be refused is refused before anything is written. An unreadable latest
    checkpoint is renamed aside and the newest readable one resumed (one warning line).

    Stops early, after saving, on SIGTERM/SIGINT (raises stopping.Interrupted; all processes at the
    same step). on_nonfinite="stop" ends the run at the first step with a non-finite loss, gradient
    or state without saving it (stopping.NonFiniteError); "skip" drops those updates and counts them
    ("skipped_steps" in the logs). No checkpoint of a non-finite state is ever written.
    """
    task_feature_lengths = _check_arguments(**locals())
    steps.check_settings(
        steps.StepSettings(
            num_microbatches=num_microbatches, loss_normalizer=loss_normalizer,
            finetune_method=finetune_method, unfreeze_every=unfreeze_every,
        ),
        model_config,
        batch_size,
    )  # fmt: skip
    from mesh_t5.logging_utils import MetricWriter, Progress, compile_timer

    primary = jax.process_index() == 0
    bar: Progress | None = None

    def say(text: str) -> None:
        """One line on stderr (through the progress bar once it runs), from the first process only."""
        if bar is not None:
            bar.message(text)
        elif progress and primary:
            print(text, file=sys.stderr, flush=True)

    stopping.check_policy(on_nonfinite)
    if restore_mode not in ("latest", "specific"):
        raise UserError(
            f"restore_mode={restore_mode!r} is unknown; use 'latest' or 'specific' (with restore_step)"
        )
    feature_converter = feature_converter or evaluation.default_feature_converter(model_config)
    schedule = optim.as_schedule(optim.rsqrt_schedule() if learning_rate is None else learning_rate)
    optimizer = optimizer or optim.make_optimizer()
    layout = layouts.layout_for(mesh_shape, layout_rules, model_config, batch_size=batch_size)
    shard_index, num_shards = layouts.process_batch_shard(layout) if layout else (0, 1)
    shardings = steps.state_shardings(model_config, optimizer, layout)
    abstract = steps.abstract_state(model_config, optimizer)

    # The data: its vocabulary must fit the model, and the split must yield a batch (an empty source is
    # refused here, not after MODEL_DIR is made). Peeking rewinds: the pipeline's state is exact.
    tasks = evaluation.member_tasks(mixture_or_task_name)
    validate.feature_lengths_fit(task_feature_lengths, tasks)
    validate.task_vocabularies_fit(tasks, model_config.vocab_size)
    dataset = data.get_dataset(
        mixture_or_task_name, task_feature_lengths, "train", batch_size // num_shards,
        shuffle=shuffle, seed=seed, shard_index=shard_index, num_shards=num_shards,
        feature_converter=feature_converter, pack=pack, num_epochs=None,
    )  # fmt: skip
    check_yields_a_batch(dataset, mixture_or_task_name)

    # 1. Decide where the state comes from and check it fits, before writing anything.
    saved = checkpoints.checkpoint_steps(Path(model_dir) / checkpoints.CHECKPOINTS_DIR, complete=False)
    meta: dict[str, Any] = {}
    store = None
    if restore_mode == "specific" and restore_step not in saved:
        raise checkpoints.CheckpointError(
            f"restore_step={restore_step} is not a checkpoint in {model_dir}; available steps: {saved or 'none'}"
        )
    resume_step = restore_step if restore_mode == "specific" else (saved[-1] if saved else None)
    if resume_step is not None:
        if resume_step < saved[-1]:
            raise checkpoints.CheckpointError(
                f"restore_step={resume_step} is older than the run's latest checkpoint {saved[-1]}; resuming it "
                f"would overwrite later steps: copy checkpoints/{resume_step} to a new MODEL_DIR instead"
            )
        if train_steps < resume_step:
            raise checkpoints.CheckpointError(
                f"TRAIN_STEPS={train_steps} is below the checkpoint's step {resume_step} in {model_dir}; "
                f"TRAIN_STEPS counts all steps: set it above {resume_step}"
            )
        store = checkpoints.CheckpointStore(model_dir, keep=keep_checkpoints)
        state, meta, resume_step = checkpoints.resume(
            store, restore_mode, resume_step, abstract, shardings, say
        )
    elif init_checkpoint:
        params_sh = None if shardings is None else shardings["params"]

        def fresh() -> Any:  # what a pre-trained checkpoint lacks (new adapter layers) starts from here
            return steps.init_state(model_config, optimizer, jax.random.key(seed), layout)["params"]

        params, init_step, state_dir = checkpoints.load_params(
            init_checkpoint, abstract["params"], params_sh, new_adapters=fresh
        )
        if train_steps < init_step:
            raise checkpoints.CheckpointError(
                f"TRAIN_STEPS={train_steps} is below the step {init_step} of init checkpoint {init_checkpoint}; "
                f"TRAIN_STEPS counts the pre-training steps too: set it above {init_step}"
            )
        if init_optimizer_state:
            opt_sh = None if shardings is None else shardings["opt_state"]
            opt_state = checkpoints.load_state_subtree(state_dir, "opt_state", abstract["opt_state"], opt_sh)
        else:
            opt_state = steps.init_opt_state(params, optimizer, shardings)
        state = {"step": jnp.asarray(init_step, jnp.int32), "params": params, "opt_state": opt_state}
        meta = {"finetune_start_step": init_step}
    else:
        state = steps.init_state(model_config, optimizer, jax.random.key(seed), layout)
    start_step = int(jax.device_get(state["step"]))
    settings = steps.StepSettings(
        learning_rate=schedule, num_microbatches=num_microbatches, loss_normalizer=loss_normalizer,
        z_loss=z_loss, label_smoothing=label_smoothing, finetune_method=finetune_method,
        unfreeze_every=unfreeze_every, finetune_start_step=int(meta.get("finetune_start_step", 0)), seed=seed,
        skip_nonfinite=on_nonfinite == "skip",
    )  # fmt: skip
    if "data" in meta:
        dataset.set_state(meta["data"])

    # 2. Checks passed: write the run's config and vocabulary, then train.
    checkpoints.write_config(model_dir, model_config, _vocab_path(mixture_or_task_name, vocab_path))
    store = store or checkpoints.CheckpointStore(model_dir, keep=keep_checkpoints)
    for name in store.remove_partial_saves():
        say(f"removed {name}, left by an interrupted or failed save")
    step_fn = steps.make_train_step(model_config, optimizer, settings, layout)
    eval_step_fn = steps.make_eval_step(model_config, layout) if eval_period else None
    writer = MetricWriter(f"{model_dir}/train" if tensorboard else None)
    eval_writer = MetricWriter(f"{model_dir}/eval" if tensorboard and eval_period else None)
    bar = Progress(train_steps, start_step, every=log_period, enabled=progress and primary)
    history: list[tuple[int, dict[str, float]]] = []
    eval_history: list[tuple[int, dict[str, float]]] = []
    run_meta = {"finetune_start_step": settings.finetune_start_step, "seed": seed}
    watch = stopping.NonFiniteWatch(on_nonfinite, skipped=int(meta.get("skipped_steps", 0)))
    agreement = stopping.StopAgreement.for_layout(layout, batch_size // num_shards, steps.to_device)

    def run_eval(step: int) -> None:
        results = evaluation.evaluate(
            state["params"], model_config, mixture_or_task_name=mixture_or_task_name,
            task_feature_lengths=task_feature_lengths, batch_size=batch_size, split=eval_split,
            max_batches=eval_batches, decode=eval_decode, max_decode_examples=eval_decode_examples,
            beam_size=eval_beam_size, layout=layout, eval_step_fn=eval_step_fn, feature_converter=feature_converter,
        )  # fmt: skip
        eval_history.append((step, results))
        eval_writer.write_scalars(step, results)
        bar.message(f"eval step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in sorted(results.items())))

    def check_finite() -> None:
        watch.check(say, store.latest_step(), store.directory)

    def save(step: int) -> None:
        check_finite()  # a non-finite state is never written
        seconds = store.save(
            step, state, {**run_meta, "skipped_steps": watch.skipped, "data": dataset.get_state()}
        )
        if seconds:
            say(f"saved checkpoint {step} in {seconds:.1f}s")

    step, metrics, tokens, t0 = start_step, None, 0, time.perf_counter()
    signals = stopping.SignalStop()
    try:
        with signals:
            stop_signal = 0
            while step < train_steps and not stop_signal:
                try:
                    host_batch = next(dataset)
                except StopIteration:
                    bar.message(f"the training data ran out at step {step}")
                    break
                tokens += _host_tokens(host_batch)
                first = step == start_step
                with compile_timer(enabled=first) as compile_seconds:
                    state, metrics = step_fn(state, steps.to_device(host_batch, layout))
                step += 1
                if first and compile_seconds[0] > 0:
                    say(f"compiled the train step in {compile_seconds[0]:.1f}s")
                watch.add(step, metrics)
                stop_signal = agreement.agreed(signals.signum)
                logged = step % log_period == 0 or step == train_steps or first
                if logged or bar.due(step) or stop_signal:
                    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    if (
                        logged or stop_signal
                    ):  # not on the time-based lines: every process checks at the same steps
                        check_finite()
                    values.pop("nonfinite")
                    values["skipped_steps"] = float(watch.skipped)
                    elapsed = max(time.perf_counter() - t0, 1e-9)
                    # The first window of a process includes compiling: no rate from it.
                    speed = None if first else tokens / elapsed
                    if speed is not None:
                        values["tokens_per_second"] = speed
                    tokens, t0 = 0, time.perf_counter()
                    if logged:
                        history.append((step, values))
                        writer.write_scalars(step, values)
                    bar.update(step, values["loss"], speed)
                if step % checkpoint_period == 0 or step == train_steps:
                    save(step)
                if eval_period and (step % eval_period == 0 or step == train_steps) and not stop_signal:
                    run_eval(step)
            if step < train_steps or step == start_step:
                save(step)
        if stop_signal:
            raise stopping.Interrupted.after_save(stop_signal, step, store.directory)
    finally:
        store.close()
        bar.close()
        writer.close()
        eval_writer.close()
    return TrainResult(step=step, state=state, history=history, eval_history=eval_history)
