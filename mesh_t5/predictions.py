"""Scores a predictions JSONL (what `mesh-t5 infer` writes) against a task's or mixture's targets, without a
model: `mesh-t5 eval --predictions=FILE`.

Each line is an object with "outputs" (the decoded text) and, as `infer --task` writes them, "task" (the
task name) and "index" (the example's position in the task's split, unshuffled). A file without "task"
and "index" is matched to a single task by position. Every prediction's "inputs", when present, must be
the example's own input text, so a file made from other data or another split is refused, not scored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from mesh_t5 import data
from mesh_t5.data.benchmark_scores import benchmark_averages
from mesh_t5.errors import UserError


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_predictions(path: str) -> list[tuple[int, dict]]:
    """Returns [(line number, record)] of a predictions JSONL; a line that is not a JSON object with a
    string "outputs" is a UserError naming it."""
    if not os.path.isfile(path):
        raise UserError(f"--predictions {path} does not exist")
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(
                    f"{path}:{n} is not JSON; --predictions takes the JSONL that `mesh-t5 infer` writes"
                ) from None
            if not isinstance(record, dict) or not isinstance(record.get("outputs"), str):
                raise UserError(
                    f'{path}:{n} has no string "outputs"; --predictions takes `mesh-t5 infer` predict-mode '
                    "output (one JSON object per line)"
                )
            records.append((n, record))
    if not records:
        raise UserError(f"{path} holds no predictions")
    return records


def scored_tasks(name: str, split: str) -> list[data.Task]:
    """Returns the tasks of task-or-mixture `name` that have `split` and metrics (the ones eval scores)."""
    item = data.get_mixture_or_task(name)
    tasks = list(item.tasks) if hasattr(item, "tasks") else [item]
    chosen = [t for t in tasks if t.metric_fns and split in t.splits]
    if not chosen:
        raise UserError(f"{name!r} has no task with metrics and a {split!r} split to score")
    return chosen


def _assign(path: str, records: list[tuple[int, dict]], tasks: list[data.Task], name: str) -> dict[str, list]:
    """Returns {task name: [(line, record)]}; refuses records of other tasks, or unnamed records for a mixture."""
    named = [r for r in records if "task" in r[1]]
    if not named:
        if len(tasks) > 1:
            raise UserError(
                f'{path} has no "task" fields but {name!r} has {len(tasks)} tasks to score; write the '
                "predictions with `mesh-t5 infer --task=NAME` (it records task and index) for each of them"
            )
        return {tasks[0].name: records}
    if len(named) != len(records):
        n = next(n for n, r in records if "task" not in r)
        raise UserError(f'{path}:{n} has no "task" field while other lines have one; one file, one format')
    known = {t.name for t in tasks}
    out: dict[str, list] = {t.name: [] for t in tasks}
    for n, record in records:
        if record["task"] not in known:
            raise UserError(
                f"{path}:{n} is a prediction for task {record['task']!r}, which is not scored in {name!r} "
                f"(its tasks with this split: {', '.join(sorted(known))})"
            )
        out[record["task"]].append((n, record))
    return out


def _match(path: str, task: data.Task, split: str, records: list, examples: list[dict]) -> list[str]:
    """Returns the prediction text of each example of the split, in order; refuses a file that does not
    cover the split exactly once or whose inputs are not the split's."""
    where = f"task {task.name!r} split {split!r}"
    if not records:
        raise UserError(
            f"{path} has no predictions for {where}; run `mesh-t5 infer --task={task.name} --split={split}`"
        )
    by_index: dict[int, tuple[int, dict]] = {}
    for pos, (n, record) in enumerate(records):
        index = record.get("index", pos)
        if not isinstance(index, int) or isinstance(index, bool):
            raise UserError(f'{path}:{n} has "index" {index!r}; it must be an integer')
        if index in by_index:
            raise UserError(f"{path}:{n} repeats the prediction for example {index} of {where}")
        by_index[index] = (n, record)
    missing = [i for i in range(len(examples)) if i not in by_index]
    extra = sorted(i for i in by_index if not 0 <= i < len(examples))
    if missing or extra:
        detail = f"missing examples {_few(missing)}" if missing else f"examples {_few(extra)} do not exist"
        raise UserError(
            f"{path} has {len(records)} predictions for {where}, which has {len(examples)} examples ({detail})"
        )
    texts = []
    for i, example in enumerate(examples):
        n, record = by_index[i]
        want = example.get("inputs_pretokenized")
        if "inputs" in record and want is not None and record["inputs"] != _text(want):
            raise UserError(
                f"{path}:{n} has inputs {record['inputs'][:60]!r}, but example {i} of {where} is "
                f"{_text(want)[:60]!r}; the predictions were made for other data"
            )
        texts.append(record["outputs"])
    return texts


def _few(indices: Sequence[int]) -> str:
    shown = ", ".join(map(str, indices[:5]))
    return shown + (f" and {len(indices) - 5} more" if len(indices) > 5 else "")


def score_texts(task: data.Task, examples: Sequence[Mapping], predictions: Sequence[str]) -> dict[str, float]:
    """Returns the task's metrics of prediction texts: targets and predictions through its postprocessor."""
    targets, preds = [], []
    for example, text in zip(examples, predictions, strict=True):
        target = example.get("targets_pretokenized")
        if target is None:
            vocab = task.output_features["targets"].vocabulary
            target = vocab.decode([int(t) for t in example["targets"] if int(t) not in (0, vocab.eos_id)])
        targets.append(task.postprocess(_text(target), example=example, is_target=True))
        preds.append(task.postprocess(text, example=example, is_target=False))
    scores: dict[str, float] = {}
    for metric_fn in task.metric_fns:
        scores.update({k: float(v) for k, v in metric_fn(targets, preds).items()})
    return scores


def score_predictions(path: str, mixture_or_task_name: str, split: str = "validation") -> dict[str, float]:
    """Returns {"<task>/<metric>": value, "glue_average"?, "super_glue_average"?} of the predictions file;
    every check runs before any score, so a mismatched file is refused with one line."""
    records = read_predictions(path)
    tasks = scored_tasks(mixture_or_task_name, split)
    assigned = _assign(path, records, tasks, mixture_or_task_name)
    matched = []
    for task in tasks:
        examples = list(data.eval_examples(task, split))
        matched.append((task, examples, _match(path, task, split, assigned[task.name], examples)))
    results: dict[str, float] = {}
    for task, examples, texts in matched:
        results.update({f"{task.name}/{k}": v for k, v in score_texts(task, examples, texts).items()})
    results.update(benchmark_averages(results))
    return results
