"""The demo's outputs for people: a PNG of the loss curves and a short markdown report.

Plain functions over plain data (step/value lists, metric dicts, strings), so they are
testable without training anything; `mesh_t5.commands.demo` gathers the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

Curve = Sequence[tuple[int, float]]


def plot_loss_curves(panels: Mapping[str, Mapping[str, Curve]], path: Path | str, title: str = "") -> Path:
    """Draws one panel per entry of `panels` ({panel title: {curve label: [(step, loss), ...]}}); returns the PNG path.

    Each curve is drawn raw (thin) and smoothed with an exponential moving average
    (thick), because per-step losses of small batches are noisy.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    panels = {name: curves for name, curves in panels.items() if any(curves.values())}
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 4.2), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items(), strict=False):
        for index, (label, curve) in enumerate(curves.items()):
            if not curve:
                continue
            steps = [s for s, _ in curve]
            values = [v for _, v in curve]
            color = f"C{index}"
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(steps, ema(values), color=color, linewidth=2.0, label=label)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy per target token")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ema(values: Sequence[float], decay: float | None = None) -> list[float]:
    """Returns the bias-corrected exponential moving average of `values` (decay from the length)."""
    if decay is None:
        decay = min(0.95, 1.0 - 1.0 / max(2.0, len(values) / 20))
    out, average = [], 0.0
    for i, value in enumerate(values):
        average = decay * average + (1.0 - decay) * value
        out.append(average / (1.0 - decay ** (i + 1)))
    return out


def format_number(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    """Formats a metric for a table; None or NaN becomes "—"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value * scale:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Returns a GitHub-flavoured markdown table; `|` and newlines inside cells are escaped."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def shorten(text: str, limit: int = 160) -> str:
    """Returns text cut at a word boundary to at most `limit` characters, with "…" when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0] + "…"


def pretraining_verdict(
    scores: Mapping[str, Mapping[str, float]], metric_names: Mapping[str, str]
) -> list[str]:
    """Returns one honest sentence per task comparing fine-tuning from pre-training vs from scratch.

    `scores[task]` holds "pretrained" and "scratch" values (percent, higher is better) of the metric
    `metric_names[task]`; the sentence says which won and by how much, whichever way it went.
    """
    lines = []
    for task, metric in metric_names.items():
        pre, scratch = scores.get(task, {}).get("pretrained"), scores.get(task, {}).get("scratch")
        if pre is None or scratch is None:
            lines.append(f"- {task}: not measured.")
            continue
        diff = pre - scratch
        if abs(diff) < 0.5:
            verdict = "pre-training made no clear difference"
        elif diff > 0:
            verdict = "pre-training helped"
        else:
            verdict = "pre-training did NOT help here (fine-tuning from scratch scored higher)"
        lines.append(
            f"- {task}: {metric} {pre:.1f} from the pre-trained checkpoint vs {scratch:.1f} "
            f"from scratch ({diff:+.1f} points): {verdict}."
        )
    return lines


def write_report(path: Path | str, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Writes a markdown report: `# title`, then `## heading` + body for each section; returns the path."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
