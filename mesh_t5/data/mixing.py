"""Mixing rates (paper Section 3.5.2): examples-proportional with an artificial limit K,
temperature scaling r^(1/T), and equal / unsupervised constants."""

from __future__ import annotations

from typing import Any

from mesh_t5.errors import UserError


def rate_num_examples(
    task: Any,
    maximum: float | None = None,
    temperature: float = 1.0,
    scale: float = 1.0,
    split: str = "train",
) -> float:
    """Returns min(scale * num_examples(split), maximum) ** (1 / temperature) (the rate is normalised by
    the mixture). The paper's K = 2**21 is `maximum`; temperature T > 1 flattens the mixture.
    A task without `split` has no such examples: rate 0 (T5's eval-only tasks in en_mix)."""
    if split not in task.splits:
        return 0.0
    n = task.num_input_examples(split)
    if n is None:
        raise UserError(
            f"task {task.name!r}: the number of {split!r} examples is unknown; "
            "give the mixture a numeric rate or a source that knows its size"
        )
    if temperature <= 0:
        raise UserError(f"temperature={temperature} must be > 0")
    rate = float(n) * scale
    if maximum is not None:
        rate = min(rate, float(maximum))
    if temperature != 1.0:
        rate = rate ** (1.0 / temperature)
    return rate


def rate_unsupervised(task: Any, value: float = 1e6) -> float:
    """Returns a constant rate for an unsupervised task (T5 uses 1e6 so it is sampled like a big task)."""
    return float(value)


def rate_equal(task: Any) -> float:
    """Returns 1: every task of the mixture is sampled equally often."""
    return 1.0
