"""T5's token-level cross entropy with z-loss and label smoothing (t5x definitions), float32."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def cross_entropy(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array | None,
    z_loss: float = 0.0,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns (weighted loss sum, aux) for logits [B, T, V] and integer targets [B, T].

    aux: weight_sum, z_loss (its weighted sum, already inside the loss), correct (weighted
    count of argmax hits), all float32 scalars. weights None means targets > 0. Label
    smoothing puts 1 - s on the target and s / (V - 1) elsewhere and subtracts the entropy
    of that distribution, so the smallest reachable loss is 0; z_loss adds z_loss * log(Z)^2.
    """
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    if weights is None:
        weights = targets > 0
    weights = weights.astype(jnp.float32)  # [B, T]
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    normalizing = -(confidence * math.log(confidence) + (vocab - 1) * low * math.log(low + 1e-20))
    log_z = jax.nn.logsumexp(logits, axis=-1)  # [B, T]
    log_probs = logits - log_z[..., None]  # [B, T, V]
    target_log_prob = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    if label_smoothing:
        # sum_v soft(v) log p(v) = low * sum_v log p(v) + (confidence - low) * log p(target)
        loss = -(low * jnp.sum(log_probs, axis=-1) + (confidence - low) * target_log_prob) - normalizing
    else:
        loss = -target_log_prob  # [B, T]
    z = z_loss * jnp.square(log_z)
    loss = loss + z
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    aux = {
        "weight_sum": jnp.sum(weights),
        "z_loss": jnp.sum(z * weights),
        "correct": jnp.sum(correct * weights),
    }
    return jnp.sum(loss * weights), aux
