"""A few train steps as one of several jax.distributed processes on localhost, or as a single process.

Usage:
  python multiprocess_train.py OUT.json                       # single process, one device, no mesh
  MESH_T5_COORDINATOR_ADDRESS=localhost:PORT MESH_T5_NUM_PROCESSES=2 MESH_T5_PROCESS_ID=I \\
      python multiprocess_train.py OUT.json                   # one of 2 processes, 2 CPU devices each
In the multi-process case the mesh is data:2,model:2: the data axis spans the processes (each
feeds its own half of every global batch, as `layouts.process_batch_shard` says), the model
axis stays within a process. Process 0 writes the losses and parameter checksums to OUT.json.
"""

from __future__ import annotations

import os

MULTI = bool(os.environ.get("MESH_T5_NUM_PROCESSES"))
if MULTI:
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_disable_most_optimizations", True)  # tiny model: compile time dominates
jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process collectives on CPU

from mesh_t5 import distributed, layouts, optim, steps  # noqa: E402
from mesh_t5.config import T5Config  # noqa: E402

CONFIG = T5Config(
    vocab_size=128, d_model=32, d_ff=64, num_heads=4, d_kv=8, num_encoder_layers=1, num_decoder_layers=1,
    feed_forward_proj="relu", tie_word_embeddings=True, dropout_rate=0.0,
)  # fmt: skip
GLOBAL_BATCH, STEPS = 8, 3


def global_batch(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(step)
    inputs = rng.integers(3, CONFIG.vocab_size, (GLOBAL_BATCH, 10)).astype(np.int32)
    targets = rng.integers(3, CONFIG.vocab_size, (GLOBAL_BATCH, 6)).astype(np.int32)
    targets[:, -1] = 1
    targets[::3, -2:] = 0
    decoder_inputs = np.concatenate([np.zeros((GLOBAL_BATCH, 1), np.int32), targets[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": inputs,
        "decoder_input_tokens": decoder_inputs,
        "decoder_target_tokens": targets,
        "decoder_loss_weights": (targets > 0).astype(np.int32),
    }


def main(out_path: str) -> None:
    started = distributed.initialize()
    assert started == MULTI, (started, MULTI)
    layout = layouts.make_layout("data:2,model:2") if MULTI else None
    index, count = layouts.process_batch_shard(layout) if MULTI else (0, 1)
    optimizer = optim.make_optimizer(min_dim_size_to_factor=32)
    state = steps.init_state(CONFIG, optimizer, jax.random.key(0), layout)
    step_fn = steps.make_train_step(CONFIG, optimizer, steps.StepSettings(z_loss=0.0), layout)
    losses = []
    for step in range(STEPS):
        rows = GLOBAL_BATCH // count  # this process's slice of the global batch
        local = {k: v[index * rows : (index + 1) * rows] for k, v in global_batch(step).items()}
        state, metrics = step_fn(state, steps.to_device(local, layout))
        losses.append(float(metrics["loss"]))
    # Gather the (sharded) parameters to every process to compare them whole.
    params = jax.jit(lambda p: p, out_shardings=layout.replicated if MULTI else None)(state["params"])
    flat = {
        jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    if jax.process_index() == 0:
        np.savez(out_path + ".npz", **flat)
        with open(out_path, "w") as f:
            json.dump(
                {
                    "losses": losses,
                    "process_count": jax.process_count(),
                    "device_count": jax.device_count(),
                    "batch_shard": [index, count],
                },
                f,
            )
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
