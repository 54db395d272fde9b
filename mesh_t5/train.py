"""Train and eval steps (pure, jitted in one place with explicit shardings) and the training loop.

The training state is a plain dict: {"step": int32 [], "params": tree, "opt_state": optax state}.
The learning rate is a function of `state["step"]`; dropout keys are folded from (seed, step,
microbatch), so a resumed run draws exactly the dropout masks an uninterrupted one would.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mesh_t5 import checkpoints, evaluation, finetuning, layouts, losses, network, optim, stopping, validate
from mesh_t5.config import T5Config
from mesh_t5.errors import UserError

State = dict[str, Any]
Batch = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """What the train step does besides the forward pass (static: changing it recompiles).

    loss_normalizer: "tokens" divides the summed token loss by the number of target tokens
    in the (whole) batch; a number divides it by that constant instead (T5/Mesh-TF
    fine-tuning used the pre-training batch's token count, e.g. 2048 * 114 = 233472).
    skip_nonfinite: a step whose loss, gradients or resulting state are not all finite leaves
    params and optimizer state as they were (the step counter still advances); either way the
    step's metrics say so in "nonfinite" (1.0) so the loop can stop or count it.
    """

    learning_rate: Callable[[jax.Array], jax.Array] = dataclasses.field(
        default_factory=optim.constant_schedule
    )
    num_microbatches: int = 1
    loss_normalizer: str | float = "tokens"
    z_loss: float = 1e-4
    label_smoothing: float = 0.0
    finetune_method: str = "all"
    unfreeze_every: int | None = None
    finetune_start_step: int = 0
    seed: int = 0
    skip_nonfinite: bool = False


def check_settings(settings: StepSettings, config: T5Config, batch_size: int) -> None:
    """Raises a one-line UserError for settings that cannot work with this config and batch."""
    if settings.num_microbatches < 1 or batch_size % settings.num_microbatches:
        raise UserError(
            f"num_microbatches={settings.num_microbatches} must be >= 1 and divide batch_size={batch_size}"
        )
    normalizer = settings.loss_normalizer
    if isinstance(normalizer, str) and normalizer != "tokens":
        raise UserError(f"loss_normalizer={normalizer!r} is unknown; use 'tokens' or a positive number")
    if not isinstance(normalizer, str) and not float(normalizer) > 0:
        raise UserError(f"loss_normalizer={normalizer} must be 'tokens' or a positive number")
    finetuning.check_method(settings.finetune_method, config, settings.unfreeze_every)


# ------------------------------------------------------------------------------------- state


def _init_state(config: T5Config, optimizer: optax.GradientTransformation, rng: jax.Array) -> State:
    params = network.init_params(config, rng)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params)}


def abstract_state(config: T5Config, optimizer: optax.GradientTransformation) -> State:
    """Returns the state's tree of ShapeDtypeStructs (nothing allocated)."""
    return jax.eval_shape(functools.partial(_init_state, config, optimizer), jax.random.key(0))


def state_shardings(
    config: T5Config, optimizer: optax.GradientTransformation, layout: layouts.Layout | None
) -> State | None:
    """Returns NamedShardings for every state leaf from the layout rules (None: single device)."""
    if layout is None:
        return None
    abstract = abstract_state(config, optimizer)
    axes = network.param_axes(config)
    return {
        "step": layout.replicated,
        "params": layout.tree_shardings(axes),
        "opt_state": layouts.optimizer_state_shardings(
            layout, abstract["opt_state"], abstract["params"], axes
        ),
    }


def init_state(
    config: T5Config,
    optimizer: optax.GradientTransformation,
    rng: jax.Array,
    layout: layouts.Layout | None = None,
) -> State:
    """Returns a fresh state at step 0, born sharded by `layout` (never whole on one device)."""
    init = functools.partial(_init_state, config, optimizer)
    if layout is None:
        return jax.jit(init)(rng)
    return jax.jit(init, out_shardings=state_shardings(config, optimizer, layout))(rng)


def init_opt_state(
    params: Any, optimizer: optax.GradientTransformation, shardings: State | None = None
) -> Any:
    """Returns a fresh optimizer state for `params` (sharded like `shardings["opt_state"]`)."""
    out = None if shardings is None else shardings["opt_state"]
    return jax.jit(optimizer.init, out_shardings=out)(params)


# ------------------------------------------------------------------------------------- steps


def loss_and_stats(
    params: Any,
    batch: Batch,
    config: T5Config,
    *,
    z_loss: float = 0.0,
    label_smoothing: float = 0.0,
    dropout_rng: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns (summed token loss incl. z-loss, {"z_loss", "weight_sum", "correct"}), all float32."""

    logits = network.forward(params, batch, config, dropout_rng=dropout_rng)  # [B, T, V] float32
    targets = batch["decoder_target_tokens"]  # [B, T]
    weights = batch["decoder_loss_weights"].astype(jnp.float32)  # [B, T]
    loss_sum, aux = losses.cross_entropy(
        logits.astype(jnp.float32), targets, weights, z_loss=z_loss, label_smoothing=label_smoothing
    )
    stats = {
        "z_loss": jnp.asarray(aux["z_loss"], jnp.float32),
        "weight_sum": jnp.asarray(aux["weight_sum"], jnp.float32),
        "correct": jnp.asarray(aux["correct"], jnp.float32),
    }
    return loss_sum.astype(jnp.float32), stats


def all_finite(tree: Any) -> jax.Array:
    """Returns a bool []: every element of every floating-point leaf of `tree` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _microbatches(batch: Batch, k: int) -> dict[str, jax.Array]:
    # [B, ...] -> [k, B/k, ...] taking every k-th row, so each device's contiguous rows of the
    # batch stay on that device (no resharding when the batch axis is split).
    return {
        name: jnp.swapaxes(x.reshape((x.shape[0] // k, k, *x.shape[1:])), 0, 1) for name, x in batch.items()
    }


def train_step(
    state: State,
    batch: Batch,
    *,
    config: T5Config,
    optimizer: optax.GradientTransformation,
    settings: StepSettings,
) -> tuple[State, dict[str, jax.Array]]:
    """Returns (new state, metrics) after one optimizer update on `batch` (pure; jit it)."""
    params, step = state["params"], state["step"]
    weights = batch["decoder_loss_weights"].astype(jnp.float32)  # [B, T]
    if settings.loss_normalizer == "tokens":
        denominator = jnp.maximum(jnp.sum(weights), 1.0)  # whole batch, so microbatching is exact
    else:
        denominator = jnp.float32(settings.loss_normalizer)
    use_dropout = config.dropout_rate > 0
    step_key = jax.random.fold_in(jax.random.key(settings.seed), step)

    def grads_of(microbatch: Batch, index: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
        rng = jax.random.fold_in(step_key, index) if use_dropout else None

        def objective(p: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
            loss_sum, stats = loss_and_stats(
                p, microbatch, config, z_loss=settings.z_loss, label_smoothing=settings.label_smoothing,
                dropout_rng=rng,
            )  # fmt: skip
            return loss_sum / denominator, {**stats, "loss_sum": loss_sum}

        (_, stats), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return grads, stats

    k = settings.num_microbatches
    if k == 1:
        grads, stats = grads_of(batch, jnp.int32(0))
    else:

        def accumulate(carry: Any, xs: Any) -> tuple[Any, None]:
            grads, stats = grads_of(*xs)
            return jax.tree.map(jnp.add, carry, (grads, stats)), None

        zeros = jax.tree.map(
            jnp.zeros_like,
            jax.eval_shape(grads_of, jax.tree.map(lambda x: x[0], _microbatches(batch, k)), jnp.int32(0)),
        )
        (grads, stats), _ = jax.lax.scan(
            accumulate, zeros, (_microbatches(batch, k), jnp.arange(k, dtype=jnp.int32))
        )

    mask = finetuning.trainable_mask(
        params, config, settings.finetune_method, step=step,
        start_step=settings.finetune_start_step, unfreeze_every=settings.unfreeze_every,
    )  # fmt: skip
    grads = finetuning.mask_gradients(grads, mask)
    updates, opt_state = optimizer.update(grads, state["opt_state"], params)
    learning_rate = settings.learning_rate(step)  # []
    updates = jax.tree.map(lambda u: (learning_rate * u).astype(u.dtype), updates)
    new_params = finetuning.keep_frozen(optax.apply_updates(params, updates), params, mask)
    # Checked on device, exactly (every element, not a norm that could overflow), so the host never
    # waits for a step just to learn it was fine; the loop reads "nonfinite" when it reads metrics.
    finite = all_finite((stats["loss_sum"], grads, new_params, opt_state))  # bool []
    if settings.skip_nonfinite:
        new_params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old),
            (new_params, opt_state),
            (params, state["opt_state"]),
        )
    metrics = {
        "loss": stats["loss_sum"] / denominator,
        "z_loss": stats["z_loss"] / denominator,
        "accuracy": stats["correct"] / jnp.maximum(stats["weight_sum"], 1.0),
        "tokens": stats["weight_sum"],
        "learning_rate": learning_rate,
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(new_params),
        "nonfinite": 1.0 - finite.astype(jnp.float32),
    }
    return {"step": step + 1, "params": new_params, "opt_state": opt_state}, metrics


def eval_step(params: Any, batch: Batch, *, config: T5Config) -> dict[str, jax.Array]:
    """Returns summed {"loss_sum", "weight_sum", "correct"} of a batch (no dropout, no z-loss)."""
    loss_sum, stats = loss_and_stats(params, batch, config)
    return {"loss_sum": loss_sum, "weight_sum": stats["weight_sum"], "correct": stats["correct"]}


def _batch_sharding(layout: layouts.Layout | None) -> Any:
    return None if layout is None else layout.sharding(layouts.feature_axes(2))


def make_train_step(
    config: T5Config,
    optimizer: optax.GradientTransformation,
    settings: StepSettings,
    layout: layouts.Layout | None = None,
) -> Callable[[State, Batch], tuple[State, dict[str, jax.Array]]]:
    """Returns the jitted train step: explicit in/out shardings from the layout, the state donated.

    Batches are dicts of [B, L] arrays (global arrays sharded on `batch` when a layout is given:
    see layouts.host_batch_to_global). The layout is in force while tracing, so the network's
    `layouts.constrain` calls lay activations out by it.
    """
    key = (
        config,
        optimizer,
        settings,
        None if layout is None else (layout.mesh, tuple(sorted(layout.rules.items()))),
    )
    if key not in _STEP_CACHE:
        _STEP_CACHE[key] = _jit_train_step(config, optimizer, settings, layout)
    return _STEP_CACHE[key]


# Compiled steps by (config, optimizer, settings, layout): a resumed run or another evaluation in
# the same process reuses the compilation.
_STEP_CACHE: dict[Any, Any] = {}


def _jit_train_step(
    config: T5Config,
    optimizer: optax.GradientTransformation,
    settings: StepSettings,
    layout: layouts.Layout | None,
) -> Callable[[State, Batch], tuple[State, dict[str, jax.Array]]]:
    step_fn = functools.partial(train_step, config=config, optimizer=optimizer, settings=settings)

    def traced(state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
        with layouts.use_layout(layout):
            return step_fn(state, batch)

    if layout is None:
        return jax.jit(traced, donate_argnums=(0,))
    shardings = state_shardings(config, optimizer, layout)
    return jax.jit(
        traced,
        in_shardings=(shardings, _batch_sharding(layout)),
        out_shardings=(shardings, layout.replicated),
        donate_argnums=(0,),
    )


def make_eval_step(
    config: T5Config, layout: layouts.Layout | None = None
) -> Callable[[Any, Batch], dict[str, jax.Array]]:
    """Returns the jitted eval step (parameters sharded by the layout rules)."""

    def traced(params: Any, batch: Batch) -> dict[str, jax.Array]:
        with layouts.use_layout(layout):
            return eval_step(params, batch, config=config)

    if layout is None:
        return jax.jit(traced)
    params_sharding = layout.tree_shardings(network.param_axes(config))
    return jax.jit(
        traced, in_shardings=(params_sharding, _batch_sharding(layout)), out_shardings=layout.replicated
    )


def to_device(batch: Mapping[str, np.ndarray], layout: layouts.Layout | None) -> dict[str, jax.Array]:
    """Moves a host numpy batch to device(s): global arrays sharded on `batch` under a layout."""
    batch = {k: np.asarray(v) for k, v in batch.items() if np.asarray(v).ndim == 2}
    if layout is None:
        return {k: jnp.asarray(v) for k, v in batch.items()}
    return layouts.host_batch_to_global(batch, layout)


def pad_batch(batch: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Pads a short final batch with all-zero rows (zero loss weight) up to batch_size."""
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        if value.ndim >= 1 and value.shape[0] < batch_size:
            pad = np.zeros((batch_size - value.shape[0], *value.shape[1:]), value.dtype)
            value = np.concatenate([value, pad])
        out[name] = value
    return out


# ------------------------------------------------------------------------------ evaluation


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the final state and the metrics it logged."""

    step: int
    state: State
    history: list[tuple[int, dict[str, float]]]
    eval_history: list[tuple[int, dict[str, float]]]


def _existing_steps(model_dir: str) -> list[int]:
    from pathlib import Path

    root = Path(model_dir) / "checkpoints"
    return sorted(int(p.name) for p in root.glob("*") if p.name.isdigit() and p.is_dir())


def _vocab_path(name: str, explicit: str | None) -> str | None:
    if explicit:
        return explicit
    try:
        vocabulary = evaluation._tasks_of(name)[0].output_features["targets"].vocabulary
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
    check_settings(
        StepSettings(
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
    layout = (
        layouts.make_layout(mesh_shape, layout_rules)
        if (mesh_shape or layout_rules or jax.device_count() > 1)
        else None
    )
    if layout is not None:
        layouts.validate(layout, model_config, batch_size)
    shard_index, num_shards = layouts.process_batch_shard(layout) if layout else (0, 1)
    shardings = state_shardings(model_config, optimizer, layout)
    abstract = abstract_state(model_config, optimizer)

    # The data: its vocabulary must fit the model, and the split must yield a batch (an empty source is
    # refused here, not after MODEL_DIR is made). Peeking rewinds: the pipeline's state is exact.
    tasks = evaluation._tasks_of(mixture_or_task_name)
    validate.feature_lengths_fit(task_feature_lengths, tasks)
    validate.task_vocabularies_fit(tasks, model_config.vocab_size)
    dataset = evaluation._dataset(
        mixture_or_task_name, task_feature_lengths, "train", batch_size // num_shards,
        shuffle=shuffle, seed=seed, shard_index=shard_index, num_shards=num_shards,
        feature_converter=feature_converter, pack=pack, num_epochs=None,
    )  # fmt: skip
    check_yields_a_batch(dataset, mixture_or_task_name)

    # 1. Decide where the state comes from and check it fits, before writing anything.
    steps = _existing_steps(model_dir)
    meta: dict[str, Any] = {}
    store = None
    if restore_mode == "specific" and restore_step not in steps:
        raise checkpoints.CheckpointError(
            f"restore_step={restore_step} is not a checkpoint in {model_dir}; available steps: {steps or 'none'}"
        )
    resume_step = restore_step if restore_mode == "specific" else (steps[-1] if steps else None)
    if resume_step is not None:
        if resume_step < steps[-1]:
            raise checkpoints.CheckpointError(
                f"restore_step={resume_step} is older than the run's latest checkpoint {steps[-1]}; resuming it "
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
        params, init_step, state_dir = checkpoints.load_params(
            init_checkpoint, abstract["params"], params_sh,
            new_adapters=lambda: init_state(model_config, optimizer, jax.random.key(seed), layout)["params"],
        )  # fmt: skip
        if train_steps < init_step:
            raise checkpoints.CheckpointError(
                f"TRAIN_STEPS={train_steps} is below the step {init_step} of init checkpoint {init_checkpoint}; "
                f"TRAIN_STEPS counts the pre-training steps too: set it above {init_step}"
            )
        if init_optimizer_state:
            opt_sh = None if shardings is None else shardings["opt_state"]
            opt_state = checkpoints.load_state_subtree(state_dir, "opt_state", abstract["opt_state"], opt_sh)
        else:
            opt_state = init_opt_state(params, optimizer, shardings)
        state = {"step": jnp.asarray(init_step, jnp.int32), "params": params, "opt_state": opt_state}
        meta = {"finetune_start_step": init_step}
    else:
        state = init_state(model_config, optimizer, jax.random.key(seed), layout)
    start_step = int(jax.device_get(state["step"]))
    settings = StepSettings(
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
    step_fn = make_train_step(model_config, optimizer, settings, layout)
    eval_step_fn = make_eval_step(model_config, layout) if eval_period else None
    writer = MetricWriter(f"{model_dir}/train" if tensorboard else None)
    eval_writer = MetricWriter(f"{model_dir}/eval" if tensorboard and eval_period else None)
    bar = Progress(train_steps, start_step, every=log_period, enabled=progress and primary)
    history: list[tuple[int, dict[str, float]]] = []
    eval_history: list[tuple[int, dict[str, float]]] = []
    run_meta = {"finetune_start_step": settings.finetune_start_step, "seed": seed}
    watch = stopping.NonFiniteWatch(on_nonfinite, skipped=int(meta.get("skipped_steps", 0)))
    agreement = stopping.StopAgreement.for_layout(layout, batch_size // num_shards, to_device)

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
                    state, metrics = step_fn(state, to_device(host_batch, layout))
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
