"""What a training run survives: signals, SIGKILL during saves, non-finite steps, damaged checkpoints, a
full disk. Signals and kills hit real `mesh-t5 train` subprocesses (tests/fault_driver.py: tiny model,
batch 8), whose results must be bitwise those of one uninterrupted run; the rest runs in-process."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mesh_t5 import checkpoints, optim, stopping, train

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "fault_driver.py"
STEPS = 12
sys.path.insert(0, str(HERE))
import fault_driver  # noqa: E402

CONFIG = checkpoints.T5Config(
    vocab_size=512, d_model=64, d_ff=128, num_heads=4, d_kv=16, num_encoder_layers=2, num_decoder_layers=2,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
)  # fmt: skip  (models/tiny.gin)
ABSTRACT = train.abstract_state(CONFIG, optim.make_optimizer())


class Run:
    """A fault_driver.py subprocess whose stderr lines are collected as they come."""

    def __init__(self, env: dict[str, str], model_dir: Path, steps: int, *bindings: str, delay: float = 0.0):
        env = {**env, "FAULT_DRIVER_STEP_SECONDS": str(delay)}
        cmd = [sys.executable, str(DRIVER), str(model_dir), str(steps), *bindings]
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(prefix) for line in self.lines):
            assert self.proc.poll() is None, f"exited {self.proc.returncode} before {prefix!r}:\n" + self.log()
            assert time.monotonic() < deadline, f"no {prefix!r} after {timeout}s:\n" + self.log()
            time.sleep(0.01)

    def finish(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def log(self) -> str:
        return "\n".join(self.lines[-40:])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    # One compilation for all subprocesses: JAX's persistent cache, shared through a directory.
    cache = tmp_path_factory.mktemp("jax_cache")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_T5_", "XLA_FLAGS"))}
    return {
        **base, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    }  # fmt: skip


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory):
    """An uninterrupted run of STEPS steps (checkpoints every 4): what every interrupted run must equal."""
    model_dir = tmp_path_factory.mktemp("reference")
    run = Run(env, model_dir, STEPS, "--gin.train.checkpoint_period=4")
    assert run.finish() == 0, run.log()
    # Start-up is quiet: only mesh_t5's own lines (compile, steps, saves, the summary).
    assert all(line.startswith(("compiled ", "step ", "saved ", "mesh-t5 train: step")) for line in run.lines), run.log()
    return model_dir


def final(model_dir: Path, step: int = STEPS) -> tuple[list[np.ndarray], dict]:
    store = checkpoints.CheckpointStore(model_dir)
    state, meta = store.restore(step, ABSTRACT)
    store.close()
    return [np.asarray(x) for x in jax.tree.leaves(state)], meta


def assert_same_run(model_dir: Path, reference: Path) -> None:
    leaves, meta = final(model_dir)
    ref_leaves, ref_meta = final(reference)
    for a, b in zip(leaves, ref_leaves, strict=True):
        np.testing.assert_array_equal(a, b)
    assert meta["data"] == ref_meta["data"]


def stop_lines(run: Run) -> list[str]:
    return [line for line in run.lines if line.startswith("mesh-t5 train:")]


# ------------------------------------------------------------------------------------ signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_and_resumes_bitwise(env, reference, tmp_path, signum):
    run = Run(env, tmp_path, STEPS, "--gin.train.checkpoint_period=4", delay=0.3)
    run.wait_for("step 1/")
    run.proc.send_signal(signum)
    assert run.finish() == 128 + signum, run.log()
    (line,) = stop_lines(run)
    stopped = int(line.split("stopped after step ")[1].split()[0])
    assert 1 <= stopped < STEPS, line
    assert line == (
        f"mesh-t5 train: {signal.Signals(signum).name}: stopped after step {stopped} and saved checkpoint "
        f"{stopped} (data position included) in {tmp_path / 'checkpoints'}; run the same command to resume"
    )
    assert stopped in checkpoints.CheckpointStore(tmp_path).all_steps()
    resumed = Run(env, tmp_path, STEPS, "--gin.train.checkpoint_period=4")
    assert resumed.finish() == 0, resumed.log()
    assert f"restored checkpoint {stopped} in " in resumed.lines[0]
    assert_same_run(tmp_path, reference)


def test_second_signal_exits_at_once_without_saving(env, tmp_path):
    run = Run(env, tmp_path, STEPS, "--gin.train.checkpoint_period=100", delay=1.0)
    run.wait_for("step 1/")
    run.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)  # inside the next step's 1 s delay: the first signal only asked to stop after it
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 143, run.log()
    assert run.lines[-1] == "mesh-t5: SIGTERM again: exiting now without saving (the last checkpoint is intact)"
    assert checkpoints.CheckpointStore(tmp_path).all_steps() == []


def test_sigkill_during_saves_resumes_bitwise(env, reference, tmp_path):
    # Saving every step, killed three times while a save is being written: each restart removes the
    # partial save, resumes from the latest complete checkpoint, and the end is the uninterrupted run.
    partials = tmp_path / "checkpoints"
    removed = 0
    for _ in range(3):
        leftover = list(partials.glob(f"*{checkpoints.PARTIAL_SUFFIX}*"))
        run = Run(env, tmp_path, STEPS, "--gin.train.checkpoint_period=1", delay=0.05)
        if leftover:
            run.wait_for("removed ")
            removed += 1
        partial = None
        while partial is None and run.proc.poll() is None:
            partial = next(partials.glob(f"*{checkpoints.PARTIAL_SUFFIX}*"), None)
        assert partial is not None, f"the run ended before a save was seen:\n{run.log()}"
        run.proc.kill()
        assert run.finish() == -signal.SIGKILL
    assert removed >= 1  # at least one kill landed before orbax renamed the save into place
    last = Run(env, tmp_path, STEPS, "--gin.train.checkpoint_period=1")
    assert last.finish() == 0, last.log()
    assert not list(partials.glob(f"*{checkpoints.PARTIAL_SUFFIX}*"))
    assert_same_run(tmp_path, reference)


# ------------------------------------------------------------------------- non-finite steps


def copy_run(reference: Path, model_dir: Path, steps: list[int]) -> None:
    shutil.copy(reference / "config.json", model_dir / "config.json")
    for step in steps:
        shutil.copytree(reference / "checkpoints" / str(step), model_dir / "checkpoints" / str(step))


def all_finite(model_dir: Path, step: int) -> bool:
    leaves, _ = final(model_dir, step)
    return all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(x.dtype, np.floating))


def test_damaged_latest_falls_back_then_nonfinite_stops(env, reference, tmp_path):
    # Checkpoint 12 truncated: the restart falls back to 8 (one warning line) and renames 12 aside.
    # Then a learning rate of 1e30: step 9's update is huge but finite, step 10's loss is NaN; the
    # run stops there, non-zero, one line, without writing a checkpoint of it (8 stays the latest).
    copy_run(reference, tmp_path, [4, 8, 12])
    biggest = max((tmp_path / "checkpoints/12/state").rglob("d/*"), key=lambda p: p.stat().st_size)
    os.truncate(biggest, 100)
    run = Run(env, tmp_path, STEPS, "--gin.train.checkpoint_period=1", "--gin.train.learning_rate=1e30")
    assert run.finish() == 2, run.log()
    ckpts = tmp_path / "checkpoints"
    assert run.lines[0].startswith(f"checkpoint 12 in {ckpts} unreadable (") and run.lines[0].endswith(
        "); renamed to 12.corrupt and resumed from checkpoint 8"
    ), run.lines[0]
    assert run.lines[1].startswith("restored checkpoint 8 in ")
    assert stop_lines(run) == [
        f"mesh-t5 train: error: step 10 gave a non-finite loss, gradient or parameter; stopped without saving "
        f"it, the last good checkpoint is 9 in {ckpts}; lower the learning rate, or set train.on_nonfinite='skip'"
    ]
    assert checkpoints.CheckpointStore(tmp_path).all_steps() == [4, 8, 9]
    assert sorted(p.name for p in ckpts.iterdir()) == ["12.corrupt", "4", "8", "9"]
    assert all(all_finite(tmp_path, step) for step in (4, 8, 9))
    ref_leaves, _ = final(reference, 8)
    for a, b in zip(final(tmp_path, 8)[0], ref_leaves, strict=True):
        np.testing.assert_array_equal(a, b)
