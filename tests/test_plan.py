"""`mesh-t5 plan`: parameter bytes against the architecture's formula, the activation formula, the CLI."""

import math

import pytest
from conftest import run_script

from mesh_t5 import cli, plan
from mesh_t5.config import REMAT_POLICIES, T5Config, get_model_config
from mesh_t5.errors import UserError


def expected_param_count(c: T5Config) -> int:
    """T5's parameter count written out from the architecture (not from network.py)."""
    d, inner, f, v, buckets = (
        c.d_model,
        c.num_heads * c.d_kv,
        c.d_ff,
        c.vocab_size,
        c.relative_attention_num_buckets,
    )
    attention = 4 * d * inner  # q, k, v, o
    mlp = (3 if c.is_gated else 2) * d * f  # wi (wi_0, wi_1 when gated), wo
    encoder_layer = attention + mlp + 2 * d  # + two RMSNorm scales
    decoder_layer = 2 * attention + mlp + 3 * d  # self and cross attention, three norms
    stacks = c.num_encoder_layers * encoder_layer + c.num_decoder_layers * decoder_layer
    stacks += 2 * (d + buckets * c.num_heads)  # final norms, one relpos table per stack
    embeddings = v * d * (1 if c.tie_word_embeddings else 2)
    return stacks + embeddings


