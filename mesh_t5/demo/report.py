"""The demo's outputs for people: a PNG of the loss curves and a short markdown report.

Plain functions over plain data (step/value lists, metric dicts, strings), so they are
testable without training anything; `mesh_t5.demo.command` gathers the data (its steps'
records) and writes the files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from mesh_t5.demo import corpus as demo_corpus
from mesh_t5.demo import tasks as demo_tasks

Curve = Sequence[tuple[int, float]]
# The metrics reported per task (percent, higher is better); the headline metric decides "beats".
# summarize's plain ROUGE scores the sentence the model picks by its score; "generated_" ones score
# its greedy generation (both against the same lead-sentence baseline).
TASK_METRICS = {
    demo_tasks.SUMMARIZE: ("rouge1", "rouge2", "rougeLsum", "generated_rougeLsum"),
    demo_tasks.FAMILY: ("accuracy",),
}
METRIC_LABELS = {
    "rouge1": "ROUGE-1, picked sentence",
    "rouge2": "ROUGE-2, picked sentence",
    "rougeLsum": "ROUGE-Lsum, picked sentence",
    "generated_rougeLsum": "ROUGE-Lsum, greedy generation",
}
# The second comparison of each arm and task: log p(reference target) per test example, summed over its
# tokens and EOS (`mesh-t5 infer --mode=score`): a paired measure of what each model learned.
LIKELIHOOD_LABEL = "log-likelihood of the target (nats)"
HEADLINE_METRIC = {demo_tasks.SUMMARIZE: "rougeLsum", demo_tasks.FAMILY: "accuracy"}
MODELS = {"pretrained": "pre-trained + fine-tuned", "scratch": "fine-tuned from scratch"}
# The low-resource arm: the same two starts fine-tuned on a few labelled examples per task.
FEW_MODELS = {"few_pretrained": "pre-trained, few examples", "few_scratch": "from scratch, few examples"}
ALL_LABELS = {**MODELS, **FEW_MODELS}


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


def per_example_scores(task_name: str, targets: Sequence[str], predictions: Sequence[str]) -> list[float]:
    """Returns each example's headline score x100: ROUGE-Lsum F (as `metrics.rouge`) or 0/100 for a match."""
    if task_name == demo_tasks.FAMILY:
        return [100.0 * (t == p) for t, p in zip(targets, predictions, strict=True)]
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeLsum"])
    return [
        100.0 * scorer.score(t.replace(" . ", " .\n"), p.replace(" . ", " .\n"))["rougeLsum"].fmeasure
        for t, p in zip(targets, predictions, strict=True)
    ]


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Returns {"difference", "low", "high", "examples"}: mean(a - b) and its percentile bootstrap interval.

    `a[i]` and `b[i]` are two models' scores on the same test example i (paired), so the
    differences are independent draws over test examples and resampling them with replacement
    estimates how much the mean difference would move on another test set of this size. It says
    nothing about training randomness (initialisation, data order): that is held fixed.
    """
    import numpy as np

    diffs = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diffs.ndim != 1 or len(a) != len(b) or not len(diffs):
        raise ValueError(f"need two equally long non-empty score lists, got {len(a)} and {len(b)}")
    # [resamples, n] indices: each row is one test set of n examples drawn with replacement.
    means = diffs[np.random.default_rng(seed).integers(0, len(diffs), (resamples, len(diffs)))].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return {"difference": float(diffs.mean()), "low": float(low), "high": float(high), "examples": len(diffs)}


def transfer_verdict(comparison: Mapping[str, float]) -> str:
    """Says what a paired comparison (see `paired_bootstrap`) shows, from its interval alone."""
    if comparison["low"] > 0:
        return "pre-training helped (the 95% interval is above zero)"
    if comparison["high"] < 0:
        return "pre-training did NOT help: it scored lower (the 95% interval is below zero)"
    return "no difference beyond test-sample noise (the 95% interval includes zero)"


def transfer_section(comparisons: Sequence[Mapping[str, object]]) -> str:
    """Returns the pre-trained vs from-scratch table of each fine-tuning arm and task, with intervals.

    Each comparison: {"arm", "task", "metric", "scratch", "pretrained", "difference", "low", "high",
    "examples"} with scores as per-example means (percent); the verdict comes from the interval.
    """
    if not comparisons:
        return "(not measured)"
    header = ["fine-tuning data", "task", "metric (per-example mean; scores in %)", "from scratch", "pre-trained",
              "difference [95% interval]", "verdict"]  # fmt: skip
    table = markdown_table(header, [
        [c["arm"], c["task"], c["metric"], f"{c['scratch']:.1f}", f"{c['pretrained']:.1f}",
         f"{c['difference']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}]", transfer_verdict(c)]
        for c in comparisons
    ])  # fmt: skip
    examples = sorted({int(c["examples"]) for c in comparisons})
    return (
        f"{table}\n\nBoth models of an arm are fine-tuned with the same steps and data and "
        f"scored on the same test examples ({', '.join(map(str, examples))} per task); the interval is a "
        "paired bootstrap over those examples (2,000 resamples of the per-example differences). It covers "
        "test-sample noise only: each model is one training run (one seed, one draw of the few examples)."
        + (f" The {LIKELIHOOD_LABEL} is what the model gives the reference target (`mesh-t5 infer --mode=score`, "
           "summed over its tokens and EOS); higher is better."
           if any(c["metric"] == LIKELIHOOD_LABEL for c in comparisons) else "")
    )  # fmt: skip


def baseline_name(task: str, baseline: Mapping[str, object]) -> str:
    """Says what a task's trivial baseline is: copying the input's lead sentence, or the majority class."""
    if task == demo_tasks.SUMMARIZE:
        return "lead sentence of the input"
    return f"majority class ({baseline.get('label', '?')})"


def baseline_verdict(scores: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[str]:
    """Returns one line per task saying whether each fine-tuned model beats the trivial baseline.

    `scores[task][model][metric]` with models "baseline", "pretrained" and "scratch"; the
    headline metric of each task decides.
    """
    lines = []
    for task, metric in HEADLINE_METRIC.items():
        by_model = scores.get(task, {})
        base = by_model.get("baseline", {}).get(metric)
        if base is None:
            lines.append(f"- {task}: not measured.")
            continue
        parts = []
        for model, label in ALL_LABELS.items():
            value = by_model.get(model, {}).get(metric)
            if value is not None:
                word = "beats" if value > base else "does NOT beat"
                parts.append(f"{label} {word} it ({value:.1f}, {value - base:+.1f} points)")
        lines.append(f"- {task}: baseline {metric} {base:.1f}; " + "; ".join(parts) + ".")
    return lines


def results_section(scores: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Returns the metrics table (baseline, each fine-tuned model) and the baseline verdicts below it.

    Columns: from scratch and pre-trained, then the few-example arm's two when `scores` has them.
    """
    models = ["scratch", "pretrained"] + [
        m for m in ("few_scratch", "few_pretrained") if any(m in by_model for by_model in scores.values())
    ]
    rows = []
    for task, metrics in TASK_METRICS.items():
        by_model = scores.get(task, {})
        baseline = by_model.get("baseline", {})
        for metric in metrics:
            base = baseline.get(metric.removeprefix("generated_"))
            rows.append(
                [
                    task,
                    METRIC_LABELS.get(metric, metric),
                    f"{format_number(base)} ({baseline_name(task, baseline)})",
                ]
                + [format_number(by_model.get(model, {}).get(metric)) for model in models]
            )
    table = markdown_table(
        ["task", "metric (test split, %)", "trivial baseline", *(ALL_LABELS[m] for m in models)], rows
    )
    lines = baseline_verdict(scores)
    shortest = scores.get(demo_tasks.SUMMARIZE, {}).get("shortest", {}).get("rougeLsum")
    if shortest is not None:
        lines.append(
            f"- {demo_tasks.SUMMARIZE}, for reference: a hand-made rule, picking the input's shortest "
            f"sentence, scores ROUGE-Lsum {shortest:.1f}."
        )
    return "\n".join([table, "", *lines])


