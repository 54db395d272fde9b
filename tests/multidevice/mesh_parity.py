"""Run in a subprocess with 8 fake CPU devices: every mesh case against the single-device run.

Usage: python tests/multidevice/mesh_parity.py OUT.json TMPDIR
(XLA_FLAGS=--xla_force_host_platform_device_count=8 is set here, before jax is imported.)
Writes, per mesh: max |difference| of loss, gradients, parameters after one train step and
greedy decode scores against one device, whether the decoded tokens are identical, and the
PartitionSpecs the parameters and optimizer slots got; plus the checkpoint round trip
data:2,model:4 → data:8. The pytest side (tests/test_sharded.py) asserts on the numbers.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import functools
import json
import sys

import jax
import numpy as np

from mesh_t5 import inference, layouts, network, optim, steps
from mesh_t5.config import DecodeOptions, T5Config

# Compile time dominates on a tiny model: skip most XLA optimisations (both sides alike).
jax.config.update("jax_disable_most_optimizations", True)

# heads, d_ff and vocab divisible by 8; dims >= 32 so Adafactor factors (min_dim_size_to_factor=32).
CONFIG = T5Config(
    vocab_size=256, d_model=32, d_ff=64, num_heads=8, d_kv=4, num_encoder_layers=2, num_decoder_layers=2,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
)  # fmt: skip
MESHES = ("data:8", "model:8", "data:2,model:4", "data:4,model:2")
DECODE_LENGTH = 6


def make_batch(
    batch_size: int = 8, inputs_length: int = 12, targets_length: int = 7
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    inputs = rng.integers(3, CONFIG.vocab_size, (batch_size, inputs_length)).astype(np.int32)
    inputs[::3, -4:] = 0  # some padded inputs
    targets = rng.integers(3, CONFIG.vocab_size, (batch_size, targets_length)).astype(np.int32)
    targets[:, -1] = 1
    targets[1::2, -3:] = 0
    decoder_inputs = np.concatenate([np.zeros((batch_size, 1), np.int32), targets[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": inputs,
        "decoder_input_tokens": decoder_inputs,
        "decoder_target_tokens": targets,
        "decoder_loss_weights": (targets > 0).astype(np.int32),
    }


def loss_fn(params, batch):
    loss_sum, stats = steps.loss_and_stats(params, batch, CONFIG)
    return loss_sum / stats["weight_sum"]


def run(layout: layouts.Layout | None, optimizer, batch_np):
    """Returns numpy results of: init, loss + grads, one train step, greedy decode."""
    settings = steps.StepSettings(z_loss=0.0)
    state = steps.init_state(CONFIG, optimizer, jax.random.key(0), layout)
    batch = steps.to_device(batch_np, layout)

    def traced(fn):
        def inner(*args):
            with layouts.use_layout(layout):
                return fn(*args)

        return inner

    if layout is None:
        loss_and_grads = jax.jit(traced(jax.value_and_grad(loss_fn)))
    else:
        p_shardings = layout.tree_shardings(network.param_axes(CONFIG))
        b_sharding = layout.sharding(("batch", "length"))
        loss_and_grads = jax.jit(
            traced(jax.value_and_grad(loss_fn)),
            in_shardings=(p_shardings, b_sharding),
            out_shardings=(layout.replicated, p_shardings),
        )
    loss, grads = loss_and_grads(state["params"], batch)
    # The public decoding path: jitted under the layout, parameters as laid out.
    tokens, scores = inference.generate_tokens_and_scores(
        CONFIG,
        [state["params"]],
        batch_np["encoder_input_tokens"],
        DecodeOptions(max_decode_length=DECODE_LENGTH),
        layout=layout,
    )
    specs = {
        "params": {
            jax.tree_util.keystr(p): str(x.sharding.spec) if layout is not None else ""
            for p, x in jax.tree_util.tree_flatten_with_path(state["params"])[0]
        },
        "opt_state": {
            jax.tree_util.keystr(p): str(x.sharding.spec) if layout is not None else ""
            for p, x in jax.tree_util.tree_flatten_with_path(state["opt_state"])[0]
        },
    }
    step_fn = steps.make_train_step(CONFIG, optimizer, settings, layout)
    new_state, metrics = step_fn(state, batch)
    return {
        "loss": float(loss),
        "grads": jax.device_get(grads),
        "params_after": jax.device_get(new_state["params"]),
        "step_loss": float(metrics["loss"]),
        "tokens": np.asarray(jax.device_get(tokens)),
        "scores": np.asarray(jax.device_get(scores)),
        "specs": specs,
        "state": new_state,
    }


def max_diff(a, b) -> float:
    return float(
        max(
            np.max(np.abs(np.asarray(x) - np.asarray(y)))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )
    )


def checkpoint_roundtrip(optimizer, state, tmpdir: str) -> dict:
    """Saves a data:2,model:4 state, restores it onto data:8; returns differences and specs."""
    from mesh_t5 import checkpoints

    store = checkpoints.CheckpointStore(os.path.join(tmpdir, "run"))
    store.save(1, state, {"mesh": "data:2,model:4"})
    store.wait()
    target = layouts.make_layout("data:8")
    restored, meta = store.restore(
        1, steps.abstract_state(CONFIG, optimizer), steps.state_shardings(CONFIG, optimizer, target)
    )
    store.close()
    wi = restored["params"]["encoder"]["layers"]["mlp"]["wi_0"]
    return {
        "max_diff": max_diff(jax.device_get(state), jax.device_get(restored)),
        "meta": meta,
        "wi_spec_saved": str(state["params"]["encoder"]["layers"]["mlp"]["wi_0"].sharding.spec),
        "wi_spec_restored": str(wi.sharding.spec),
        "restored_mesh": dict(wi.sharding.mesh.shape),
    }


def main(out_path: str, tmpdir: str) -> None:
    assert jax.device_count() == 8, jax.devices()
    optimizer = optim.make_optimizer(min_dim_size_to_factor=32)
    batch = make_batch()
    reference = run(None, optimizer, batch)
    results = {"reference": {"loss": reference["loss"], "tokens": reference["tokens"].tolist()}, "meshes": {}}
    saved = None
    for mesh in MESHES:
        layout = layouts.make_layout(mesh)
        got = run(layout, optimizer, batch)
        results["meshes"][mesh] = {
            "loss": abs(got["loss"] - reference["loss"]),
            "step_loss": abs(got["step_loss"] - reference["step_loss"]),
            "grads": max_diff(got["grads"], reference["grads"]),
            "params_after": max_diff(got["params_after"], reference["params_after"]),
            "scores": float(np.max(np.abs(got["scores"] - reference["scores"]))),
            "tokens_equal": bool(np.array_equal(got["tokens"], reference["tokens"])),
            "specs": got["specs"],
        }
        if mesh == "data:2,model:4":
            saved = got["state"]
    # Parameters born sharded equal the single-device init (partitionable threefry).
    init = functools.partial(network.init_params, CONFIG)
    sharded = layouts.init_sharded(
        init, network.param_axes(CONFIG), layouts.make_layout("data:2,model:4"), jax.random.key(7)
    )
    results["init_sharded_diff"] = max_diff(sharded, jax.jit(init)(jax.random.key(7)))
    results["checkpoint"] = checkpoint_roundtrip(optimizer, saved, tmpdir)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
