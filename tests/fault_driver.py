"""`mesh-t5 train` on a tiny model and a made-up task: the process tests/test_faults.py signals and kills.

Usage: python fault_driver.py MODEL_DIR TRAIN_STEPS [--gin.NAME=VALUE ...]   (exits with mesh-t5's status)

FAULT_DRIVER_STEP_SECONDS=s sleeps s seconds before each step (in Python, where signals land), so
a test can signal the run in the middle; the numbers computed do not change.
FAULT_DRIVER_ENOSPC=1 makes every checkpoint save after the first fail as a full disk would: orbax's
partial directory written, then OSError ENOSPC (for machines where a test cannot mount a small tmpfs).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

jax.config.update("jax_disable_most_optimizations", True)  # tiny model: compile time dominates
if os.environ.get("MESH_T5_NUM_PROCESSES"):  # one of several processes (one CPU device each)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")

from mesh_t5 import cli, data, steps  # noqa: E402
from mesh_t5.data import preprocessors as pp  # noqa: E402
from mesh_t5.vocab import ByteVocabulary  # noqa: E402

TASK = "fault_driver_reverse"
MODEL_GIN = ["--gin_file=models/tiny.gin", "--gin_file=runs/pretrain.gin"]


def reverse_examples(split: str):
    rng = np.random.default_rng({"train": 0, "validation": 1}[split])
    for _ in range(100_000):
        text = "".join(rng.choice(list("abcdefgh"), size=int(rng.integers(3, 7))))
        yield {"inputs": text, "targets": text[::-1]}


def register() -> None:
    vocab = ByteVocabulary(extra_ids=0)
    data.TaskRegistry.add(
        TASK,
        data.FunctionSource(reverse_examples),
        [pp.tokenize, pp.append_eos_after_trim],
        {"inputs": data.Feature(vocab), "targets": data.Feature(vocab)},
        overwrite=True,
    )


def argv(model_dir: str, train_steps: int, *bindings: str) -> list[str]:
    """The `mesh-t5 train` arguments of a fault run (tiny model, batch 8, constant learning rate)."""
    return [
        "train", *MODEL_GIN, f"--gin.MODEL_DIR={model_dir}", f"--gin.MIXTURE_OR_TASK_NAME={TASK}",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 8}", f"--gin.TRAIN_STEPS={train_steps}",
        "--gin.BATCH_SIZE=8", "--gin.train.learning_rate=0.01", "--gin.train.tensorboard=False", *bindings,
    ]  # fmt: skip


def inject_disk_full() -> None:
    import errno

    import orbax.checkpoint as ocp

    save = ocp.CheckpointManager.save

    def full_disk_save(self, step, *args, **kwargs):
        if not list(self.directory.glob("[0-9]*")):
            return save(self, step, *args, **kwargs)
        partial = self.directory / f"{step}.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp"
        partial.mkdir(parents=True)
        (partial / "d").write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(partial / "d"))

    ocp.CheckpointManager.save = full_disk_save


def main() -> int:
    register()
    delay = float(os.environ.get("FAULT_DRIVER_STEP_SECONDS", "0"))
    if delay:
        to_device = steps.to_device

        def slow_to_device(batch, layout):
            time.sleep(delay)
            return to_device(batch, layout)

        steps.to_device = slow_to_device
    if os.environ.get("FAULT_DRIVER_ENOSPC"):
        inject_disk_full()
    return cli.main(argv(sys.argv[1], int(sys.argv[2]), *sys.argv[3:]))


if __name__ == "__main__":
    sys.exit(main())