def samples_section(samples: Sequence[Mapping[str, object]]) -> str:
    """Returns the beam-search samples: each input (shortened), its target and every model's output."""
    blocks = [
        f"**{s['task']}** — input: {shorten(str(s['inputs']), 300)}\n\n- target: {s['targets']}\n"
        + "".join(f"- {name}: {pred}\n" for name, pred in dict(s["predictions"]).items())
        for s in samples
    ]
    return "\n\n".join(blocks) or "(no samples)"


def corpus_section(corpus: Mapping[str, object]) -> str:
    """Returns where the corpus came from, how it was cleaned, and the example counts of each task split."""
    counters = dict(corpus.get("counters", {}))
    examples = dict(corpus.get("task_examples", {}))
    rows = [
        [task, *(dict(counts).get(s, 0) for s in demo_corpus.SPLITS)] for task, counts in examples.items()
    ]
    table = markdown_table(["task", *demo_corpus.SPLITS], rows)
    return (
        f"{counters.get('docstrings', '?')} docstrings from {counters.get('files', '?')} standard-library files, "
        f"read with `ast` (nothing imported), cleaned with C4's rules (`mesh_t5/data/c4_filters.py`) and "
        f"deduplicated: {corpus.get('documents', '?')} documents; pre-training text "
        f"{dict(corpus.get('pretrain_bytes', {})).get('train', 0) / 1e6:.2f} MB (train split only).\n\n"
        "summarize: the object's name and its docstring's first sentences (the summary line and up to "
        f"{demo_corpus.SUMMARIZE_MAX_SENTENCES - 1} more) in a shuffled order -> the summary line. The "
        "model's answer is the input sentence it scores highest as the target (rank classification); its "
        "greedy generation is scored too. The baseline copies the input's first sentence. family: a "
        "docstring -> the standard-library package it comes from; the baseline answers the most frequent "
        "training label.\n\n" + table
    )


def timing_section(seconds: Mapping[str, object]) -> str:
    """Returns the per-step seconds and their total (steps without a time show "—")."""
    total = sum(float(v) for v in seconds.values() if isinstance(v, int | float))
    rows = [[name, "—" if v is None else v] for name, v in seconds.items()]
    note = "steps of this report's run; resumed steps keep their first timing"
    return markdown_table(["step", "seconds"], rows) + f"\n\nTotal: {total:.0f} s ({note})."


def write_report(path: Path | str, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Writes a markdown report: `# title`, then `## heading` + body for each section; returns the path."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
