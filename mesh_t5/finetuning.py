"""Which parameters train: the paper's fine-tuning methods (Table 10) as masks.

- "all": every parameter (the default, and the paper's best).
- "adapters": only `adapter/wi`, `adapter/wo` (config.adapter_dim > 0) and the layer-norm scales.
- "gradual_unfreezing": training starts with the top layer of the encoder and of the decoder
  (in parallel); every `unfreeze_every` steps one more layer below joins, until all train.
  The embeddings (and an untied output matrix) and the final norms train throughout, as in
  the paper; the relative-position bias table, which T5 keeps with the bottom layer, joins
  with the bottom layer.

A mask leaf is a boolean broadcastable to its parameter: a scalar, or `[L, 1, ...]` for
stacked layers. The train step zeroes frozen gradients and then keeps the old value of
every frozen entry with `where`, so frozen parameters stay bitwise unchanged whatever the
optimizer does (Adafactor's parameter-scale multiplication, weight decay).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mesh_t5.config import T5Config
from mesh_t5.errors import UserError

METHODS = ("all", "adapters", "gradual_unfreezing")


def check_method(method: str, config: T5Config, unfreeze_every: int | None) -> None:
    """Raises a one-line UserError when the method cannot run with this config."""
    if method not in METHODS:
        raise UserError(f"finetune_method={method!r} is unknown; pick one of {', '.join(METHODS)}")
    if method == "adapters" and config.adapter_dim <= 0:
        raise UserError(
            "finetune_method='adapters' needs T5Config.adapter_dim > 0 (e.g. --gin.T5Config.adapter_dim=32)"
        )
    if method == "gradual_unfreezing" and (unfreeze_every is None or unfreeze_every < 1):
        raise UserError(
            f"finetune_method='gradual_unfreezing' needs unfreeze_every >= 1 steps (got {unfreeze_every}); "
            "the paper uses train steps / number of layers"
        )


def path_name(path: tuple[Any, ...]) -> str:
    """Returns "encoder/layers/mlp/wi" for a tree_util key path."""
    parts = []
    for key in path:
        parts.append(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))))
    return "/".join(parts)


def _is_norm(name: str) -> bool:
    return any(part.endswith("norm") for part in name.split("/"))


def trainable_mask(
    params: Any,
    config: T5Config,
    method: str,
    *,
    step: jax.Array | int = 0,
    start_step: jax.Array | int = 0,
    unfreeze_every: int | None = None,
) -> Any | None:
    """Returns a tree of booleans (True = trains) matching `params`, or None when all train.

    `step` may be traced: the unfreezing stage is computed on device, so the train step
    compiles once for all stages.
    """
    if method == "all":
        return None
    if method == "adapters":

        def adapter_leaf(path: tuple[Any, ...], _: jax.Array) -> jax.Array:
            name = path_name(path)
            return jnp.asarray("adapter" in name.split("/") or _is_norm(name))

        return jax.tree_util.tree_map_with_path(adapter_leaf, params)
    if method != "gradual_unfreezing":
        raise UserError(f"finetune_method={method!r} is unknown; pick one of {', '.join(METHODS)}")
    stage = (jnp.asarray(step, jnp.int32) - jnp.asarray(start_step, jnp.int32)) // int(unfreeze_every or 1)
    stage = jnp.maximum(stage, 0)  # []

    def unfreeze_leaf(path: tuple[Any, ...], leaf: jax.Array) -> jax.Array:
        parts = path_name(path).split("/")
        stack = parts[0]
        if stack in ("encoder", "decoder") and len(parts) > 1 and parts[1] == "layers":
            num_layers = leaf.shape[0]
            layer = jnp.arange(num_layers)  # [L]
            trains = layer >= num_layers - 1 - stage  # [L]: the top `stage + 1` layers
            return trains.reshape((num_layers,) + (1,) * (leaf.ndim - 1))
        if stack in ("encoder", "decoder") and "relpos_bias" in parts:
            num_layers = config.num_encoder_layers if stack == "encoder" else config.num_decoder_layers
            return stage >= num_layers - 1
        return jnp.asarray(True)  # embeddings, output matrix, final norms

    return jax.tree_util.tree_map_with_path(unfreeze_leaf, params)


def mask_gradients(grads: Any, mask: Any | None) -> Any:
    """Zeroes the gradients of frozen entries (mask None: unchanged)."""
    if mask is None:
        return grads
    return jax.tree.map(lambda g, m: jnp.where(m, g, jnp.zeros_like(g)), grads, mask)


def keep_frozen(new_params: Any, old_params: Any, mask: Any | None) -> Any:
    """Returns new params with every frozen entry replaced by its old value (bitwise)."""
    if mask is None:
        return new_params
    return jax.tree.map(lambda n, o, m: jnp.where(m, n, o), new_params, old_params, mask)
