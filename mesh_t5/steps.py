"""Train and eval steps: pure functions of (state, batch), jitted in one place with explicit shardings.

The training state is a plain dict: {"step": int32 [], "params": tree, "opt_state": optax state}.
The learning rate is a function of `state["step"]`; dropout keys are folded from (seed, step,
microbatch), so a resumed run draws exactly the dropout masks an uninterrupted one would.
The loop that feeds these steps, saves and evaluates is in train.py.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mesh_t5 import finetuning, layouts, losses, network, optim
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


def state_axes(config: T5Config, optimizer: optax.GradientTransformation) -> State:
    """Returns the state's tree with a tuple of logical axis names per leaf (the step: replicated)."""
    abstract = abstract_state(config, optimizer)
    axes = network.param_axes(config)
    opt_axes = layouts.optimizer_state_axes(abstract["opt_state"], abstract["params"], axes)
    return {"step": (), "params": axes, "opt_state": opt_axes}


def state_shardings(
    config: T5Config, optimizer: optax.GradientTransformation, layout: layouts.Layout | None
) -> State | None:
    """Returns NamedShardings for every state leaf from the layout rules (None: single device)."""
    return None if layout is None else layout.tree_shardings(state_axes(config, optimizer))


def init_state(
    config: T5Config,
    optimizer: optax.GradientTransformation,
    rng: jax.Array,
    layout: layouts.Layout | None = None,
) -> State:
    """Returns a fresh state at step 0, born sharded by `layout` (never whole on one device)."""
    axes = None if layout is None else state_axes(config, optimizer)
    return layouts.init_sharded(functools.partial(_init_state, config, optimizer), axes, layout, rng)


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
