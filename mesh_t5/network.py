"""The T5 network: parameter init and axes, encoder/decoder stacks, forward pass, and cached decoding.

Parameters are plain nested dicts (layout in docs/internals.md); layers of a stack are
stacked on a leading axis and run with `jax.lax.scan` (the cached decoder unrolls them).
Shape letters as in layers.py, plus L layers and M the decode cache length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mesh_t5 import decoding, layers, layouts, native
from mesh_t5.config import T5Config

Params = dict[str, Any]

_SHARED_NAMES = {  # decoder name -> encoder name, for shared_encoder_decoder
    "self_attention_norm": "attention_norm",
    "self_attention": "attention",
    "mlp_norm": "mlp_norm",
    "mlp": "mlp",
    "adapter": "adapter",
}


@dataclasses.dataclass(frozen=True)
class _Spec:
    shape: tuple[int, ...]
    axes: tuple[str | None, ...]
    std: float | None  # None: ones (norm scales); 0.0: zeros


def _attention_specs(c: T5Config, n: int) -> dict[str, _Spec]:
    d, h, k = c.d_model, c.num_heads, c.d_kv
    qkv_axes = ("layers", "embed", "heads", "kv")
    return {
        # The query init absorbs the 1/sqrt(d_kv) that T5 leaves out of the attention logits.
        "query": _Spec((n, d, h, k), qkv_axes, (d * k) ** -0.5),
        "key": _Spec((n, d, h, k), qkv_axes, d**-0.5),
        "value": _Spec((n, d, h, k), qkv_axes, d**-0.5),
        "out": _Spec((n, h, k, d), ("layers", "heads", "kv", "embed"), (h * k) ** -0.5),
    }


def _norm_spec(c: T5Config, n: int | None) -> dict[str, _Spec]:
    if n is None:
        return {"scale": _Spec((c.d_model,), ("embed",), None)}
    return {"scale": _Spec((n, c.d_model), ("layers", "embed"), None)}


def _mlp_specs(c: T5Config, n: int) -> dict[str, _Spec]:
    wi = _Spec((n, c.d_model, c.d_ff), ("layers", "embed", "d_ff"), c.d_model**-0.5)
    specs = {"wi_0": wi, "wi_1": wi} if c.is_gated else {"wi": wi}
    specs["wo"] = _Spec((n, c.d_ff, c.d_model), ("layers", "d_ff", "embed"), c.d_ff**-0.5)
    return specs


def _adapter_specs(c: T5Config, n: int) -> dict[str, _Spec]:
    # wo starts at zero so an adapter added to a pre-trained model starts as the identity.
    return {
        "wi": _Spec((n, c.d_model, c.adapter_dim), ("layers", "embed", "adapter"), c.d_model**-0.5),
        "wo": _Spec((n, c.adapter_dim, c.d_model), ("layers", "adapter", "embed"), 0.0),
    }


def _stack_specs(c: T5Config, n: int, *, self_name: str, cross: bool, own_ffn: bool) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    if own_ffn:
        layer[f"{self_name}_norm"] = _norm_spec(c, n)
        layer[self_name] = _attention_specs(c, n)
    if cross:
        layer["cross_attention_norm"] = _norm_spec(c, n)
        layer["cross_attention"] = _attention_specs(c, n)
    if own_ffn:
        layer["mlp_norm"] = _norm_spec(c, n)
        layer["mlp"] = _mlp_specs(c, n)
        if c.adapter_dim > 0:
            layer["adapter"] = _adapter_specs(c, n)
    return {
        "relpos_bias": _Spec(
            (c.relative_attention_num_buckets, c.num_heads), ("relpos_buckets", "heads"), c.d_model**-0.5
        ),
        "layers": layer,
        "final_norm": _norm_spec(c, None),
    }


def _param_specs(c: T5Config) -> dict[str, Any]:
    specs: dict[str, Any] = {
        "token_embedder": {"embedding": _Spec((c.vocab_size, c.d_model), ("vocab", "embed"), 1.0)}
    }
    if c.has_encoder:
        specs["encoder"] = _stack_specs(
            c, c.num_encoder_layers, self_name="attention", cross=False, own_ffn=True
        )
    specs["decoder"] = _stack_specs(
        c,
        c.num_decoder_layers,
        self_name="self_attention",
        cross=c.has_encoder,
        own_ffn=c.architecture != "shared_encoder_decoder",
    )
    if not c.tie_word_embeddings:
        specs["logits_dense"] = {
            "kernel": _Spec((c.d_model, c.vocab_size), ("embed", "vocab"), c.d_model**-0.5)
        }
    return specs


def _is_spec(x: Any) -> bool:
    return isinstance(x, _Spec)


def init_params(config: T5Config, rng: jax.Array) -> Params:
    """Returns freshly initialised float32 parameters (T5's normal init; jittable, eval_shape-able)."""
    leaves, treedef = jax.tree.flatten(_param_specs(config), is_leaf=_is_spec)
    keys = jax.random.split(rng, len(leaves))

    def make(spec: _Spec, key: jax.Array) -> jax.Array:
        if spec.std is None:
            return jnp.ones(spec.shape, jnp.float32)
        if spec.std == 0.0:
            return jnp.zeros(spec.shape, jnp.float32)
        return spec.std * jax.random.normal(key, spec.shape, jnp.float32)

    return jax.tree.unflatten(treedef, [make(s, k) for s, k in zip(leaves, keys, strict=True)])


def init_params_numpy(config: T5Config, seed: int = 0) -> Params:
    """Returns host (numpy float32) parameters with init_params' distributions, without compiling.

    Different random values from init_params for the same seed; meant for tests and tiny
    models, where compiling the per-leaf random draws costs more than the model.
    """
    rng = np.random.default_rng(seed)

    def make(spec: _Spec) -> np.ndarray:
        if spec.std is None:
            return np.ones(spec.shape, np.float32)
        return (spec.std * rng.standard_normal(spec.shape)).astype(np.float32)

    return jax.tree.map(make, _param_specs(config), is_leaf=_is_spec)


def param_axes(config: T5Config) -> dict[str, Any]:
    """Returns the parameter tree with a tuple of logical axis names per leaf."""
    return jax.tree.map(lambda s: s.axes, _param_specs(config), is_leaf=_is_spec)


def param_shapes(config: T5Config) -> dict[str, Any]:
    """Returns the parameter tree of float32 ShapeDtypeStructs: what init_params makes, nothing allocated."""
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, jnp.float32), _param_specs(config), is_leaf=_is_spec
    )


