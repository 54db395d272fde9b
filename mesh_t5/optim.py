"""The optimizer (optax Adafactor with T5's settings) and learning-rate schedules.

Schedules are functions of the global training step (`state["step"]`), not of the
optimizer's own counter, so a fine-tuning run that restores the pre-training step but
starts fresh optimizer state still continues T5's rsqrt curve where it left off.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from mesh_t5.errors import UserError

Schedule = Callable[[jax.Array], jax.Array]


# Cached: equal arguments give the same object, so a rebuilt train step reuses its compilation.
@functools.cache
def rsqrt_schedule(warmup_steps: int = 10_000, scale: float = 1.0) -> Schedule:
    """Returns T5's pre-training schedule: scale / sqrt(max(step, warmup_steps)).

    The flat start (0.01 for 10^4 steps) plays the role of warm-up (paper section 3.1.2).
    """
    if warmup_steps < 1:
        raise UserError(f"rsqrt_schedule.warmup_steps={warmup_steps} must be >= 1")

    def schedule(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        return scale * jax.lax.rsqrt(jnp.maximum(step, float(warmup_steps)))

    return schedule


# Cached: equal arguments give the same object, so a rebuilt train step reuses its compilation.
@functools.cache
def constant_schedule(value: float = 1e-3) -> Schedule:
    """Returns a constant learning rate (T5 fine-tuning uses 1e-3)."""

    def schedule(step: jax.Array) -> jax.Array:
        return jnp.full((), value, jnp.float32) + 0.0 * jnp.asarray(step, jnp.float32)

    return schedule


# Cached: equal arguments give the same object, so a rebuilt train step reuses its compilation.
@functools.cache
def linear_warmup_decay_schedule(
    peak: float = 1e-3, warmup_steps: int = 1000, total_steps: int = 10_000
) -> Schedule:
    """Returns a linear warm-up to `peak` then linear decay to 0 at `total_steps` (not T5's; for experiments)."""

    def schedule(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        up = step / max(warmup_steps, 1)
        down = (total_steps - step) / max(total_steps - warmup_steps, 1)
        return peak * jnp.clip(jnp.minimum(up, down), 0.0, 1.0)

    return schedule


def as_schedule(learning_rate: float | Schedule) -> Schedule:
    """Returns a schedule for a number (constant) or a schedule (unchanged)."""
    if callable(learning_rate):
        return learning_rate
    return constant_schedule(float(learning_rate))


# Cached: equal arguments give the same object, so a rebuilt train step reuses its compilation.
@functools.cache
def make_optimizer(
    name: str = "adafactor",
    *,
    decay_rate: float = 0.8,
    clipping_threshold: float | None = 1.0,
    factored: bool = True,
    multiply_by_parameter_scale: bool = True,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
    momentum: float | None = None,
    weight_decay: float | None = None,
    clip_grad_norm: float | None = None,
) -> optax.GradientTransformation:
    """Returns the update rule WITHOUT the learning rate (the train step multiplies by lr(step)).

    Defaults are T5's Adafactor: decay rate 0.8, update clipping 1.0, factored second
    moments, updates scaled by the parameter's RMS (floored at 1e-3), epsilon 1e-30, no
    momentum. `clip_grad_norm` adds global-norm gradient clipping in front. "adamw" and
    "sgd" exist for comparisons.
    """
    chain: list[optax.GradientTransformation] = []
    if clip_grad_norm is not None:
        if clip_grad_norm <= 0:
            raise UserError(f"clip_grad_norm={clip_grad_norm} must be > 0 (or None to disable clipping)")
        chain.append(optax.clip_by_global_norm(clip_grad_norm))
    if name == "adafactor":
        chain.append(
            optax.adafactor(
                learning_rate=None,
                min_dim_size_to_factor=min_dim_size_to_factor,
                decay_rate=decay_rate,
                multiply_by_parameter_scale=multiply_by_parameter_scale,
                clipping_threshold=clipping_threshold,
                momentum=momentum,
                weight_decay_rate=weight_decay,
                eps=epsilon,
                factored=factored,
            )
        )
    elif name == "adamw":
        chain.append(optax.scale_by_adam())
        if weight_decay:
            chain.append(optax.add_decayed_weights(weight_decay))
        chain.append(optax.scale(-1.0))
    elif name == "sgd":
        chain.append(optax.scale(-1.0))
    else:
        raise UserError(f"optimizer {name!r} is unknown; pick adafactor, adamw or sgd")
    return optax.chain(*chain)
