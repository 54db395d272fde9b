"""How `mesh-t5 plan`'s per-device estimate compares with what XLA's compiled training step needs.

    python -m benchmarks.plan_check [--models t5-small,t5.1.1-small] [--batch_sizes 2,8] [--policies none,minimal]

For each model, batch (× 512 inputs / 114 targets) and remat policy: `plan.plan_memory` on one device
(parameters + gradients + Adafactor state + activations) against the compiled `steps.make_train_step`'s
memory analysis (arguments + temporaries + outputs not aliased to a donated argument). Nothing runs
but the compiler; the ratio XLA / plan is the headroom the plan's total needs on this backend.
"""

from __future__ import annotations

import argparse

from benchmarks.steps import MeshStep, random_batch
from mesh_t5 import network, plan
from mesh_t5.config import REMAT_POLICIES, ConfigError, get_model_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="t5-small,t5.1.1-small")
    parser.add_argument("--batch_sizes", default="2,8")
    parser.add_argument("--policies", default="none,minimal")
    args = parser.parse_args()
    models, policies = args.models.split(","), args.policies.split(",")
    try:  # a wrong flag is one line (argparse's usage and error), before anything compiles
        configs = {model: get_model_config(model) for model in models}
    except ConfigError as e:
        parser.error(f"--models: {e}")
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch_sizes {args.batch_sizes!r}: give comma-separated integers, e.g. 2,8")
    if unknown := [p for p in policies if p not in REMAT_POLICIES]:
        parser.error(
            f"--policies: unknown remat policy {unknown[0]!r}; pick from {', '.join(REMAT_POLICIES)}"
        )
    print("| model | batch | remat | plan GB | XLA GB (temporaries) | XLA / plan |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for model, config in configs.items():
        params = network.init_params_numpy(config, seed=0)
        for batch_size in batch_sizes:
            batch = random_batch(config, batch_size, 512, 114)
            for policy in policies:
                policy_config = config.replace(remat=policy)
                memory = MeshStep(policy_config, params, batch).compiled().memory_analysis()
                planned = plan.plan_memory(policy_config, "data:1", batch_size=batch_size).total_per_device(
                    policy
                )
                xla = (
                    memory.argument_size_in_bytes + memory.temp_size_in_bytes
                    + memory.output_size_in_bytes - memory.alias_size_in_bytes
                )  # fmt: skip
                print(
                    f"| {model} | {batch_size} | {policy} | {planned / 1e9:.2f} | {xla / 1e9:.2f} "
                    f"({memory.temp_size_in_bytes / 1e9:.2f}) | {xla / planned:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