# ----------------------------------------------------------------------------- layers and stacks


def _split(rng: jax.Array | None, n: int) -> list[jax.Array | None]:
    return [None] * n if rng is None else list(jax.random.split(rng, n))


def _encoder_layer(
    lp: Params, x: jax.Array, bias: jax.Array, config: T5Config, rng: jax.Array | None
) -> jax.Array:
    r = _split(rng, 4)
    eps, rate = config.layer_norm_epsilon, config.dropout_rate
    h = layers.rms_norm(x, lp["attention_norm"]["scale"], eps)
    h = layers.attention(lp["attention"], h, h, bias, dropout_rate=rate, dropout_rng=r[0])
    x = x + layers.dropout(h, rate, r[1])
    return _ffn(lp, x, config, r[2], r[3])


def _ffn(lp: Params, x: jax.Array, config: T5Config, rng_inner: Any, rng_out: Any) -> jax.Array:
    h = layers.rms_norm(x, lp["mlp_norm"]["scale"], config.layer_norm_epsilon)
    h = layers.dropout(layers.mlp(lp["mlp"], h, config, dropout_rng=rng_inner), config.dropout_rate, rng_out)
    if "adapter" in lp:
        h = layers.adapter(lp["adapter"], h)
    x = x + h
    return layouts.constrain(x, ("batch", "length", "embed"))


