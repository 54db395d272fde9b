"""Training logs: TensorBoard event files (tf.summary) and a progress display.

TensorFlow is imported only when an event writer is opened (it costs seconds). Scalars
are written with `tf.summary.write` and the "scalars" plugin tag, which is what
`tf.summary.scalar` emits but without needing the `tensorboard` package installed.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, TextIO


class MetricWriter:
    """Writes scalar metrics per step to TensorBoard event files under `log_dir` (None: no-op)."""

    def __init__(self, log_dir: str | None):
        self._writer = None
        self._tf = None
        self._metadata = None
        if log_dir:
            import tensorflow as tf  # heavy: only when logging is on
            from tensorflow.core.framework import summary_pb2

            self._tf = tf
            plugin = summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
            self._metadata = summary_pb2.SummaryMetadata(plugin_data=plugin)
            self._writer = tf.summary.create_file_writer(log_dir)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Writes each finite-or-not scalar under its name at `step`."""
        if self._writer is None:
            return
        tf = self._tf
        with self._writer.as_default():
            for name, value in scalars.items():
                tf.summary.write(
                    name, tf.constant(float(value), tf.float32), step=int(step), metadata=self._metadata
                )

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def read_scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Returns {tag: [(step, value), ...]} from the event files in log_dir (for tests and tools)."""
    import glob

    import numpy as np
    import tensorflow as tf

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(glob.glob(f"{log_dir}/events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                number = (
                    float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                )
                out.setdefault(value.tag, []).append((int(event.step), float(np.float32(number))))
    return out


def format_duration(seconds: float) -> str:
    """Returns "1h02m03s" / "4m05s" / "6s"."""
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """A rich progress bar on an interactive terminal; plain lines otherwise.

    `due(step)` says whether a step deserves a line: the first step this process runs (right
    after compiling), every `every` steps, the last one, and any step `every_seconds` after the
    previous line. `update(step, loss, tokens_per_sec)` shows a due step; `message(text)` prints
    one-off lines (checkpoints, evaluation) that must not garble the bar. The ETA counts only
    steps this process ran after its first (compilation and restore excluded).
    """

    def __init__(
        self,
        total_steps: int,
        start_step: int = 0,
        every: int = 100,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        enabled: bool = True,
        every_seconds: float = 30.0,
    ):
        self.total, self.start, self.every = total_steps, start_step, max(1, every)
        self.every_seconds = every_seconds
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interactive = (self.stream.isatty() if interactive is None else interactive) and enabled
        self._first: tuple[int, float] | None = None  # (step, time) of the first update: the ETA's origin
        self._last_line = -math.inf
        self._bar: Any = None
        if self.interactive:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[speed]} tok/s  ETA {task.fields[eta]}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._task = self._bar.add_task(
                "train", total=total_steps, completed=start_step, loss="-", speed="-", eta="-"
            )
            self._bar.start()

    def eta(self, step: int) -> float:
        """Seconds left at the pace of this process's steps after its first (inf: not known yet)."""
        if self._first is None or step <= self._first[0]:
            return math.inf
        first_step, first_time = self._first
        return (time.perf_counter() - first_time) / (step - first_step) * (self.total - step)

    def due(self, step: int) -> bool:
        return (
            self._first is None
            or step % self.every == 0
            or step == self.total
            or time.perf_counter() - self._last_line >= self.every_seconds
        )

    def update(self, step: int, loss: float, tokens_per_sec: float | None = None) -> None:
        if not self.due(step):
            return
        if self._first is None:
            self._first = (step, time.perf_counter())
        self._last_line = time.perf_counter()
        if not self.enabled:
            return
        eta = self.eta(step)
        eta_text = format_duration(eta) if math.isfinite(eta) else "-"
        speed = "-" if tokens_per_sec is None else f"{tokens_per_sec:,.0f}"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, loss=f"{loss:.4f}", speed=speed, eta=eta_text)
            return
        line = f"step {step}/{self.total}  loss {loss:.4f}"
        if tokens_per_sec is not None:
            line += f"  {speed} tokens/s"
        if math.isfinite(eta):
            line += f"  ETA {eta_text}"
        print(line, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


# JAX's monitoring events for the stages of a jit compilation (jax/_src/dispatch.py). Should they be
# renamed, compile_timer reads 0 and callers just print no compile line.
_COMPILE_EVENTS = frozenset(
    "/jax/core/compile/" + name
    for name in ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration", "backend_compile_duration")
)


@contextlib.contextmanager
def compile_timer(enabled: bool = True) -> Iterator[list[float]]:
    """Yields [seconds] that JAX spends tracing, lowering and compiling inside the block (0: all cached)."""
    import jax

    total = [0.0]
    if not enabled:
        yield total
        return

    def listener(event: str, duration: float, **kwargs: Any) -> None:
        if event in _COMPILE_EVENTS:
            total[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield total
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


_NOISY_LOGGERS = ("absl", "orbax", "jax._src.xla_bridge", "tensorflow", "asyncio")
_quiet = False


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Points file descriptor 2 at /dev/null inside the block (C++ and other threads' writes included)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def stderr_silenced_if_quiet() -> contextlib.AbstractContextManager[None]:
    """stderr_silenced() under quiet_startup, else a no-op (for orbax saves: see settle_after_failure)."""
    return stderr_silenced() if _quiet else contextlib.nullcontext()


def settle_after_failure(seconds: float = 1.0) -> None:
    """Waits for a failed orbax save's leftover writes with stderr silenced (under quiet_startup).

    When one tensorstore write fails, orbax's event loop closes while the others are still in
    flight; as they complete, their callbacks print "RuntimeError: Event loop is closed" tracebacks
    from tensorstore's threads, which would bury the one line that says what happened.
    """
    if _quiet:
        with stderr_silenced():
            time.sleep(seconds)


def quiet_startup() -> None:
    """Silences TensorFlow's, absl's and orbax's start-up chatter for this process (not `--verbose`).

    TF 2.21 logs through absl's C++ logging: the lines written while its libraries load (cudart
    stubs, "All log messages before absl::InitializeLog()") come before TF reads
    TF_CPP_MIN_LOG_LEVEL, so the import itself runs with stderr (fd 2) pointed at /dev/null; the
    level then covers what TF logs later (cuInit, CPU feature lines). Python-side warnings from
    absl/orbax ("Metadata file does not exist", thread errors that the caller reports anyway in
    one line) are raised to CRITICAL. Nothing the user did wrong is hidden: those are exceptions.
    """
    import logging

    global _quiet
    _quiet = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


class _QuietImport(importlib.abc.MetaPathFinder):
    """Imports the top-level `tensorflow` package with fd 2 on /dev/null (see quiet_startup)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        # Libraries probe with importlib.util.find_spec("tensorflow") without importing it: stay
        # installed until the module really executes.
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            with stderr_silenced():
                original_exec(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
