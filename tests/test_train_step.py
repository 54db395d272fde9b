"""The train step, T5's Adafactor and schedules, and the fine-tuning masks (no data pipeline)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mesh_t5 import finetuning, optim, steps
from mesh_t5.config import T5Config
from mesh_t5.errors import UserError

TINY = T5Config(
    vocab_size=64, d_model=32, d_ff=64, num_heads=2, d_kv=16, num_encoder_layers=2, num_decoder_layers=2,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
)  # fmt: skip


def make_batch(batch_size=4, length=8, seed=0):
    rng = np.random.default_rng(seed)
    inputs = rng.integers(3, TINY.vocab_size, (batch_size, length)).astype(np.int32)
    targets = inputs[:, ::-1].copy()
    targets[:, -1] = 1  # EOS
    targets[-1, -3:] = 0  # some padding
    decoder_inputs = np.concatenate([np.zeros((batch_size, 1), np.int32), targets[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": jnp.asarray(inputs),
        "decoder_input_tokens": jnp.asarray(decoder_inputs),
        "decoder_target_tokens": jnp.asarray(targets),
        "decoder_loss_weights": jnp.asarray((targets > 0).astype(np.int32)),
    }


OPTIMIZER = optim.make_optimizer()
LR = optim.constant_schedule(1e-2)  # one object, so equal settings share a compiled step


@functools.cache
def initial_params(config):
    # Params depend only on the shapes: dropout and dtype variants share one compiled init.
    return jax.device_get(steps.init_state(config, OPTIMIZER, jax.random.key(0))["params"])


@functools.cache
def step_function(config, settings):
    return steps.make_train_step(config, OPTIMIZER, settings)


def fresh_state(config):
    params = initial_params(config.replace(dropout_rate=0.0, dtype="float32"))
    return {"step": jnp.int32(0), "params": params, "opt_state": OPTIMIZER.init(params)}


def run(config, settings, steps=3, batch=None):
    state = fresh_state(config)
    step_fn = step_function(config, settings)
    batch = batch or make_batch()
    history = []
    for _ in range(steps):
        state, metrics = step_fn(state, batch)
        history.append(jax.device_get(metrics))
    return state, history


# ---------------------------------------------------------------------------------- schedules


def test_rsqrt_schedule_is_flat_then_inverse_sqrt():
    schedule = optim.rsqrt_schedule()
    values = [float(schedule(jnp.int32(s))) for s in (0, 5_000, 10_000, 40_000, 2**18)]
    np.testing.assert_allclose(values, [0.01, 0.01, 0.01, 0.005, 2**-9], rtol=1e-6)


def test_constant_schedule():
    assert float(optim.constant_schedule()(jnp.int32(123))) == pytest.approx(1e-3)
    assert float(optim.as_schedule(0.5)(jnp.int32(7))) == 0.5


def test_adafactor_first_step_golden():
    # Step 1: v = g^2 + eps, so the update is sign(g), RMS 1 (no clipping), times the parameter's
    # RMS floored at 1e-3, times -lr (lr applied by the train step).
    tx = optim.make_optimizer()
    params = {"p": jnp.array([3.0, 4.0]), "z": jnp.zeros(3)}
    grads = {"p": jnp.array([1.0, -2.0]), "z": jnp.array([0.5, -0.1, 2.0])}
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["p"], -np.sqrt(12.5) * np.array([1.0, -1.0]), rtol=1e-6)
    np.testing.assert_allclose(updates["z"], -1e-3 * np.array([1.0, -1.0, 1.0]), rtol=1e-6)


def test_adafactor_factors_large_matrices_and_clips_updates():
    tx = optim.make_optimizer()
    params = {"w": jnp.ones((128, 256)), "b": jnp.ones((256,))}
    state = tx.init(params)
    factored = [s for s in jax.tree.leaves(state) if getattr(s, "shape", None) in ((128,), (256,))]
    assert {x.shape for x in factored} >= {(128,), (256,)}
    assert not any(getattr(s, "shape", None) == (128, 256) for s in jax.tree.leaves(state))
    # A gradient with one huge entry: the factored estimate makes the raw update RMS > 1, clipped to 1.
    g = jnp.zeros((128, 256)).at[0, 0].set(100.0) + 1e-3
    updates, _ = tx.update({"w": g, "b": jnp.ones(256)}, state, params)
    rms = float(jnp.sqrt(jnp.mean(jnp.square(updates["w"]))))
    assert rms == pytest.approx(1.0, rel=1e-4)  # clipped to threshold 1.0, times param RMS 1.0


def test_unknown_optimizer_is_one_line():
    with pytest.raises(UserError, match="optimizer 'adam2' is unknown"):
        optim.make_optimizer("adam2")


# --------------------------------------------------------------------------------- train step


def test_loss_falls_when_memorising_one_batch():
    settings = steps.StepSettings(learning_rate=LR)
    _, history = run(TINY, settings, steps=30)
    # Untied logits start with std ~1 (T5 init), so the first loss is a little above log(V).
    assert np.log(TINY.vocab_size) < history[0]["loss"] < np.log(TINY.vocab_size) + 1.5
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[0]["tokens"] == 4 * 8 - 3
    assert history[0]["loss"].dtype == np.float32


def test_microbatches_match_one_batch():
    base = steps.StepSettings(learning_rate=LR)
    one, h1 = run(TINY, base, steps=2)
    two, h2 = run(TINY, steps.StepSettings(learning_rate=LR, num_microbatches=2), steps=2)
    np.testing.assert_allclose(h1[-1]["loss"], h2[-1]["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(one["params"]), jax.tree.leaves(two["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_constant_loss_normalizer_divides_the_sum():
    _, h_tokens = run(TINY, steps.StepSettings(learning_rate=LR), steps=1)
    _, h_const = run(TINY, steps.StepSettings(learning_rate=LR, loss_normalizer=1000.0), steps=1)
    loss_sum = h_tokens[0]["loss"] * h_tokens[0]["tokens"]
    assert h_const[0]["loss"] == pytest.approx(loss_sum / 1000.0, rel=1e-5)


def test_dropout_depends_on_seed_and_step_only():
    config = TINY.replace(dropout_rate=0.3)
    settings = steps.StepSettings(learning_rate=LR, seed=7)
    _, ha = run(config, settings, steps=2)
    _, hb = run(config, settings, steps=2)
    assert ha[-1]["loss"] == hb[-1]["loss"]  # same seed and steps: the same masks
    assert ha[0]["loss"] != ha[1]["loss"]
    no_dropout = run(TINY, steps.StepSettings(learning_rate=LR), steps=1)[1][0]["loss"]
    assert ha[0]["loss"] != no_dropout


def test_bfloat16_activations_keep_float32_loss_and_params():
    state, history = run(TINY.replace(dtype="bfloat16"), steps.StepSettings(learning_rate=LR), steps=2)
    assert history[-1]["loss"].dtype == np.float32 and np.isfinite(history[-1]["loss"])
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state["params"]))


def test_bad_settings_are_one_line():
    with pytest.raises(UserError, match="num_microbatches=3 must be >= 1 and divide batch_size=4"):
        steps.check_settings(steps.StepSettings(num_microbatches=3), TINY, 4)
    with pytest.raises(UserError, match="needs T5Config.adapter_dim > 0"):
        steps.check_settings(steps.StepSettings(finetune_method="adapters"), TINY, 4)
    with pytest.raises(UserError, match="loss_normalizer='mean'"):
        steps.check_settings(steps.StepSettings(loss_normalizer="mean"), TINY, 4)


# ------------------------------------------------------------------------------ fine-tuning


def _changed(before, after):
    flat_b = jax.tree_util.tree_flatten_with_path(before)[0]
    flat_a = jax.tree.leaves(after)
    return {
        finetuning.path_name(p): np.asarray(b) != np.asarray(a)
        for (p, b), a in zip(flat_b, flat_a, strict=True)
    }


def test_adapters_train_only_adapters_and_norms():
    config = TINY.replace(adapter_dim=8)
    before = initial_params(config)
    after, _ = run(config, steps.StepSettings(finetune_method="adapters", learning_rate=LR))
    changed = _changed(before, jax.device_get(after["params"]))
    for name, diff in changed.items():
        trains = "adapter" in name.split("/") or any(p.endswith("norm") for p in name.split("/"))
        if trains:
            assert diff.any(), f"{name} should train"
        else:
            assert not diff.any(), f"{name} changed but is frozen"
    assert any("adapter" in n for n in changed)


def test_gradual_unfreezing_keeps_lower_layers_bitwise_until_their_stage():
    settings = steps.StepSettings(finetune_method="gradual_unfreezing", unfreeze_every=2, learning_rate=LR)
    state = fresh_state(TINY)
    step_fn = step_function(TINY, settings)
    batch = make_batch()
    snapshots = [jax.device_get(state["params"])]
    for _ in range(4):
        state, _ = step_fn(state, batch)
        snapshots.append(jax.device_get(state["params"]))
    stage0 = _changed(snapshots[0], snapshots[2])  # steps 0 and 1: only the top layer of each stack
    for stack in ("encoder", "decoder"):
        name = f"{stack}/layers/mlp/wo" if stack == "encoder" else f"{stack}/layers/self_attention/query"
        assert not stage0[name][0].any() and stage0[name][1].any()
        assert not stage0[f"{stack}/relpos_bias"].any()
        assert stage0[f"{stack}/final_norm/scale"].any()
    assert stage0["token_embedder/embedding"].any() and stage0["logits_dense/kernel"].any()
    stage1 = _changed(snapshots[2], snapshots[4])  # steps 2 and 3: both layers and the bias
    assert stage1["encoder/layers/mlp/wo"][0].any() and stage1["decoder/relpos_bias"].any()


def test_gradual_unfreezing_needs_a_period():
    with pytest.raises(UserError, match="unfreeze_every >= 1"):
        finetuning.check_method("gradual_unfreezing", TINY, None)


def test_progress_prints_plain_lines_when_not_a_tty():
    import io

    from mesh_t5.logging_utils import Progress, format_duration

    stream = io.StringIO()
    # A resumed run (from step 4): its first step gets a line at once, then every 10 steps.
    bar = Progress(total_steps=20, start_step=4, every=10, stream=stream, every_seconds=1e9)
    for step in range(5, 21):
        bar.update(step, loss=2.5 / step, tokens_per_sec=None if step == 5 else 1234.0)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0] == "step 5/20  loss 0.5000"  # no rate or ETA from a window that includes compiling
    assert lines[1].startswith("step 10/20  loss 0.2500  1,234 tokens/s  ETA ")
    assert lines[2].startswith("step 20/20  loss 0.1250") and lines[2].endswith("ETA 0s")
    assert format_duration(3723) == "1h02m03s" and format_duration(65) == "1m05s"


def test_progress_eta_counts_only_this_process_steps(monkeypatch):
    import io

    from mesh_t5 import logging_utils

    clock = [1000.0]
    monkeypatch.setattr(logging_utils.time, "perf_counter", lambda: clock[0])
    bar = logging_utils.Progress(total_steps=1000, start_step=900, every=10, stream=io.StringIO())
    clock[0] += 60.0  # restore and compile: not part of the pace
    bar.update(901, loss=1.0)
    clock[0] += 9.0  # 9 steps in 9 s: 1 s per step, 90 steps left
    bar.update(910, loss=1.0, tokens_per_sec=1.0)
    assert bar.eta(910) == 90.0
    assert bar.stream.getvalue().splitlines()[-1].endswith("ETA 1m30s")