def _decoder_layer(
    lp: Params,
    x: jax.Array,
    config: T5Config,
    rng: jax.Array | None,
    *,
    self_bias: jax.Array,
    cross_bias: jax.Array | None,
    cross_kv: tuple[jax.Array, jax.Array] | None,
    kv_cache: tuple[jax.Array, jax.Array] | None = None,
    index: jax.Array | int = 0,
    cross_grouped: bool = False,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Returns (x [B, T, D], self-attention (keys, values) [B, T, H, K]).

    cross_kv: the encoder output's keys and values [B, S, H, K]. With kv_cache (decoding), this
    layer's cached keys [B, H, K, M] and values [B, H, M, K]: the new keys and values are written
    at slots index.. and the layer attends over all M slots; the updated caches are returned in
    place of (keys, values), and cross_kv comes from the cache too, keys [B, H, K, S] and values
    [B, H, S, K] (cross_grouped: the decode cache's grouped_keys [B, H, S, K] and grouped_values
    [B, H, K, S]).
    """
    r = _split(rng, 6)
    eps, rate = config.layer_norm_epsilon, config.dropout_rate
    h = layers.rms_norm(x, lp["self_attention_norm"]["scale"], eps)
    q = layers.project_q(lp["self_attention"], h)
    k, v = layers.project_kv(lp["self_attention"], h)  # [B, T, H, K]
    if kv_cache is None:
        kv_out = (k, v)
        h = layers.attend(lp["self_attention"], q, k, v, self_bias, dropout_rate=rate, dropout_rng=r[0])
    else:
        keys, values = kv_cache
        keys = jax.lax.dynamic_update_slice(
            keys, jnp.transpose(k, (0, 2, 3, 1)).astype(keys.dtype), (0, 0, 0, index)
        )
        values = jax.lax.dynamic_update_slice(
            values, jnp.swapaxes(v, 1, 2).astype(values.dtype), (0, 0, index, 0)
        )
        kv_out = (keys, values)
        h = layers.attend_cached(lp["self_attention"], q, keys, values, self_bias)
    x = x + layers.dropout(h, rate, r[1])
    if cross_kv is not None:
        h = layers.rms_norm(x, lp["cross_attention_norm"]["scale"], eps)
        q = layers.project_q(lp["cross_attention"], h)  # [R, T, H, K]
        # R = G * B rows against the B inputs' keys (G > 1: beams that share their input's keys,
        # batch-major): the G rows of an input attend as G * T queries of one row.
        rows, t = q.shape[:2]
        q = q.reshape(cross_kv[0].shape[0], -1, *q.shape[2:])  # [B, G * T, H, K]
        if kv_cache is None:
            h = layers.attend(
                lp["cross_attention"], q, *cross_kv, cross_bias, dropout_rate=rate, dropout_rng=r[2]
            )
        elif cross_grouped:  # the decode cache's grouped_keys [B, H, S, K] and grouped_values [B, H, K, S]
            h = layers.attend_cached_grouped(lp["cross_attention"], q, *cross_kv, cross_bias)
        else:  # the decode cache's keys [B, H, K, S] and values [B, H, S, K]
            h = layers.attend_cached(lp["cross_attention"], q, *cross_kv, cross_bias)
        x = x + layers.dropout(h.reshape(rows, t, -1), rate, r[3])
    return _ffn(lp, x, config, r[4], r[5]), kv_out


_REMAT_POLICIES = {
    "full": None,  # jax.checkpoint's default: save nothing but the layer's inputs
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
}


def _scan(fn: Any, x: jax.Array, xs: Any, remat: str) -> tuple[jax.Array, Any]:
    """Scans fn over the stacked layers, its backward recomputing what config.remat says."""
    if remat != "none":
        fn = jax.checkpoint(fn, policy=_REMAT_POLICIES[remat])
    return jax.lax.scan(fn, x, xs)


def decoder_layers(params: Params, config: T5Config) -> Params:
    """Returns the decoder's stacked layer params (with the encoder's shared entries when shared).

    Params from unstack_decoder_layers hold a tuple of per-layer trees instead, returned as is.
    """
    dec = params["decoder"]["layers"]
    if isinstance(dec, tuple):
        return dec
    dec = dict(dec)
    if config.architecture == "shared_encoder_decoder":
        enc = params["encoder"]["layers"]
        dec.update({d: enc[e] for d, e in _SHARED_NAMES.items() if e in enc})
    return dec


def _positions(positions: jax.Array | None, length: int) -> jax.Array:
    # Without packing every row has positions 0..length-1: one [1, length] row broadcasts.
    return jnp.arange(length, dtype=jnp.int32)[None] if positions is None else positions.astype(jnp.int32)


def _segment_mask(q_seg: jax.Array, k_seg: jax.Array) -> jax.Array:
    """Returns [B, 1, T, S]: True where query and key share a (non-padding) segment."""
    return ((q_seg[:, :, None] == k_seg[:, None, :]) & (k_seg[:, None, :] != 0))[:, None]


def encode(
    params: Params,
    encoder_input_tokens: jax.Array,
    config: T5Config,
    *,
    segment_ids: jax.Array | None = None,
    positions: jax.Array | None = None,
    dropout_rng: jax.Array | None = None,
) -> jax.Array:
    """Returns the encoder output [B, S, D] in config.dtype (pad keys, id 0, masked unless packed)."""
    enc = params["encoder"]
    s = encoder_input_tokens.shape[1]
    pos = _positions(positions, s)
    bias = layers.relative_position_bias(enc["relpos_bias"], pos, pos, config, bidirectional=True)
    if segment_ids is not None:
        mask = _segment_mask(segment_ids, segment_ids)
    else:
        mask = (encoder_input_tokens != config.pad_id)[:, None, None, :]  # [B, 1, 1, S]
    bias = bias + layers.mask_to_bias(mask)  # [B, H, S, S]
    r = _split(dropout_rng, 3)
    x = layers.embed(params["token_embedder"]["embedding"], encoder_input_tokens, config.dtype)
    x = layers.dropout(x, config.dropout_rate, r[0])
    n = config.num_encoder_layers

    def body(x: jax.Array, xs: Any) -> tuple[jax.Array, None]:
        lp, rng = xs
        return _encoder_layer(lp, x, bias, config, rng), None

    rngs = None if r[1] is None else jax.random.split(r[1], n)
    x, _ = _scan(body, x, (enc["layers"], rngs), config.remat)
    x = layers.rms_norm(x, enc["final_norm"]["scale"], config.layer_norm_epsilon)
    return layers.dropout(x, config.dropout_rate, r[2])


def _self_mask(length: int, segment_ids: jax.Array | None, causal_attention: jax.Array | None) -> jax.Array:
    """Returns the decoder self-attention mask [B|1, 1, T, T]: causal, or fully visible over the prefix."""
    idx = jnp.arange(length)
    mask = (idx[None, :] <= idx[:, None])[None, None]  # [1, 1, T, T]
    if causal_attention is not None:
        prefix = causal_attention.astype(bool)
        mask = mask | (prefix[:, :, None] & prefix[:, None, :])[:, None]
    if segment_ids is not None:
        mask = mask & _segment_mask(segment_ids, segment_ids)
    return mask


def _logits(params: Params, x: jax.Array, config: T5Config) -> jax.Array:
    """Returns float32 logits [B, T, V] from the decoder output x [B, T, D]."""
    if config.tie_word_embeddings:
        x = x * config.d_model**-0.5
    if "decode_logits_kernel" in params:  # unstack_decoder_layers' output matrix, when decoding
        kernel = params["decode_logits_kernel"]
    elif config.tie_word_embeddings:
        kernel = jnp.transpose(params["token_embedder"]["embedding"])
    else:
        kernel = params["logits_dense"]["kernel"]
    logits = layers.dense(x, kernel.astype(x.dtype), preferred_element_type=jnp.float32)
    return layouts.constrain(logits, ("batch", "length", "vocab"))


def decode(
    params: Params,
    encoded: jax.Array | None,
    batch: Mapping[str, jax.Array],
    config: T5Config,
    *,
    dropout_rng: jax.Array | None = None,
) -> jax.Array:
    """Returns decoder logits [B, T, V] float32 over batch["decoder_input_tokens"] (teacher forcing)."""
    dec = params["decoder"]
    tokens = batch["decoder_input_tokens"]
    t = tokens.shape[1]
    seg = batch.get("decoder_segment_ids")
    pos = _positions(batch.get("decoder_positions"), t)
    causal_attention = batch.get("decoder_causal_attention") if config.architecture == "prefix_lm" else None
    self_bias = layers.relative_position_bias(dec["relpos_bias"], pos, pos, config, bidirectional=False)
    self_bias = self_bias + layers.mask_to_bias(_self_mask(t, seg, causal_attention))
    cross_bias = None
    if encoded is not None:
        enc_seg = batch.get("encoder_segment_ids")
        if seg is not None and enc_seg is not None:
            cross_mask = _segment_mask(seg, enc_seg)
        else:
            cross_mask = (batch["encoder_input_tokens"] != config.pad_id)[:, None, None, :]
        cross_bias = layers.mask_to_bias(cross_mask)
    r = _split(dropout_rng, 3)
    x = layers.embed(params["token_embedder"]["embedding"], tokens, config.dtype)
    x = layers.dropout(x, config.dropout_rate, r[0])

    def body(x: jax.Array, xs: Any) -> tuple[jax.Array, None]:
        lp, rng = xs
        cross_kv = None if encoded is None else layers.project_kv(lp["cross_attention"], encoded)
        x, _ = _decoder_layer(
            lp, x, config, rng, self_bias=self_bias, cross_bias=cross_bias, cross_kv=cross_kv
        )
        return x, None

    rngs = None if r[1] is None else jax.random.split(r[1], config.num_decoder_layers)
    x, _ = _scan(body, x, (decoder_layers(params, config), rngs), config.remat)
    x = layers.rms_norm(x, dec["final_norm"]["scale"], config.layer_norm_epsilon)
    x = layers.dropout(x, config.dropout_rate, r[2])
    return _logits(params, x, config)


def forward(
    params: Params, batch: Mapping[str, jax.Array], config: T5Config, *, dropout_rng: jax.Array | None = None
) -> jax.Array:
    """Returns logits [B, T, V] float32 for a (possibly packed) batch; dropout only with dropout_rng."""
    r = _split(dropout_rng, 2)
    encoded = None
    if config.has_encoder:
        encoded = encode(
            params,
            batch["encoder_input_tokens"],
            config,
            segment_ids=batch.get("encoder_segment_ids"),
            positions=batch.get("encoder_positions"),
            dropout_rng=r[0],
        )
    return decode(params, encoded, batch, config, dropout_rng=r[1])


# ----------------------------------------------------------------------------- cached decoding
#
# Cache layout (every leaf of rank >= 1 has the batch on axis 0, CACHE_BATCH_AXIS):
#   layers                  a tuple with one dict per decoder layer:
#     self_key                [B, H, K, M]  self-attention keys, slot = position
#     self_value              [B, H, M, K]  self-attention values
#   start                   [B] int32     first valid slot per row (> 0 for left-aligned short prompts)
#   index                   [] int32      the slot the next decode_step writes (same for every row)
#   encoder                 encoder-decoder only, a decoding.PerInput (beam search keeps it at the
#                           batch of inputs, B, while the rest of the cache has B * beams rows):
#     keys, values            tuples, one per decoder layer of the cross-attention keys [B, H, K, S]
#                             and values [B, H, S, K], computed once from the encoder output; or
#     grouped_keys,           on one CPU device (cross_attention_grouped), the same as keys
#     grouped_values          [B, H, S, K] and values [B, H, K, S], read by
#                             layers.attend_cached_grouped's convolutions
#     mask                    [B, S] bool   True at non-pad encoder tokens
#
# One leaf per layer, and the cached decoder runs its layers as an unrolled Python loop rather
# than a scan over stacked [L, ...] caches: inside a scan, XLA's CPU backend materialised each
# layer's cache slice with a dynamic-slice copy every step (the cache moved three times per step
# instead of once, the term that made ms/token grow with M), and copied each layer's weight
# slices too. Unrolled, every cache is updated in place and read once by the attention dots;
# compile time grows with the layer count (T5 1.1 small, 8 decoder layers: 5.1 -> 7.5 s).
# Heads come before slots (as in the per-head attention dot products) so that the dots read each
# head's [K, M] key and [M, K] value blocks (or [K, S], [S, K]) as stored, with the queries as the
# left operand (layers.attend_cached); in [.., M, H, K] order every step made a transposed copy of
# each layer's whole keys and values.

CACHE_BATCH_AXIS = 0
CACHE_SLOT_AXIS = 2  # of a layer's self_value: M, the number of slots (max_decode_length)


# The decode step's products by decoder weight, with the number of leading axes each contracts:
# what unstack_decoder_layers(pack=True) packs. The cross-attention keys and values multiply the
# whole encoder output once per decode (many rows), so they stay as they are.
_PACKED = {
    "self_attention": {"query": 1, "key": 1, "value": 1, "out": 2},
    "cross_attention": {"query": 1, "out": 2},
    "mlp": {"wi": 1, "wi_0": 1, "wi_1": 1, "wo": 1},
    "adapter": {"wi": 1, "wo": 1},
}


def packs_decoder_weights(config: T5Config, batch_size: Any) -> bool:
    """Whether a decode traced now multiplies by packed weights (`native.PackedKernel`): on one CPU
    device with a static batch (layouts.one_cpu_device), with float32 activations, and when the
    native kernel is available. Greedy decoding of t5-small, batch 8: the step's products (154 MB
    of weights) 13.2 -> 8.1 ms in a 32-step loop (2 cores, idle); at 32 rows (beam 4) 31.9 -> 29.0.
    """
    return (
        jnp.dtype(config.dtype) == jnp.float32 and layouts.one_cpu_device(batch_size) and native.available()
    )


def _pack_layer(lp: Params) -> Params:
    out = dict(lp)
    for module, names in _PACKED.items():
        if module in lp:
            out[module] = {
                name: native.pack(w, names[name]) if name in names else w for name, w in lp[module].items()
            }
    return out


def unstack_decoder_layers(params: Params, config: T5Config, *, pack: bool = False) -> Params:
    """Returns params whose decoder layers are a tuple of per-layer trees, for the cached decoder.

    decode_step and prefill take stacked or unstacked params alike. Unstack once, outside the
    decode loop: sliced inside it, XLA's CPU backend copies every layer's weights each step
    (~90 MB for T5 1.1 small) instead of hoisting the slices out of the loop. With tied
    embeddings the result also holds `decode_logits_kernel`, the output matrix as [D, V].

    pack (see packs_decoder_weights): the decode step's weights and the output matrix (then
    `decode_logits_kernel` with untied embeddings too) become `native.PackedKernel`s, which
    layers.dense multiplies by through the native kernel. They take the unstacked copies' place.
    """
    stacked = decoder_layers(params, config)
    if isinstance(stacked, tuple):
        return params
    per_layer = tuple(jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(config.num_decoder_layers))
    if pack:
        kernel = (
            native.pack_transposed(params["token_embedder"]["embedding"])
            if config.tie_word_embeddings
            else native.pack(params["logits_dense"]["kernel"])
        )
        # The barrier keeps XLA from sinking the packing (transposes) into the decode loop.
        per_layer, kernel = jax.lax.optimization_barrier((tuple(_pack_layer(lp) for lp in per_layer), kernel))
        return {
            **params,
            "decoder": {**params["decoder"], "layers": per_layer},
            "decode_logits_kernel": kernel,
        }
    out = {**params, "decoder": {**params["decoder"], "layers": per_layer}}
    if config.tie_word_embeddings:
        # The output matrix as [D, V], once (50 ms at t5-small): multiplying by the embedding [V, D]
        # transposed inside the loop runs XLA CPU's Eigen dot on a transposed operand, 4-5x slower at
        # 8 rows (t5-small, batch 8: 22.8 vs 4.2 ms per step, with decode_compiler_options). The
        # barrier keeps XLA from folding the transpose back into the dot.
        kernel = layouts.constrain(jnp.transpose(params["token_embedder"]["embedding"]), ("embed", "vocab"))
        out["decode_logits_kernel"] = jax.lax.optimization_barrier(kernel)
    return out


def init_decode_cache(
    params: Params,
    config: T5Config,
    *,
    encoder_input_tokens: jax.Array | None = None,
    batch_size: int | None = None,
    max_decode_length: int,
) -> dict[str, Any]:
    """Returns an empty decode cache of max_decode_length slots (encoder run once when there is one)."""
    if config.has_encoder:
        if encoder_input_tokens is None:
            raise ValueError(
                f"architecture={config.architecture} needs encoder_input_tokens to build a cache"
            )
        batch_size = encoder_input_tokens.shape[0]
    elif batch_size is None:
        raise ValueError("init_decode_cache needs batch_size for a decoder-only model")
    b, h, m, k = batch_size, config.num_heads, max_decode_length, config.d_kv
    layer_caches = tuple(
        {
            "self_key": jnp.zeros((b, h, k, m), config.dtype),
            "self_value": jnp.zeros((b, h, m, k), config.dtype),
        }
        for _ in range(config.num_decoder_layers)
    )
    cache: dict[str, Any] = {
        "layers": layer_caches,
        "start": jnp.zeros((batch_size,), jnp.int32),
        "index": jnp.zeros((), jnp.int32),
    }
    if config.has_encoder:
        encoded = encode(params, encoder_input_tokens, config)  # [B, S, D]
        per_layer = unstack_decoder_layers(params, config)["decoder"]["layers"]
        dtype = encoded.dtype
        grouped = cross_attention_grouped(batch_size)
        key_spec, value_spec = (
            ("BSD,DHK->BHSK", "BSD,DHK->BHKS") if grouped else ("BSD,DHK->BHKS", "BSD,DHK->BHSK")
        )
        prefix = "grouped_" if grouped else ""
        kv = {
            prefix + "keys": tuple(
                jnp.einsum(key_spec, encoded, lp["cross_attention"]["key"].astype(dtype)) for lp in per_layer
            ),
            prefix + "values": tuple(
                jnp.einsum(value_spec, encoded, lp["cross_attention"]["value"].astype(dtype))
                for lp in per_layer
            ),
        }
        # Without the barrier XLA sinks the einsums' output transposes into the decode loop, so
        # every step copied every layer's cross keys and values (t5.1.1-small, batch 8, 512
        # input tokens: 100 MB per step, 87 -> 67 ms/token with the barrier).
        kv = jax.lax.optimization_barrier(kv)
        cache["encoder"] = decoding.PerInput({**kv, "mask": encoder_input_tokens != config.pad_id})
    return cache


def cross_attention_grouped(batch_size: Any) -> bool:
    """Whether a decode cache built now for `batch_size` inputs holds cross-attention keys and values
    for layers.attend_cached_grouped: on the CPU backend with no layout in force (one device), and a
    known batch size (a convolution's group count cannot be symbolic, as in an exported model's)."""
    return layouts.one_cpu_device(batch_size)


def _run_cached(
    params: Params,
    cache: dict[str, Any],
    tokens: jax.Array,
    self_mask: jax.Array,
    config: T5Config,
) -> tuple[jax.Array, dict[str, Any]]:
    """Runs tokens [B, T] at slots index..index+T-1 against the cache; returns (logits [B, T, V], cache)."""
    dec = params["decoder"]
    index = cache["index"]
    t, m = tokens.shape[1], _num_slots(cache)
    q_slots = (index + jnp.arange(t, dtype=jnp.int32))[None]  # [1, T]
    k_slots = jnp.arange(m, dtype=jnp.int32)[None]  # [1, M]
    # Slots are positions: left alignment shifts a row's query and key slots alike, so relative
    # positions (key - query) are those of the unpadded sequence.
    self_bias = layers.relative_position_bias(
        dec["relpos_bias"], q_slots, k_slots, config, bidirectional=False
    )
    self_bias = self_bias + layers.mask_to_bias(self_mask)  # [B, H, T, M]
    cross_bias, cross, grouped = None, [None] * config.num_decoder_layers, False
    if config.has_encoder:
        encoder = cache["encoder"].value
        cross_bias = layers.mask_to_bias(encoder["mask"][:, None, None, :])  # [B, 1, 1, S]
        grouped = "grouped_keys" in encoder
        prefix = "grouped_" if grouped else ""
        cross = list(zip(encoder[prefix + "keys"], encoder[prefix + "values"], strict=True))
    x = layers.embed(params["token_embedder"]["embedding"], tokens, config.dtype)
    per_layer = unstack_decoder_layers(params, config)["decoder"]["layers"]
    new_layers = []
    for lp, lc, cross_kv in zip(per_layer, cache["layers"], cross, strict=True):
        x, (keys, values) = _decoder_layer(
            lp,
            x,
            config,
            None,
            self_bias=self_bias,
            cross_bias=cross_bias,
            cross_kv=cross_kv,
            kv_cache=(lc["self_key"], lc["self_value"]),
            index=index,
            cross_grouped=grouped,
        )
        new_layers.append({**lc, "self_key": keys, "self_value": values})
    x = layers.rms_norm(x, dec["final_norm"]["scale"], config.layer_norm_epsilon)
    cache = {**cache, "layers": tuple(new_layers), "index": index + t}
    return _logits(params, x, config), cache


def _num_slots(cache: dict[str, Any]) -> int:
    return cache["layers"][0]["self_value"].shape[CACHE_SLOT_AXIS]


def decode_step(
    params: Params, cache: dict[str, jax.Array], last_tokens: jax.Array, config: T5Config
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns (logits [B, V] float32 for the token after last_tokens [B], the advanced cache)."""
    slots = jnp.arange(_num_slots(cache))[None]  # [1, M]
    valid = (slots >= cache["start"][:, None]) & (slots <= cache["index"])  # [B, M]
    logits, cache = _run_cached(params, cache, last_tokens[:, None], valid[:, None, None, :], config)
    return logits[:, 0], cache


