"""Cached decoding (init_decode_cache / prefill / decode_step) equals the uncached forward pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import jaxpr_eqns, jitted_forward, tiny_config, tiny_params

from mesh_t5 import network


def _step_fn(config):
    return jax.jit(lambda p, c, t: network.decode_step(p, c, t, config))


@pytest.mark.parametrize("arch", ["encoder_decoder", "shared_encoder_decoder"])
def test_encoder_decoder_cached_steps_equal_forward(arch: str) -> None:
    config = tiny_config(
        architecture=arch, num_encoder_layers=2, num_decoder_layers=2, tie_word_embeddings=True
    )
    params = tiny_params(config)
    rng = np.random.RandomState(0)
    enc = rng.randint(2, 64, size=(2, 9)).astype(np.int32)
    enc[1, 5:] = 0
    dec = np.concatenate([np.zeros((2, 1), np.int32), rng.randint(2, 64, size=(2, 5))], axis=1).astype(
        np.int32
    )
    full = np.asarray(
        jitted_forward(config)(params, {"encoder_input_tokens": enc, "decoder_input_tokens": dec})
    )
    cache = network.init_decode_cache(params, config, encoder_input_tokens=enc, max_decode_length=8)
    for path, leaf in jax.tree.leaves_with_path(cache):  # the documented batch axis
        assert leaf.ndim == 0 or leaf.shape[network.CACHE_BATCH_AXIS] == 2, jax.tree_util.keystr(path)
    assert len(cache["layers"]) == config.num_decoder_layers
    step = _step_fn(config)
    for t in range(dec.shape[1]):
        logits, cache = step(params, cache, jnp.asarray(dec[:, t]))
        np.testing.assert_allclose(np.asarray(logits), full[:, t], atol=1e-5, rtol=0)
    assert int(cache["index"]) == dec.shape[1]


def test_reordering_the_cache_batch_axis_reorders_the_logits() -> None:
    """Beam search gathers every rank >= 1 leaf on CACHE_BATCH_AXIS; decoding must follow."""
    config = tiny_config()
    params = tiny_params(config)
    enc = np.random.RandomState(1).randint(2, 64, size=(3, 6)).astype(np.int32)
    cache = network.init_decode_cache(params, config, encoder_input_tokens=enc, max_decode_length=4)
    step = _step_fn(config)
    _, cache = step(params, cache, jnp.zeros((3,), jnp.int32))
    order = np.array([2, 0, 1])
    gathered = jax.tree.map(
        lambda x: x if x.ndim == 0 else jnp.take(x, order, axis=network.CACHE_BATCH_AXIS), cache
    )
    tokens = np.array([5, 9, 11], np.int32)
    direct_tokens = np.empty_like(tokens)
    direct_tokens[order] = tokens  # row order[i] of the original cache gets the token of new row i
    direct, _ = step(params, cache, jnp.asarray(direct_tokens))
    reordered, _ = step(params, gathered, jnp.asarray(tokens))
    np.testing.assert_allclose(np.asarray(reordered), np.asarray(direct)[order], atol=1e-6)
    assert not np.allclose(np.asarray(reordered), np.asarray(direct), atol=1e-3)


@pytest.mark.parametrize("arch", ["decoder_only", "prefix_lm"])
def test_prefill_with_ragged_prompts_then_steps_equal_forward(arch: str) -> None:
    config = tiny_config(architecture=arch, num_decoder_layers=3)
    params = tiny_params(config)
    rng = np.random.RandomState(2)
    seqs = rng.randint(2, 64, size=(3, 8)).astype(np.int32)
    lengths = np.array([4, 1, 2], np.int32)
    prompts = np.where(np.arange(4)[None] < lengths[:, None], seqs[:, :4], 0).astype(np.int32)
    # Reference: each row run uncached; for prefix_lm its own prompt is the fully visible prefix.
    batch = {"decoder_input_tokens": seqs}
    if arch == "prefix_lm":
        batch["decoder_causal_attention"] = (np.arange(8)[None] < lengths[:, None]).astype(np.int32)
    full = np.asarray(jitted_forward(config)(params, batch))
    cache = network.init_decode_cache(params, config, batch_size=3, max_decode_length=10)
    cache, last = network.prefill(params, cache, jnp.asarray(prompts), jnp.asarray(lengths), config)
    np.testing.assert_array_equal(np.asarray(last), seqs[np.arange(3), lengths - 1])
    step = _step_fn(config)
    tokens = np.asarray(last)
    for s in range(4):
        logits, cache = step(params, cache, jnp.asarray(tokens))
        expected = full[np.arange(3), lengths - 1 + s]
        np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5, rtol=0)
        tokens = seqs[np.arange(3), lengths + s]


@pytest.mark.parametrize("arch", ["encoder_decoder", "shared_encoder_decoder"])
def test_unstacked_decoder_params_decode_identically(arch: str) -> None:
    config = tiny_config(architecture=arch, num_encoder_layers=3, num_decoder_layers=3)
    params = tiny_params(config)
    unstacked = network.unstack_decoder_layers(params, config)
    assert len(unstacked["decoder"]["layers"]) == 3
    assert network.unstack_decoder_layers(unstacked, config) is unstacked
    enc = np.random.RandomState(3).randint(2, 64, size=(2, 7)).astype(np.int32)
    step = _step_fn(config)
    caches = [
        network.init_decode_cache(p, config, encoder_input_tokens=enc, max_decode_length=4)
        for p in (params, unstacked)
    ]
    tokens = jnp.zeros((2,), jnp.int32)
    for t in range(3):
        (a, caches[0]), (b, caches[1]) = step(params, caches[0], tokens), step(unstacked, caches[1], tokens)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        tokens = jnp.asarray([5 + t, 9], jnp.int32)


def _while_operand_shapes(jaxpr) -> list[tuple[int, ...]]:
    """Shapes of every operand of every while loop in jaxpr, nested calls included."""
    return [tuple(v.aval.shape) for e in jaxpr_eqns(jaxpr) if e.primitive.name == "while" for v in e.invars]


def test_decode_loop_gets_per_layer_weights_not_stacked_ones() -> None:
    """inference's decode loop must take each layer's weights as loop constants: given the stacked
    [L, ...] weights, XLA slices (copies) every layer's weights inside the loop on every step."""
    import functools

    from mesh_t5 import inference
    from mesh_t5.config import DecodeOptions

    config = tiny_config(num_decoder_layers=3)
    params = tiny_params(config)
    stacked = {tuple(a.shape) for a in jax.tree.leaves(params["decoder"]["layers"])}
    per_layer = {s[1:] for s in stacked}
    decode = functools.partial(inference.decode, config=config, options=DecodeOptions(max_decode_length=5))
    enc = jnp.ones((2, 6), jnp.int32)
    shapes = set(_while_operand_shapes(jax.make_jaxpr(decode)((params,), enc, jax.random.key(0)).jaxpr))
    assert per_layer & shapes, "the per-layer weights should enter the loop"
    assert not stacked & shapes, f"stacked decoder weights enter the decode loop: {sorted(stacked & shapes)}"


