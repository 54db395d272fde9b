"""What a training run survives: signals, SIGKILL during saves, non-finite steps, damaged checkpoints, a
full disk. Signals and kills hit real `mesh-t5 train` subprocesses (tests/fault_driver.py: tiny model,
batch 8), whose results must be bitwise those of one uninterrupted run; the rest runs in-process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mesh_t5 import checkpoints, optim, steps, train
from mesh_t5.config import get_model_config
from mesh_t5.errors import UserError

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "fault_driver.py"
STEPS = 12
sys.path.insert(0, str(HERE))
import fault_driver  # noqa: E402
from conftest import run_script  # noqa: E402

CONFIG = get_model_config("tiny")  # = models/tiny.gin, what fault_driver.py trains
ABSTRACT = steps.abstract_state(CONFIG, optim.make_optimizer())


PROGRESS = ("compiled ", "step ", "saved ", "restored ", "removed ")  # mesh_t5's own progress lines


class Run:
    """A fault_driver.py subprocess whose stderr lines are collected as they come."""

    def __init__(self, env: dict[str, str], model_dir: Path, steps: int, *bindings: str, delay: float = 0.0):
        env = {**env, "FAULT_DRIVER_STEP_SECONDS": str(delay)}
        cmd = [sys.executable, str(DRIVER), str(model_dir), str(steps), *bindings]
        self.proc = subprocess.Popen(
            cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
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
            assert self.proc.poll() is None, (
                f"exited {self.proc.returncode} before {prefix!r}:\n" + self.log()
            )
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
    assert all(
        line.startswith(("compiled ", "step ", "saved ", "mesh-t5 train: step")) for line in run.lines
    ), run.log()
    return model_dir


def restored(model_dir: Path, step: int) -> tuple[dict, dict]:
    store = checkpoints.CheckpointStore(model_dir)
    state, meta = store.restore(step, ABSTRACT)
    store.close()
    return jax.tree.map(np.asarray, state), meta


def final(model_dir: Path, step: int = STEPS) -> tuple[list[np.ndarray], dict]:
    state, meta = restored(model_dir, step)
    return jax.tree.leaves(state), meta


def assert_same_run(model_dir: Path, reference: Path) -> None:
    leaves, meta = final(model_dir)
    ref_leaves, ref_meta = final(reference)
    for a, b in zip(leaves, ref_leaves, strict=True):
        np.testing.assert_array_equal(a, b)
    assert meta["data"] == ref_meta["data"]


def stop_lines(run: Run) -> list[str]:
    return [line for line in run.lines if line.startswith("mesh-t5 train:")]


# ------------------------------------------------------------------------------------ signals


def signal_and_check(run: Run, model_dir: Path, signum: int) -> int:
    """Signals `run` after its first step line; checks exit code, the one line and the checkpoint; returns its step."""
    run.wait_for("step ")
    run.proc.send_signal(signum)
    assert run.finish() == 128 + signum, run.log()
    (line,) = stop_lines(run)
    stopped = int(line.split("stopped after step ")[1].split()[0])
    assert line == (
        f"mesh-t5 train: {signal.Signals(signum).name}: stopped after step {stopped} and saved checkpoint "
        f"{stopped} (data position included) in {model_dir / 'checkpoints'}; run the same command to resume"
    )
    assert stopped < STEPS and checkpoints.CheckpointStore(model_dir).all_steps()[-1] == stopped
    assert [line for line in run.lines if not line.startswith(PROGRESS)] == [line], run.log()
    return stopped


def kill_during_save(run: Run, model_dir: Path) -> None:
    """SIGKILLs `run` as soon as a save of its own is being written."""
    partials = model_dir / "checkpoints"
    if list(partials.glob(f"*{checkpoints.PARTIAL_SUFFIX}*")):
        run.wait_for("removed ")  # the previous kill's leftover, cleaned at start
    partial = None
    while partial is None and run.proc.poll() is None:
        partial = next(partials.glob(f"*{checkpoints.PARTIAL_SUFFIX}*"), None)
    assert partial is not None, f"the run ended before a save was seen:\n{run.log()}"
    run.proc.kill()
    assert run.finish() == -signal.SIGKILL


def test_sigterm_sigkill_sigint_sigkill_then_resume_is_bitwise_one_run(env, reference, tmp_path):
    # An operator's bad day: preempted (SIGTERM), killed while saving, Ctrl-C, killed while saving
    # again, then left alone. Every signal finishes the step, saves (data position included) and
    # exits 143 / 130 with one line; every kill leaves only complete checkpoints (a partial one is
    # removed at the next start); the end is bitwise the uninterrupted run.
    every_step = "--gin.train.checkpoint_period=1"
    first = signal_and_check(Run(env, tmp_path, STEPS, every_step, delay=0.3), tmp_path, signal.SIGTERM)
    run = Run(env, tmp_path, STEPS, every_step, delay=0.05)
    run.wait_for(f"restored checkpoint {first} in ")
    kill_during_save(run, tmp_path)
    signal_and_check(Run(env, tmp_path, STEPS, every_step, delay=0.3), tmp_path, signal.SIGINT)
    kill_during_save(Run(env, tmp_path, STEPS, every_step, delay=0.05), tmp_path)
    last = Run(env, tmp_path, STEPS, "--gin.train.checkpoint_period=4")
    assert last.finish() == 0, last.log()
    assert not list((tmp_path / "checkpoints").glob(f"*{checkpoints.PARTIAL_SUFFIX}*"))
    assert_same_run(tmp_path, reference)


def test_second_signal_exits_at_once_without_saving(env, tmp_path):
    run = Run(env, tmp_path, STEPS, "--gin.train.checkpoint_period=100", delay=1.0)
    run.wait_for("step 1/")
    run.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)  # inside the next step's 1 s delay: the first signal only asked to stop after it
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 130, run.log()
    assert (
        run.lines[-1] == "mesh-t5: SIGINT again: exiting now without saving (the last checkpoint is intact)"
    )
    assert checkpoints.CheckpointStore(tmp_path).all_steps() == []


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
    # Nothing else: orbax's reads of the damaged arrays, failing, must not print tracebacks either.
    assert not any("Traceback" in line or "Event loop is closed" in line for line in run.lines), run.log()
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


# ------------------------------------------------------------------------------- a full disk


def test_disk_full_during_save_is_one_line_and_keeps_the_previous_checkpoint(env, reference, tmp_path):
    # A tmpfs that holds one checkpoint and a half (we are root on the dev VM; CI containers may not
    # allow mount: then the driver makes orbax fail the same way, partial directory included).
    disk = tmp_path / "disk"
    disk.mkdir()
    size = sum(p.stat().st_size for p in (reference / "checkpoints/4").rglob("*") if p.is_file())
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size * 3 // 2}", "tmpfs", str(disk)], capture_output=True
    ).returncode == 0  # fmt: skip
    if not mounted:
        env = {**env, "FAULT_DRIVER_ENOSPC": "1"}
    model_dir, ckpts = disk / "run", disk / "run" / "checkpoints"
    expected = (
        f"mesh-t5 train: error: saving checkpoint 4 in {ckpts} failed ([Errno 28] No space left on device); "
        "removed the partial checkpoint, checkpoint 2 is intact; free space or fix the directory, then run "
        "the same command to resume"
    )
    try:
        run = Run(env, model_dir, 6, "--gin.train.checkpoint_period=2")
        assert run.finish() == 2, run.log()
        assert [line for line in run.lines if not line.startswith(("compiled", "step ", "saved "))] == [
            expected
        ]
        assert sorted(p.name for p in ckpts.iterdir()) == ["2"]
        assert all_finite(model_dir, 2)
        # A restart on the still-full disk: restores 2, leaves config.json alone, fails the same way.
        if mounted:
            # Unbuffered: a buffered writer keeps what a short write left and raises again on close.
            with open(disk / "filler", "wb", buffering=0) as f, pytest.raises(OSError, match="No space left"):
                while True:
                    f.write(b"\0" * 65536)
        config_mtime = (model_dir / "config.json").stat().st_mtime_ns
        again = Run(env, model_dir, 6, "--gin.train.checkpoint_period=2")
        assert again.finish() == 2, again.log()
        assert again.lines[0].startswith("restored checkpoint 2 in ")
        assert [line for line in again.lines if line.startswith("mesh-t5")] == [expected]
        assert not any("Traceback" in line for line in again.lines)
        assert (model_dir / "config.json").stat().st_mtime_ns == config_mtime
        assert sorted(p.name for p in ckpts.iterdir()) == ["2"]
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)


def test_only_orbax_reads_outliving_a_failed_restore_are_silenced(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    checkpoints._quiet_orbax_reads_of_a_failed_restore()
    checkpoints._quiet_orbax_reads_of_a_failed_restore()  # once: not a filter of a filter

    async def _read_array_index_and_device_put():  # the name of orbax's read coroutine
        pass

    async def other():
        pass

    def unraisable(obj, exc):
        return types.SimpleNamespace(object=obj, exc_value=exc, exc_type=type(exc), exc_traceback=None)

    orbax_read, ours = _read_array_index_and_device_put(), other()
    for u in [unraisable(None, RuntimeError("Event loop is closed")), unraisable(orbax_read, Exception("x"))]:
        sys.unraisablehook(u)
    kept = [
        unraisable(None, RuntimeError("other")),
        unraisable(ours, Exception("x")),
        unraisable(None, ValueError()),
    ]
    for u in kept:
        sys.unraisablehook(u)
    assert seen == kept
    orbax_read.close(), ours.close()


# ------------------------------------------------------------------- in-process: skip, damage

OPTIMIZER = optim.make_optimizer()
LENGTHS = {"inputs": 8, "targets": 8}


def huge_from_step_3(step: jax.Array) -> jax.Array:
    return jnp.where(step >= 3, 1e30, 1e-2).astype(jnp.float32)


def test_skip_policy_drops_and_counts_nonfinite_updates(tmp_path, capsys):
    from mesh_t5.logging_utils import read_scalars

    fault_driver.register()
    # Updates 1-3 at lr 1e-2; update 4 at 1e30 is huge but finite (applied); from step 5 on the
    # updates overflow: updates 5 and 6 are dropped inside the step and counted.
    result = train.train(
        model_config=CONFIG, model_dir=str(tmp_path), mixture_or_task_name=fault_driver.TASK,
        task_feature_lengths=LENGTHS, train_steps=6, batch_size=8, learning_rate=huge_from_step_3,
        optimizer=OPTIMIZER, checkpoint_period=2, log_period=100, on_nonfinite="skip",
    )  # fmt: skip
    assert result.step == 6
    lines = capsys.readouterr().err.splitlines()
    assert (
        "skipped the update of steps 5-6: non-finite loss, gradient or parameter (2 skipped in all)" in lines
    )
    assert [step for step, _ in result.history] == [1, 6]
    assert result.history[-1][1]["skipped_steps"] == 2.0
    assert read_scalars(str(tmp_path / "train"))["skipped_steps"] == [(1, 0.0), (6, 2.0)]
    assert checkpoints.CheckpointStore(tmp_path).all_steps() == [2, 4, 6]
    (four, _), (six, meta) = restored(tmp_path, 4), restored(tmp_path, 6)
    assert meta["skipped_steps"] == 2 and int(six.pop("step")) == 6 and int(four.pop("step")) == 4
    assert all_finite(tmp_path, 6)
    for a, b in zip(jax.tree.leaves(four), jax.tree.leaves(six), strict=True):  # params, optimizer: untouched
        np.testing.assert_array_equal(a, b)


def test_unknown_policy_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"^on_nonfinite='halt' is unknown; use 'stop' or 'skip'$"):
        train.train(
            model_config=CONFIG, model_dir=str(tmp_path / "run"), mixture_or_task_name=fault_driver.TASK,
            task_feature_lengths=LENGTHS, train_steps=6, batch_size=8, on_nonfinite="halt",
        )  # fmt: skip
    assert not (tmp_path / "run").exists()


def biggest_array_file(step_dir: Path) -> Path:
    return max((step_dir / "state").rglob("d/*"), key=lambda p: p.stat().st_size)


DAMAGE = {
    "truncated array file": (lambda d: os.truncate(biggest_array_file(d), 100), "OUT_OF_RANGE"),
    "deleted array file": (lambda d: biggest_array_file(d).unlink(), ""),
    "no _METADATA": (lambda d: (d / "state/_METADATA").unlink(), "state/_METADATA missing"),
    "no manifest.ocdbt": (lambda d: (d / "state/manifest.ocdbt").unlink(), "state/manifest.ocdbt missing"),
    "no meta/metadata": (lambda d: (d / "meta/metadata").unlink(), "meta/metadata missing"),
    "no state/": (lambda d: shutil.rmtree(d / "state"), "state missing"),
}


@pytest.fixture(scope="module")
def reference_8(reference):
    return final(reference, 8)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_latest_checkpoint_falls_back_with_one_line(reference, reference_8, tmp_path, damage):
    copy_run(reference, tmp_path, [4, 8, 12])
    breaks, reason = DAMAGE[damage]
    breaks(tmp_path / "checkpoints/12")
    lines: list[str] = []
    store = checkpoints.CheckpointStore(tmp_path, keep=2)
    state, meta, step = checkpoints.resume(store, "latest", 12, ABSTRACT, None, lines.append)
    ckpts = tmp_path / "checkpoints"
    assert step == 8 and len(lines) == 2, lines
    assert lines[0].startswith(f"checkpoint 12 in {ckpts} unreadable ({reason}")
    assert (
        lines[0].endswith("); renamed to 12.corrupt and resumed from checkpoint 8") and "\n" not in lines[0]
    )
    assert lines[1].startswith("restored checkpoint 8 in ")
    for a, b in zip(jax.tree.leaves(state), reference_8[0], strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert meta["data"] == reference_8[1]["data"]
    assert store.all_steps() == [4, 8]
    if damage == "no state/":  # the one orbax itself still listed as a step before
        # Retention no longer counts it: keeping 2, a save at 9 drops 4, not 8, and leaves 12.corrupt alone.
        store.save(9, state, meta)
        assert sorted(p.name for p in ckpts.iterdir()) == ["12.corrupt", "8", "9"]
    store.close()


def test_no_readable_checkpoint_is_one_error_line_and_renames_nothing(reference, tmp_path):
    copy_run(reference, tmp_path, [4, 8])
    for step in (4, 8):
        (tmp_path / f"checkpoints/{step}/state/_METADATA").unlink()
    store = checkpoints.CheckpointStore(tmp_path)
    with pytest.raises(checkpoints.CheckpointError) as e:
        checkpoints.resume(store, "latest", 8, ABSTRACT, None, print)
    assert str(e.value) == (
        f"no readable checkpoint in {tmp_path / 'checkpoints'} (8: state/_METADATA missing; 4: state/_METADATA "
        "missing); move them aside to start over, or restore the files"
    )
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["4", "8"]


def test_a_specific_unreadable_checkpoint_is_one_error_line(reference, tmp_path):
    copy_run(reference, tmp_path, [4, 8])
    (tmp_path / "checkpoints/4/meta/metadata").unlink()
    store = checkpoints.CheckpointStore(tmp_path)
    with pytest.raises(checkpoints.CheckpointError, match=r"^checkpoint 4 in .* is unreadable \(") as e:
        checkpoints.resume(store, "specific", 4, ABSTRACT, None, print)
    assert "\n" not in str(e.value)


def test_multi_host_processes_stop_at_the_same_step(env, tmp_path):
    # Two processes (one CPU device each, joined by jax.distributed); only process 1 gets SIGTERM.
    # Both stop after the same step, save it together and exit 143 with the same line.
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    cluster = {**env, "MESH_T5_COORDINATOR_ADDRESS": f"localhost:{port}", "MESH_T5_NUM_PROCESSES": "2"}
    runs = [
        Run(
            {**cluster, "MESH_T5_PROCESS_ID": str(i)},
            tmp_path,
            STEPS,
            "--gin.train.checkpoint_period=100",
            delay=0.3,
        )
        for i in range(2)
    ]
    try:
        runs[0].wait_for("step 1/")
        runs[1].proc.send_signal(signal.SIGTERM)
        codes = [run.finish() for run in runs]
    finally:
        for run in runs:
            if run.proc.poll() is None:
                run.proc.kill()
    assert codes == [143, 143], "\n---\n".join(run.log() for run in runs)
    (line,) = stop_lines(runs[0])
    assert stop_lines(runs[1]) == [line] and line.startswith("mesh-t5 train: SIGTERM: stopped after step ")
    stopped = int(line.split("stopped after step ")[1].split()[0])
    assert checkpoints.CheckpointStore(tmp_path).all_steps() == [stopped]
    assert all_finite(tmp_path, stopped)


def test_tensorflow_start_up_is_quiet():
    # TF 2.21 prints cudart/cuInit/CPU-feature lines through absl's C++ logging, some before it reads
    # TF_CPP_MIN_LOG_LEVEL; `mesh-t5` (without --verbose) imports it with those silenced.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "MESH_T5_"))}
    out = run_script("quiet_tensorflow.py", env=env, timeout=300)
    assert out.returncode == 0 and out.stderr == "", out.stderr
