"""Gradient time and bytes accessed of T5-small under remat policies of the layer scan (issue 17 lead).

Not a `make bench` section yet: it patches `network._scan` (the scan of the encoder/decoder layers) with
`jax.checkpoint(policy=...)` and times jax.grad of the loss, the policies alternating in one process.
Without remat the gradient keeps every layer's attention scores and probabilities ([L, B, H, T, T] f32 each)
across the scan; the dots policies recompute them from the saved projections instead.
Usage: python -m benchmarks.remat [--batch_size 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks.steps import random_batch
from mesh_t5 import network, optim, steps
from mesh_t5.config import get_model_config

POLICIES = {
    "none": None,
    "full": "full",
    "dots_no_batch_dims": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = get_model_config("t5-small")
    batch = {name: jnp.asarray(x) for name, x in random_batch(config, args.batch_size, 512, 114).items()}
    params = steps.init_state(config, optim.make_optimizer(), jax.random.key(0))["params"]
    compiled = {}
    for name, policy in POLICIES.items():

        def scan(fn, x, xs, remat, policy=policy):
            if policy == "full":
                fn = jax.checkpoint(fn)
            elif policy is not None:
                fn = jax.checkpoint(fn, policy=policy)
            return jax.lax.scan(fn, x, xs)

        network._scan = scan  # traced now, so each compiled gradient keeps its policy
        grad = jax.jit(jax.grad(lambda p: steps.loss_and_stats(p, batch, config)[0]))
        compiled[name] = grad.lower(params).compile()
        jax.block_until_ready(compiled[name](params))
        cost = compiled[name].cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        print(f"{name:20s} bytes accessed {cost['bytes accessed'] / 1e9:6.2f} GB", flush=True)
    times: dict[str, list[float]] = {name: [] for name in compiled}
    for _ in range(args.repeats):
        for name, fn in compiled.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(params))
            times[name].append(time.perf_counter() - start)
    print(f"load average {os.getloadavg()}")
    base = statistics.median(times["none"])
    for name, ts in times.items():
        print(f"{name:20s} median {statistics.median(ts):7.3f} s   x none {statistics.median(ts) / base:.3f}")


if __name__ == "__main__":
    main()
