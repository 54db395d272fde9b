"""T5 building blocks as pure functions over parameter dicts: RMSNorm, embedding lookup,
bucketed relative position bias, multi-head attention, feed-forward, adapter, dropout.

Shape letters: B batch, T query length, S key length, D embed, H heads, K kv (d_kv),
F d_ff, A adapter, V vocab, N buckets.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from mesh_t5 import layouts, native
from mesh_t5.config import T5Config

Params = dict[str, Any]

# Added to masked-out attention logits; finite so that fully masked rows (padding) stay NaN-free.
MASK_VALUE = -1e10


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """Returns x / rms(x) * scale (no bias, no mean subtraction), variance in float32."""
    x32 = x.astype(jnp.float32)
    variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)  # [..., 1]
    return (x32 * jax.lax.rsqrt(variance + eps) * scale).astype(x.dtype)


def embed(embedding: jax.Array, tokens: jax.Array, dtype: Any) -> jax.Array:
    """Returns embedding rows for tokens: [B, T] -> [B, T, D] in dtype."""
    x = jnp.take(embedding, tokens, axis=0).astype(dtype)  # [B, T, D]
    return layouts.constrain(x, ("batch", "length", "embed"))


def _mix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer: a bijection of uint32 whose output bits each depend on all input bits."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def dropout_keep_mask(rng: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    """Returns a bool mask of `shape`, True with probability 1 - rate, from a counter-based hash.

    Two words drawn from rng seed a hash of each element's flat index (as Philox-style
    counter-based generators do). jax.random.bernoulli runs threefry per element, which XLA's
    CPU backend executes ~4x slower than this hash (in-process A/B over [8, 8, 512, 512]:
    2048 vs 537 ms, a plain elementwise pass 280 ms, on a loaded machine); dropout draws
    ~220 M numbers per T5-small step at batch 8 x 512 / 114. Elementwise, so sharded arrays
    hash their own slices. Indices wrap past 2^32 elements per array (far beyond one layer's).
    """
    seed = jax.random.bits(rng, (2,), jnp.uint32)
    size = math.prod(shape)
    index = jax.lax.iota(jnp.uint32, size).reshape(shape)
    bits = _mix32(_mix32(index ^ seed[0]) + seed[1])
    return bits >= jnp.uint32(min(round(rate * 2.0**32), 2**32 - 1))


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    """Returns x with inverted dropout applied; identity when rng is None or rate is 0."""
    if rng is None or rate == 0.0:
        return x
    keep = dropout_keep_mask(rng, x.shape, rate)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def relative_position_bucket(
    relative_position: jax.Array, *, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128
) -> jax.Array:
    """Returns T5's bucket id in [0, num_buckets) for relative_position = key_pos - query_pos.

    Half the buckets are exact offsets, the other half log-spaced up to max_distance; in
    the causal case every future offset (> 0) shares bucket 0 with offset 0.
    """
    bucket = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # max(distance, 1) keeps log finite where the small branch is taken anyway.
    log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(
        max_distance / max_exact
    )
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(relative_position.dtype)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(is_small, distance, large)


def relative_position_bias(
    table: jax.Array,
    query_positions: jax.Array,
    key_positions: jax.Array,
    config: T5Config,
    *,
    bidirectional: bool,
) -> jax.Array:
    """Returns the additive attention bias [B|1, H, T, S] float32 from positions [B|1, T], [B|1, S]."""
    relative = key_positions[:, None, :] - query_positions[:, :, None]  # [B, T, S]
    buckets = relative_position_bucket(
        relative,
        bidirectional=bidirectional,
        num_buckets=config.relative_attention_num_buckets,
        max_distance=config.relative_attention_max_distance,
    )
    values = jnp.take(table.astype(jnp.float32), buckets, axis=0)  # [B, T, S, H]
    return jnp.transpose(values, (0, 3, 1, 2))  # [B, H, T, S]


def dense(x: jax.Array, kernel: jax.Array, contract: int = 1, **dot_kwargs: Any) -> jax.Array:
    """Returns x [..., C1..Cc] contracted with kernel [C1..Cc, O1..] -> [..., O1..] as one 2-D matmul.

    Same result as the einsum; flattening to [rows, C] @ [C, O] first is what makes the
    backward pass fast on XLA CPU: the gradient of a 3-D einsum contracts over batch and length
    together, which XLA's CPU backend runs ~2x slower than the equivalent 2-D matmul
    (measured: gated MLP of the demo model, grad 49 ms vs 24 ms). Leading axes sharded on the
    batch axis stay sharded through the reshape.
    """
    lead, inner = x.shape[: x.ndim - contract], x.shape[x.ndim - contract :]
    out = kernel.shape[contract:]
    size = math.prod(inner)
    if isinstance(kernel, native.PackedKernel):  # a decoder weight packed for decoding on one CPU
        return native.few_rows_matmul(x.reshape(-1, size), kernel).reshape(*lead, *out)
    y = jax.lax.dot_general(
        x.reshape(-1, size), kernel.reshape(size, -1), (((1,), (0,)), ((), ())), **dot_kwargs
    )
    return y.reshape(*lead, *out)


def mask_to_bias(mask: jax.Array) -> jax.Array:
    """Returns 0 where mask is True and MASK_VALUE elsewhere (float32, same shape)."""
    return jnp.where(mask, 0.0, MASK_VALUE).astype(jnp.float32)


def project_kv(params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns keys and values [B, S, H, K] of x [B, S, D] (cached once per sequence in decoding)."""
    dtype = x.dtype
    k = dense(x, params["key"].astype(dtype))
    v = dense(x, params["value"].astype(dtype))
    k = layouts.constrain(k, ("batch", "length", "heads", "kv"))
    v = layouts.constrain(v, ("batch", "length", "heads", "kv"))
    return k, v


def project_q(params: Params, x: jax.Array) -> jax.Array:
    """Returns queries [B, T, H, K] of x [B, T, D]."""
    q = dense(x, params["query"].astype(x.dtype))
    return layouts.constrain(q, ("batch", "length", "heads", "kv"))


def attend(
    params: Params,
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: jax.Array | None,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
) -> jax.Array:
    """Returns the attention output [B, T, D] of q [B,T,H,K] over k, v [B,S,H,K] with an additive bias.

    T5 does not scale logits by 1/sqrt(d_kv) (its query init absorbs the factor); the
    softmax runs in float32 whatever the activation dtype.
    """
    dtype = q.dtype
    logits = jnp.einsum("BTHK,BSHK->BHTS", q, k, preferred_element_type=jnp.float32)
    if bias is not None:
        logits = logits + bias  # bias [B|1, H|1, T, S]
    weights = jax.nn.softmax(logits, axis=-1)  # [B, H, T, S]
    weights = dropout(weights, dropout_rate, dropout_rng).astype(dtype)
    out = jnp.einsum("BHTS,BSHK->BTHK", weights, v)
    out = dense(out, params["out"].astype(dtype), contract=2)
    return layouts.constrain(out, ("batch", "length", "embed"))


def attend_cached(
    params: Params, q: jax.Array, keys: jax.Array, values: jax.Array, bias: jax.Array | None
) -> jax.Array:
    """attend() without dropout over a decode cache: keys [B, H, K, S], values [B, H, S, K].

    Both products then read the cache as stored, a [K, S] and an [S, K] block per head, with the
    few query rows on the left (as t5x's decode cache, keys keep the length last). Given [B, S, H, K]
    views, XLA's CPU backend ran the products with the cache as the left or a transposed operand:
    t5-small, batch 8, 256 input tokens, beam 4 (the 4 beams of an input as 4 queries against its
    keys): 1.65 ms per layer and step for the scores and 2 ms for the context.
    """
    dtype = q.dtype
    qh = jnp.swapaxes(q, 1, 2)  # [B, H, T, K]: T is a few rows
    heads = ((0, 1), (0, 1))
    logits = jax.lax.dot_general(qh, keys, (((3,), (2,)), heads), preferred_element_type=jnp.float32)
    if bias is not None:
        logits = logits + bias  # [B, H, T, S]
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    out = jax.lax.dot_general(weights, values, (((3,), (2,)), heads))  # [B, H, T, K]
    out = dense(jnp.swapaxes(out, 1, 2), params["out"].astype(dtype), contract=2)
    return layouts.constrain(out, ("batch", "length", "embed"))


def attend_cached_grouped(
    params: Params, q: jax.Array, keys: jax.Array, values: jax.Array, bias: jax.Array | None
) -> jax.Array:
    """attend_cached() over keys [B, H, S, K] and values [B, H, K, S], its two products run as
    convolutions with one group per (input, head): what decoding's cross-attention uses on one CPU.

    Each (input, head) multiplies a few query rows by its own [K, S] / [S, K] block. As a batched
    dot, XLA's CPU backend runs that as B * H separate small GEMMs; as a 1x1 convolution with
    feature_group_count = B * H (the queries the batch, the cache the per-group kernels) it runs as
    one. t5-small, batch 8, 256 input tokens, six layers, in a 64-step jitted loop (2 cores, idle):
    beam 4 (4 queries an input) 11.4 -> 6.5 ms a step, greedy 3.7 -> 2.6 ms. The merged (input,
    head) axis cannot be laid out over a mesh, so decoding on a mesh keeps attend_cached.
    """
    dtype = q.dtype
    b, t, h, k = q.shape
    s = keys.shape[2]

    def grouped(x: jax.Array, kernel: jax.Array, n_out: int, **kw: Any) -> jax.Array:
        # x [T, B*H, I], kernel [B*H, O, I] -> [T, B*H, O]
        out = jax.lax.conv_general_dilated(
            x.reshape(t, b * h * x.shape[-1], 1), kernel.reshape(b * h * n_out, x.shape[-1], 1), (1,), "VALID",
            dimension_numbers=("NCH", "OIH", "NCH"), feature_group_count=b * h, **kw,
        )  # fmt: skip
        return out.reshape(t, b, h, n_out)

    rows = jnp.transpose(q, (1, 0, 2, 3)).reshape(t, b * h, k)  # [T, B*H, K]
    logits = grouped(rows, keys.astype(dtype), s, preferred_element_type=jnp.float32)  # [T, B, H, S]
    if bias is not None:
        logits = logits + jnp.transpose(bias, (2, 0, 1, 3))  # bias [B, H|1, T|1, S]
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    out = grouped(weights.reshape(t, b * h, s), values.astype(dtype), k)  # [T, B, H, K]
    out = dense(jnp.transpose(out, (1, 0, 2, 3)), params["out"].astype(dtype), contract=2)
    return layouts.constrain(out, ("batch", "length", "embed"))


def attention(
    params: Params,
    x_q: jax.Array,
    x_kv: jax.Array,
    bias: jax.Array | None,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
) -> jax.Array:
    """Returns multi-head attention of x_q [B, T, D] over x_kv [B, S, D] -> [B, T, D]."""
    k, v = project_kv(params, x_kv)
    return attend(
        params, project_q(params, x_q), k, v, bias, dropout_rate=dropout_rate, dropout_rng=dropout_rng
    )


def _activate(h: jax.Array, name: str, gated: bool) -> jax.Array:
    if name == "relu":
        return jax.nn.relu(h)
    # gated-gelu is HF's gelu_new (tanh approximation); plain "gelu" is HF's exact erf GELU.
    return jax.nn.gelu(h, approximate=gated)


def mlp(params: Params, x: jax.Array, config: T5Config, *, dropout_rng: jax.Array | None = None) -> jax.Array:
    """Returns the feed-forward block output [B, T, D]: wo(act(wi x)) or wo(act(wi_0 x) * wi_1 x)."""
    dtype = x.dtype
    if config.is_gated:
        h = _activate(dense(x, params["wi_0"].astype(dtype)), config.activation, True)
        h = h * dense(x, params["wi_1"].astype(dtype))
    else:
        h = _activate(dense(x, params["wi"].astype(dtype)), config.activation, False)
    h = layouts.constrain(h, ("batch", "length", "d_ff"))
    h = dropout(h, config.dropout_rate, dropout_rng)
    out = dense(h, params["wo"].astype(dtype))
    return layouts.constrain(out, ("batch", "length", "embed"))


def adapter(params: Params, x: jax.Array) -> jax.Array:
    """Returns x + up(relu(down(x))) (paper Table 10 adapter layers), [B, T, D]."""
    dtype = x.dtype
    h = jax.nn.relu(dense(x, params["wi"].astype(dtype)))
    return x + dense(h, params["wo"].astype(dtype))
