"""Train-step time and memory of T5-small under each `T5Config.remat` policy of the layer scan (issue 17).

    python -m benchmarks.remat [--batch_size 8] [--repeats 3] [--policies none,minimal,dots,full]

Each policy's `steps.make_train_step` (the step `mesh-t5 train` jits: Adafactor, state donated) runs on
the same weights and batch; the policies alternate step by step in this one process and the table gives
medians. Per policy it also prints what XLA's compiled step says before running: bytes accessed (cost
analysis) and its temporary buffers (memory analysis), the activations kept for the backward among them.
Without remat the gradient keeps every layer's attention scores and probabilities ([L, B, H, T, S]
float32 each) across the scan; "minimal" keeps the matmul outputs without batch dimensions and
recomputes those.
"""

from __future__ import annotations

import argparse
import os
import statistics

from benchmarks.steps import MeshStep, alternate, random_batch
from mesh_t5 import network
from mesh_t5.config import REMAT_POLICIES, get_model_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="t5-small")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--policies", default=",".join(REMAT_POLICIES))
    args = parser.parse_args()
    config = get_model_config(args.model)
    params = network.init_params_numpy(config, seed=0)
    batch = random_batch(config, args.batch_size, 512, 114)
    sides = {}
    print(f"load average before {os.getloadavg()}", flush=True)
    for policy in args.policies.split(","):
        step = MeshStep(config.replace(remat=policy), params, batch)
        compiled = step.compiled()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        temp = compiled.memory_analysis().temp_size_in_bytes
        print(f"{policy:8s} bytes accessed {cost['bytes accessed'] / 1e9:6.2f} GB, temporaries {temp / 1e9:5.2f} GB",
              flush=True)  # fmt: skip
        step()  # the first call compiles the jitted step again (jit's own cache)
        sides[policy] = step
    times = alternate(sides, args.repeats)
    print(f"load average after {os.getloadavg()}")
    base = statistics.median(times[next(iter(times))])
    for name, ts in times.items():
        median = statistics.median(ts)
        print(
            f"{name:8s} median {median:7.3f} s (min {min(ts):.3f})   x {next(iter(times))} {median / base:.3f}"
        )


if __name__ == "__main__":
    main()