@pytest.mark.parametrize(
    ("name", "mesh"),
    [("t5-3b", "data:64,model:8"), ("t5-11b", "data:16,model:32"), ("t5.1.1-xl", "data:8,model:4")],
)
def test_parameter_bytes_match_the_architecture(name, mesh):
    config = get_model_config(name)
    result = plan.plan_memory(config, mesh)
    count = expected_param_count(config)
    assert result.param_count == count
    assert result.param_bytes == 4 * count
    model = int(mesh.split("model:")[1])
    # Per device: every tensor with heads, d_ff or vocab is split `model` ways; the norms stay whole.
    d, L = config.d_model, config.num_encoder_layers
    norms = L * 2 * d + L * 3 * d + 2 * d
    assert result.param_bytes_per_device == 4 * ((count - norms) // model + norms)


def test_known_sizes():
    # The published sizes of the released checkpoints (Hugging Face's t5-3b / t5-11b counts).
    assert plan.plan_memory(get_model_config("t5-3b"), "data:64,model:8").param_count == 2_851_598_336
    assert (
        round(plan.plan_memory(get_model_config("t5-11b"), "data:16,model:32").param_count / 1e9, 1) == 11.3
    )


def test_adafactor_state_is_factored():
    result = plan.plan_memory(get_model_config("t5-11b"), "data:16,model:32")
    # Factored second moments are rows + columns, not the full matrices: far below 1% of the parameters.
    assert 0 < result.optimizer_bytes < 0.01 * result.param_bytes
    # The largest v_col [24, 65536] of each of the 4 FFN kernels is split on d_ff over model:32.
    assert result.optimizer_bytes_per_device < result.optimizer_bytes / 16


def test_activation_formula_on_a_hand_counted_case():
    c = T5Config(
        vocab_size=100, d_model=4, d_ff=8, num_heads=2, d_kv=3, num_encoder_layers=1, num_decoder_layers=1,
        dropout_rate=0.0, feed_forward_proj="relu", dtype="bfloat16",
    )  # fmt: skip
    B, S, T, D, H, K, F, V = 2, 5, 3, 4, 2, 3, 8, 100
    encoder = B * S * D + 4 * B * S * D + 4 * B * S * H * K + B * H * S * S + 2 * B * S * F
    decoder = B * T * D + 4 * B * T * D + 4 * B * T * H * K + B * H * T * T + 2 * B * T * F
    decoder += 2 * B * T * D + 2 * B * T * H * K + 2 * B * S * H * K + B * H * T * S
    expected = 2 * (encoder + decoder) + 4 * 2 * B * T * V  # bfloat16 activations, float32 logits
    tensors = plan.activation_tensors(c, B, S, T, remat="none")
    assert sum(t.bytes_total() for t in tensors) == expected
    # On data:2,model:2 every activation has the batch split in 2; heads, d_ff and vocab split again.
    result = plan.plan_memory(c, "data:2,model:2", batch_size=B, input_length=S, target_length=T)
    split_by_model = 4 * B * S * H * K + B * H * S * S + 2 * B * S * F + 4 * B * T * H * K + B * H * T * T
    split_by_model += 2 * B * T * F + 2 * B * T * H * K + 2 * B * S * H * K + B * H * T * S
    whole = encoder + decoder - split_by_model
    assert (
        result.activation_bytes_per_device["none"]
        == 2 * (whole // 2 + split_by_model // 4) + 4 * 2 * B * T * V // 4
    )


def test_remat_keeps_layer_inputs_plus_one_layer():
    c = get_model_config("t5-3b")
    full = plan.plan_memory(c, "data:64,model:8").activation_bytes_per_device
    assert full["full"] < full["minimal"] < full["dots"] < full["none"] and full["full"] < full["none"] / 5
    assert (
        plan.plan_memory(c.replace(dropout_rate=0.0), "data:64,model:8").activation_bytes_per_device["none"]
        < full["none"]
    )


def test_minimal_remat_drops_all_but_one_layers_attention_and_activations():
    """Hand count: "minimal" keeps, per layer, the input and the unbatched matmul outputs only."""
    c = T5Config(
        vocab_size=100, d_model=4, d_ff=8, num_heads=2, d_kv=3, num_encoder_layers=3, num_decoder_layers=3,
        dropout_rate=0.0, feed_forward_proj="relu",
    )  # fmt: skip
    B, S, T, D, H, K, F = 2, 5, 3, 4, 2, 3, 8
    # Recomputed in the backward: normed inputs, attention context and scores, the ReLU's output.
    encoder = 2 * B * S * D + B * S * H * K + B * H * S * S + B * S * F
    decoder = (
        2 * B * T * D + B * T * H * K + B * H * T * T + B * T * F + B * T * D + B * T * H * K + B * H * T * S
    )
    total = {
        p: sum(t.bytes_total() for t in plan.activation_tensors(c, B, S, T, remat=p)) for p in REMAT_POLICIES
    }
    assert total["none"] - total["minimal"] == 4 * 2 * (encoder + decoder)  # float32, 3 - 1 layers each
    # "full" keeps only the input of each layer: all else of 3 - 1 layers per stack is recomputed.
    encoder_layer = 3 * B * S * D + 4 * B * S * H * K + B * H * S * S + 2 * B * S * F
    decoder_layer = 3 * B * T * D + 4 * B * T * H * K + B * H * T * T + 2 * B * T * F
    decoder_layer += 2 * B * T * D + 2 * B * T * H * K + 2 * B * S * H * K + B * H * T * S
    assert total["none"] - total["full"] == 4 * 2 * (encoder_layer + decoder_layer)


def test_fit_verdict_follows_device_memory():
    result = plan.plan_memory(get_model_config("t5-11b"), "data:16,model:32", device_memory="16GiB")
    assert all(result.fits(policy) for policy in REMAT_POLICIES)
    small = plan.plan_memory(get_model_config("t5-11b"), "data:512", batch_size=512, device_memory="16GiB")
    assert small.param_bytes_per_device == small.param_bytes and not small.fits("full")  # 42 GiB of weights
    assert plan.parse_bytes("16GiB") == 16 * 2**30 and plan.parse_bytes("1.5GB") == 1_500_000_000
    with pytest.raises(UserError, match="16 gigs"):
        plan.parse_bytes("16 gigs")


def test_plan_command_prints_the_report(capsys):
    argv = ["plan", "--gin_file=models/t5_11B.gin", "--mesh_shape=data:16,model:32", "--device_memory=16GiB"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "11,307,321,344 parameters" in out and "512 devices" in out
    assert "total, remat full " in out and "(37%)   <- T5Config.remat" in out
    assert "fits in 16.00 GiB" in out
    assert cli.main(["plan", "--model=t5-3b", "--mesh_shape=data:2,model:3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mesh-t5 plan: error: mesh model:3 does not divide") and "\n" not in err
    assert (
        cli.main(["plan", "--model=t5-3b", "--mesh_shape=data:64,model:8", "--gin.T5Config.dtype='bfloat16'"])
        == 0
    )
    assert "activations bfloat16" in capsys.readouterr().out


def test_plan_11b_runs_in_seconds_without_touching_devices():
    # A fresh process: nothing allocates 45 GB, and jax.devices() (1 CPU here) does not limit a 512-way plan.
    out = run_script("plan_11b.py", timeout=120)
    assert out.returncode == 0, out.stderr
    seconds = float(out.stdout.split("SECONDS")[1])
    assert seconds < 30 and math.isfinite(seconds)
