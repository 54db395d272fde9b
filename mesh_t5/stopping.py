"""When a training run stops early, and how: signals, agreement between processes, non-finite steps.

- SIGTERM (preemption, SLURM, Kubernetes) and SIGINT (Ctrl-C) ask the loop to finish the current
  step, save a checkpoint and exit 143 / 130 (`Interrupted`). A second signal exits at once.
- With several processes (multi-host), all of them stop after the same step: each step all-reduces
  the signal number it saw (one int per process), read one step later so the host never waits
  for the step it has just dispatched. jax.distributed installs its own SIGTERM notifier for
  `multihost_utils.reached_preemption_sync_point`; our handler replaces it, since it also has
  to cover SIGINT and the second-signal exit.
- A step whose loss, gradients or new state is not finite is found exactly from the per-step
  "nonfinite" metric, fetched in one transfer when the loop reads metrics anyway (log lines,
  before every save): "stop" ends the run naming the first such step (`NonFiniteError`), "skip"
  counts the updates the train step dropped.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from mesh_t5.errors import UserError

NONFINITE_POLICIES = ("stop", "skip")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """The run stopped on a signal after saving; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum

    @classmethod
    def after_save(cls, signum: int, step: int, directory: object) -> Interrupted:
        return cls(
            f"{signal_name(signum)}: stopped after step {step} and saved checkpoint {step} (data position "
            f"included) in {directory}; run the same command to resume",
            signum,
        )


class NonFiniteError(UserError):
    """on_nonfinite="stop" met a non-finite step; the message names it and the last good checkpoint."""


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def format_steps(steps: list[int]) -> str:
    """Returns "3, 5-7" for [3, 5, 6, 7]."""
    parts: list[list[int]] = []
    for step in steps:
        if parts and step == parts[-1][-1] + 1:
            parts[-1].append(step)
        else:
            parts.append([step])
    return ", ".join(str(p[0]) if len(p) == 1 else f"{p[0]}-{p[-1]}" for p in parts)


def check_policy(on_nonfinite: str) -> None:
    if on_nonfinite not in NONFINITE_POLICIES:
        raise UserError(f"on_nonfinite={on_nonfinite!r} is unknown; use 'stop' or 'skip'")


class SignalStop:
    """While entered (main thread only): SIGTERM/SIGINT set `signum` instead of ending the process.

    The signal numbers also reach a watcher thread through `signal.set_wakeup_fd`, written by the
    C-level handler at once: the first sets `signum` even while the main thread is blocked in
    a long XLA call, a second one exits immediately (128 + signum), whatever the main thread does.
    """

    def __init__(self, second_signal_line: Callable[[int], str] | None = None):
        self.signum = 0
        self._line = second_signal_line or (
            lambda s: f"{signal.Signals(s).name} again: exiting without saving"
        )
        self._previous: dict[int, Any] = {}
        self._previous_fd: int | None = None
        self._pipe: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SignalStop:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread: stay inert
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in _SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handler)
        self._thread = threading.Thread(target=self._watch, name="mesh_t5-signals", daemon=True)
        self._thread.start()
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        # Only the watcher thread counts signals (it sees each one exactly once); this Python-level
        # handler exists so that the default action (terminate, or KeyboardInterrupt) does not happen.
        pass

    def _watch(self) -> None:
        assert self._pipe is not None
        while True:
            try:
                data = os.read(self._pipe[0], 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum not in _SIGNALS:
                    continue
                if self.signum:
                    line = f"mesh-t5: {signal_name(signum)} again: exiting now without saving (the last checkpoint is intact)"
                    os.write(2, (line + "\n").encode())
                    os._exit(128 + signum)
                self.signum = signum

    def __exit__(self, *exc: object) -> None:
        if self._pipe is None:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd if self._previous_fd is not None else -1)
        os.close(self._pipe[1])  # the watcher reads EOF and returns
        if self._thread is not None:
            self._thread.join(timeout=5)
        os.close(self._pipe[0])
        self._pipe = None


class StopAgreement:
    """Turns this process's signal number into the one every process acts on, at the same step.

    One process: the local number, at once. Several: `agreed(local)` after dispatching step s
    dispatches an all-reduce (max) of the local numbers and returns the result of the one
    dispatched after step s - 1: all processes read the same value after the same step.
    `to_global(host [rows, 1] int32) -> global array` and `reduce_max(global) -> replicated []`
    come from the training loop's layout (this module names no mesh axes).
    """

    def __init__(
        self,
        process_count: int,
        rows: int = 1,
        to_global: Callable[[np.ndarray], Any] | None = None,
        reduce_max: Callable[[Any], Any] | None = None,
    ):
        self.multi = process_count > 1
        self._rows, self._to_global, self._reduce_max = rows, to_global, reduce_max
        self._pending: Any = None

    @classmethod
    def for_layout(cls, layout: Any, rows: int, to_device: Callable[[dict, Any], Any]) -> StopAgreement:
        """The agreement for a training loop: the numbers laid out like a batch, one per local example row."""
        import jax
        import jax.numpy as jnp

        if jax.process_count() == 1 or layout is None:
            return cls(jax.process_count())
        reduce_max = jax.jit(lambda b: jnp.max(b["signal"]), out_shardings=layout.replicated)
        return cls(jax.process_count(), rows, lambda host: to_device({"signal": host}, layout), reduce_max)

    def agreed(self, local: int) -> int:
        if not self.multi:
            return local
        assert self._to_global is not None and self._reduce_max is not None
        previous = self._pending
        self._pending = self._reduce_max(self._to_global(np.full((self._rows, 1), local, np.int32)))
        if previous is None:
            return 0
        return int(np.asarray(previous.addressable_data(0)))


class NonFiniteWatch:
    """Collects each step's device-side "nonfinite" flag; `check()` fetches them in one transfer.

    Returns the steps (since the last check) whose update was non-finite; under "skip" their
    updates were dropped inside the step and `skipped` counts them (carried across restarts by
    the checkpoint meta).
    """

    def __init__(self, policy: str, skipped: int = 0):
        check_policy(policy)
        self.policy, self.skipped = policy, int(skipped)
        self._pending: list[tuple[int, Any]] = []

    def add(self, step: int, metrics: dict[str, Any]) -> None:
        self._pending.append((step, metrics["nonfinite"]))

    def check(self, say: Callable[[str], None], last_checkpoint: int | None, directory: object) -> list[int]:
        """Returns the non-finite steps since the last check; "stop" raises NonFiniteError at the first."""
        if not self._pending:
            return []
        import jax

        flags = jax.device_get([flag for _, flag in self._pending])
        bad = [step for (step, _), flag in zip(self._pending, flags, strict=True) if float(flag) > 0]
        self._pending = []
        if bad and self.policy == "stop":
            kept = (
                f"the last good checkpoint is {last_checkpoint}"
                if last_checkpoint is not None
                else "none was saved"
            )
            raise NonFiniteError(
                f"step {bad[0]} gave a non-finite loss, gradient or parameter; stopped without saving it, "
                f"{kept} in {directory}; lower the learning rate, or set train.on_nonfinite='skip'"
            )
        if bad:
            self.skipped += len(bad)
            say(
                f"skipped the update of step{'s' if len(bad) > 1 else ''} {format_steps(bad)}: non-finite loss, "
                f"gradient or parameter ({self.skipped} skipped in all)"
            )
        return bad