def test_grouped_cross_attention_equals_the_batched_products() -> None:
    # One CPU device builds the cross-attention cache for layers.attend_cached_grouped (the products as
    # grouped convolutions over keys [B, H, S, K] / values [B, H, K, S]); a mesh keeps attend_cached's
    # layout. Both give the same attention, with padding masked and several queries per input (beams).
    from mesh_t5 import layers, layouts

    rng = np.random.default_rng(0)
    b, t, h, k, s, d = 3, 4, 2, 8, 5, 16
    q = jnp.asarray(rng.standard_normal((b, t, h, k)), jnp.float32)
    keys = jnp.asarray(rng.standard_normal((b, h, k, s)), jnp.float32)  # attend_cached's layouts
    values = jnp.asarray(rng.standard_normal((b, h, s, k)), jnp.float32)
    params = {"out": jnp.asarray(rng.standard_normal((h, k, d)), jnp.float32)}
    mask = np.ones((b, s), bool)
    mask[1, 3:] = False
    bias = layers.mask_to_bias(jnp.asarray(mask)[:, None, None, :])
    want = layers.attend_cached(params, q, keys, values, bias)
    got = layers.attend_cached_grouped(params, q, jnp.swapaxes(keys, 2, 3), jnp.swapaxes(values, 2, 3), bias)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    bf = [x.astype(jnp.bfloat16) for x in (q, keys, values)]  # bfloat16 activations: logits in float32
    want = layers.attend_cached(params, *bf, bias)
    got = layers.attend_cached_grouped(
        params, bf[0], jnp.swapaxes(bf[1], 2, 3), jnp.swapaxes(bf[2], 2, 3), bias
    )
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=0.02, atol=0.05
    )
    assert network.cross_attention_grouped(2)  # this CPU, no layout in force
    config = tiny_config()
    enc = rng.integers(2, 64, size=(2, 6)).astype(np.int32)
    cache = network.init_decode_cache(
        tiny_params(config), config, encoder_input_tokens=enc, max_decode_length=3
    )
    assert {"grouped_keys", "grouped_values"} <= set(cache["encoder"].value)
    assert cache["encoder"].value["grouped_keys"][0].shape == (2, config.num_heads, 6, config.d_kv)
    with layouts.use_layout(layouts.make_layout("data:1")):
        assert not network.cross_attention_grouped(2)
    assert not network.cross_attention_grouped(jax.export.symbolic_shape("b")[0])  # an exported model's batch
