"""Training logs: TensorBoard event files (tf.summary) and a progress display.

TensorFlow is imported only when an event writer is opened (it costs seconds). Scalars
are written with `tf.summary.write` and the "scalars" plugin tag, which is what
`tf.summary.scalar` emits but without needing the `tensorboard` package installed.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
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
    """A rich progress bar on an interactive terminal; plain periodic lines otherwise.

    `update(step, loss, tokens_per_sec)` after each step; `message(text)` for one-off lines
    (evaluation results, checkpoints) that must not garble the bar.
    """

    def __init__(
        self,
        total_steps: int,
        start_step: int = 0,
        every: int = 100,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        enabled: bool = True,
    ):
        self.total, self.start, self.every = total_steps, start_step, max(1, every)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interactive = (self.stream.isatty() if interactive is None else interactive) and enabled
        self.t0 = time.perf_counter()
        self._bar: Any = None
        if self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[speed]} tok/s"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._task = self._bar.add_task(
                "train", total=total_steps, completed=start_step, loss="-", speed="-"
            )
            self._bar.start()

    def eta(self, step: int) -> float:
        done = step - self.start
        if done <= 0:
            return math.inf
        return (time.perf_counter() - self.t0) / done * (self.total - step)

    def update(self, step: int, loss: float, tokens_per_sec: float) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=step, loss=f"{loss:.4f}", speed=f"{tokens_per_sec:,.0f}")
        elif step % self.every == 0 or step == self.total:
            print(
                f"step {step}/{self.total}  loss {loss:.4f}  {tokens_per_sec:,.0f} tokens/s  "
                f"ETA {format_duration(self.eta(step))}",
                file=self.stream,
                flush=True,
            )

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
