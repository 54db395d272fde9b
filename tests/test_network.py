"""Network pieces: parameter tree and axes, init scales, relative position buckets, loss, dtypes, dropout."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import jitted_forward, run_script, tiny_config, tiny_params

from mesh_t5 import layers, losses, network


def _shapes(config):
    return jax.eval_shape(lambda: network.init_params(config, jax.random.PRNGKey(0)))


@pytest.mark.parametrize("arch", ["encoder_decoder", "shared_encoder_decoder", "decoder_only", "prefix_lm"])
def test_param_tree_matches_internals_and_axes(arch: str) -> None:
    config = tiny_config(architecture=arch, adapter_dim=8, num_encoder_layers=2, num_decoder_layers=2)
    shapes, axes = _shapes(config), network.param_axes(config)
    flat_shapes = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(shapes)}
    flat_axes = {
        jax.tree_util.keystr(k): v
        for k, v in jax.tree_util.tree_leaves_with_path(axes, is_leaf=lambda x: isinstance(x, tuple))
    }
    assert flat_shapes.keys() == flat_axes.keys()
    for name, shape in flat_shapes.items():
        assert len(shape) == len(flat_axes[name]), name
    dec = "['decoder']['layers']"
    assert flat_shapes["['token_embedder']['embedding']"] == (64, 32)
    assert flat_shapes["['decoder']['relpos_bias']"] == (32, 4)
    assert flat_shapes["['logits_dense']['kernel']"] == (32, 64)
    if arch == "shared_encoder_decoder":  # the decoder reuses the encoder's self-attention and mlp
        assert set(shapes["decoder"]["layers"]) == {"cross_attention", "cross_attention_norm"}
    if arch in ("decoder_only", "prefix_lm"):
        assert not any("encoder" in k or "cross" in k for k in flat_shapes)
    else:
        enc = "['encoder']['layers']"
        assert flat_shapes[enc + "['attention']['query']"] == (2, 32, 4, 8)
        assert flat_axes[enc + "['attention']['out']"] == ("layers", "heads", "kv", "embed")
        assert flat_shapes[enc + "['adapter']['wi']"] == (2, 32, 8)
        assert flat_shapes[dec + "['cross_attention']['key']"] == (2, 32, 4, 8)
    assert "['logits_dense']['kernel']" not in {
        jax.tree_util.keystr(k)
        for k, _ in jax.tree_util.tree_leaves_with_path(_shapes(config.replace(tie_word_embeddings=True)))
    }


def test_init_scales_follow_t5() -> None:
    config = tiny_config()  # d_model 32, d_kv 8, heads 4, d_ff 64
    for p in (jax.jit(lambda r: network.init_params(config, r))(jax.random.PRNGKey(0)), tiny_params(config)):
        _check_scales(p)


def _check_scales(p) -> None:
    attn, mlp = p["encoder"]["layers"]["attention"], p["encoder"]["layers"]["mlp"]
    for value, std in (
        (p["token_embedder"]["embedding"], 1.0),
        (attn["query"], (32 * 8) ** -0.5),
        (attn["key"], 32**-0.5),
        (attn["out"], 32**-0.5),
        (mlp["wi_0"], 32**-0.5),
        (mlp["wo"], 64**-0.5),
        (p["logits_dense"]["kernel"], 32**-0.5),
    ):
        assert abs(float(jnp.std(value)) / std - 1) < 0.1
    np.testing.assert_array_equal(p["decoder"]["final_norm"]["scale"], np.ones(32))
    np.testing.assert_array_equal(p["encoder"]["layers"]["mlp_norm"]["scale"], np.ones((2, 32)))


def test_relative_position_buckets_golden() -> None:
    rel = jnp.array([0, 1, -1, 7, -7, 8, -8, 15, 16, -16, 127, -127, 128, -1000, 1000])
    bidir = layers.relative_position_bucket(rel, bidirectional=True)
    causal = layers.relative_position_bucket(rel, bidirectional=False)
    # Bidirectional: 16 buckets per sign, exact below 8, log-spaced to 128; positive offsets + 16.
    np.testing.assert_array_equal(bidir, [0, 17, 1, 23, 7, 24, 8, 25, 26, 10, 31, 15, 31, 15, 31])
    # Causal: future offsets share bucket 0; exact below 16, log-spaced to 128.
    np.testing.assert_array_equal(causal, [0, 0, 1, 0, 7, 0, 8, 0, 0, 16, 0, 31, 0, 31, 0])


def test_relative_position_buckets_match_transformers() -> None:
    torch = pytest.importorskip("torch")
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    rel = np.arange(-300, 301)
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (16, 40)):
            theirs = t5.T5Attention._relative_position_bucket(
                torch.tensor(rel), bidirectional, buckets, distance
            )
            ours = layers.relative_position_bucket(
                jnp.asarray(rel), bidirectional=bidirectional, num_buckets=buckets, max_distance=distance
            )
            np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


def test_cross_entropy_matches_numpy_and_t5x_definitions() -> None:
    rng = np.random.RandomState(0)
    logits = rng.randn(2, 3, 5).astype(np.float32)
    targets = rng.randint(0, 5, size=(2, 3))
    weights = np.array([[1, 1, 0], [1, 0.5, 1]], np.float32)
    log_z = np.log(np.exp(logits).sum(-1))
    nll = log_z - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    loss, aux = losses.cross_entropy(logits, targets, weights)
    np.testing.assert_allclose(float(loss), (nll * weights).sum(), rtol=1e-6)
    assert float(aux["weight_sum"]) == 4.5
    assert float(aux["correct"]) == ((logits.argmax(-1) == targets) * weights).sum()
    loss_z, aux_z = losses.cross_entropy(logits, targets, weights, z_loss=1e-2)
    np.testing.assert_allclose(float(aux_z["z_loss"]), (1e-2 * log_z**2 * weights).sum(), rtol=1e-5)
    np.testing.assert_allclose(float(loss_z), float(loss) + float(aux_z["z_loss"]), rtol=1e-6)
    # Label smoothing: the loss is the KL to the smoothed targets, 0 when logits reproduce them.
    s = 0.1
    soft = np.full((1, 1, 5), s / 4, np.float32)
    soft[0, 0, 2] = 1 - s
    zero, _ = losses.cross_entropy(np.log(soft), np.array([[2]]), np.ones((1, 1)), label_smoothing=s)
    assert abs(float(zero)) < 1e-5
    smoothed, _ = losses.cross_entropy(logits, targets, weights, label_smoothing=s)
    onehot = np.eye(5)[targets] * (1 - s) + (1 - np.eye(5)[targets]) * s / 4
    kl = (onehot * (np.log(onehot) - (logits - log_z[..., None]))).sum(-1)
    np.testing.assert_allclose(float(smoothed), (kl * weights).sum(), rtol=1e-5)


def _batch() -> dict[str, np.ndarray]:
    rng = np.random.RandomState(5)
    return {
        "encoder_input_tokens": rng.randint(2, 64, size=(2, 7)).astype(np.int32),
        "decoder_input_tokens": rng.randint(2, 64, size=(2, 5)).astype(np.int32),
    }


def test_bfloat16_activations_are_close_to_float32() -> None:
    config = tiny_config()
    params = tiny_params(config)
    f32 = np.asarray(jitted_forward(config)(params, _batch()))
    bf16_config = config.replace(dtype="bfloat16")
    bf16 = jitted_forward(bf16_config)(params, _batch())
    assert bf16.dtype == jnp.float32
    bf16 = np.asarray(bf16)
    assert np.abs(bf16 - f32).max() < 0.1 * np.abs(f32).max()
    assert np.abs(bf16 - f32).max() > 0  # really computed in bfloat16


def test_dropout_only_with_an_rng_and_adapter_starts_as_identity() -> None:
    config = tiny_config(dropout_rate=0.3)
    base = tiny_config()  # same shapes, so the same host-drawn parameters
    params = tiny_params(base)
    batch = _batch()
    fwd = jax.jit(lambda p, b, r: network.forward(p, b, config, dropout_rng=r))
    eval_logits = np.asarray(jitted_forward(base)(params, batch))
    a, b = (np.asarray(fwd(params, batch, jax.random.PRNGKey(i))) for i in (1, 2))
    assert np.abs(a - eval_logits).max() > 1e-2 and np.abs(a - b).max() > 1e-2
    np.testing.assert_array_equal(a, np.asarray(fwd(params, batch, jax.random.PRNGKey(1))))
    # Adapters (wo = 0 at init) leave a pre-trained network's function unchanged.
    with_adapter = base.replace(adapter_dim=4)
    adapter_params = tiny_params(with_adapter, seed=9)
    merged = jax.tree.map(lambda x: x, params)
    for stack in ("encoder", "decoder"):
        merged[stack]["layers"]["adapter"] = adapter_params[stack]["layers"]["adapter"]
    np.testing.assert_allclose(
        np.asarray(jitted_forward(with_adapter)(merged, batch)), eval_logits, atol=1e-5
    )


def test_dropout_keep_mask_rate_independence_and_determinism() -> None:
    shape = (4, 8, 128, 256)  # 1,048,576 draws: the keep fraction's std is ~3e-4
    mask_of = jax.jit(lambda key: layers.dropout_keep_mask(key, shape, 0.1))
    a = np.asarray(mask_of(jax.random.PRNGKey(0)))
    assert abs(a.mean() - 0.9) < 2e-3
    np.testing.assert_array_equal(a, np.asarray(mask_of(jax.random.PRNGKey(0))))
    b = np.asarray(mask_of(jax.random.PRNGKey(1)))
    # Independent masks agree on 0.9^2 + 0.1^2 = 82% of the elements, neighbours likewise.
    assert abs((a == b).mean() - 0.82) < 3e-3
    flat = a.reshape(-1)
    assert abs((flat[1:] == flat[:-1]).mean() - 0.82) < 3e-3
    rows = a.reshape(-1, 256).mean(axis=1)  # per-row rates spread like a binomial's (std 0.019)
    assert 0.012 < rows.std() < 0.026


def test_remat_policies_give_the_same_gradients() -> None:
    config = tiny_config(num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.1)
    params = tiny_params(config)
    batch = _batch()

    def loss(p, cfg, rng):
        logits = network.forward(p, batch, cfg, dropout_rng=rng)
        return losses.cross_entropy(logits, batch["decoder_input_tokens"], None)[0]

    rng = jax.random.key(3)  # with dropout: the recomputed masks must be the ones drawn forward
    plain = jax.grad(loss)(params, config.replace(remat="none"), rng)
    for policy in ("full", "minimal", "dots"):
        remat = jax.grad(loss)(params, config.replace(remat=policy), rng)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), plain, remat)


def test_sharded_init_and_logits_on_a_fake_8_device_mesh() -> None:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = run_script("sharded_init_logits.py", env=env, timeout=600)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