def prefill(
    params: Params,
    cache: dict[str, jax.Array],
    prompt_tokens: jax.Array,
    prompt_lengths: jax.Array,
    config: T5Config,
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Runs right-padded prompts [B, P] into an empty cache; returns (cache, last prompt tokens [B]).

    Rows are left-aligned so every prompt ends at slot P-1 (the `start` leaf marks each
    row's first real slot). Slots 0..P-1 are filled and the cache index is set to P-1, so
    the first `decode_step(params, cache, last_tokens)` re-runs the last prompt token
    (writing identical keys/values) and yields the logits of the first new token. For
    prefix_lm the whole prompt is the fully visible prefix. Prompt lengths must be >= 1.
    """
    p = prompt_tokens.shape[1]
    lengths = prompt_lengths.astype(jnp.int32)
    shift = p - lengths  # [B]
    src = jnp.arange(p)[None] - shift[:, None]  # [B, P] source column of each left-aligned slot
    tokens = jnp.where(
        src >= 0, jnp.take_along_axis(prompt_tokens, jnp.maximum(src, 0), axis=1), config.pad_id
    )
    valid = src >= 0  # [B, P]
    idx = jnp.arange(p)
    visible = (idx[None, :] <= idx[:, None])[None]  # [1, P, P] causal
    if config.architecture == "prefix_lm":
        visible = visible | (valid[:, :, None] & valid[:, None, :])
    mask = visible & valid[:, None, :]  # [B, P, P]
    m = _num_slots(cache)
    mask = jnp.pad(mask, ((0, 0), (0, 0), (0, m - p)))[:, None]  # [B, 1, P, M]: unwritten slots masked
    cache = {**cache, "index": jnp.zeros((), jnp.int32), "start": shift}
    _, cache = _run_cached(params, cache, tokens, mask, config)
    cache["index"] = jnp.asarray(p - 1, jnp.int32)
    return cache, tokens[:, p - 1]
