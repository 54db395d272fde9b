"""Evaluation during and after training: the loss on a split, and the task's metrics on decoded
predictions (greedy by default), per task of a mixture."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from mesh_t5 import data, inference, layouts, steps
from mesh_t5.config import DecodeOptions, T5Config
from mesh_t5.data.benchmark_scores import benchmark_averages

Batch = Mapping[str, Any]


def default_feature_converter(config: T5Config) -> str:
    """Returns the data pipeline's feature converter for the architecture (enc_dec, lm, prefix_lm)."""
    return {"decoder_only": "lm", "prefix_lm": "prefix_lm"}.get(config.architecture, "enc_dec")


def _loss_results(totals: Mapping[str, float]) -> dict[str, float]:
    tokens = max(totals["weight_sum"], 1.0)
    return {
        "loss": totals["loss_sum"] / tokens,
        "accuracy": totals["correct"] / tokens,
        "tokens": totals["weight_sum"],
    }


def evaluate_loss(
    params: Any,
    batches: Any,
    eval_step_fn: Callable[[Any, Batch], dict[str, jax.Array]],
    layout: layouts.Layout | None = None,
    max_batches: int | None = None,
    totals: dict[str, float] | None = None,
) -> dict[str, float]:
    """Returns {"loss", "accuracy", "tokens"}: token-mean loss and accuracy over the batches (their
    sums are also added to `totals`, to pool several tasks). A short last batch comes padded with
    zero rows (zero loss weight) from the pipeline, so every batch has one shape."""
    pooled = totals
    totals = {"loss_sum": 0.0, "weight_sum": 0.0, "correct": 0.0}
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        sums = jax.device_get(eval_step_fn(params, steps.to_device(batch, layout)))
        for name in totals:
            totals[name] += float(sums[name])
            if pooled is not None:
                pooled[name] = pooled.get(name, 0.0) + float(sums[name])
    return _loss_results(totals)


def member_tasks(name: str, split: str | None = None) -> list[Any]:
    """Returns [task `name`], or mixture `name`'s member tasks (those that have `split` when given)."""
    item = data.get_mixture_or_task(name)
    if not isinstance(item, data.Mixture):
        return [item]
    return item.tasks_with_split(split) if split is not None else list(item.tasks)


def _strip(ids: np.ndarray, eos_id: int) -> list[int]:
    out = []
    for t in ids.tolist():
        if t == eos_id:
            break
        if t != 0:
            out.append(int(t))
    return out


def evaluate_decoded(
    params: Any,
    config: T5Config,
    task: Any,
    *,
    split: str,
    task_feature_lengths: Mapping[str, int],
    batch_size: int,
    max_examples: int | None = None,
    beam_size: int = 1,
    layout: layouts.Layout | None = None,
) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """Returns (the task's metrics on decoded predictions, [(target, prediction), ...]).

    Inputs are decoded greedily by default (beam_size=1, as the paper does for GLUE);
    both the decoded text and the pretokenized target go through the task's postprocessor.
    A decoder-only model (lm, prefix_lm) continues the inputs as its prompt.
    """
    vocabulary = task.output_features["targets"].vocabulary
    targets_len = task_feature_lengths["targets"]
    inputs_len = task_feature_lengths.get("inputs", targets_len)
    examples = []

    for example in data.eval_examples(task, split, task_feature_lengths):
        examples.append(example)
        if max_examples is not None and len(examples) >= max_examples:
            break
    targets, predictions, pairs = [], [], []
    members = params if isinstance(params, list) else [params]  # a list: an ensemble
    if len(examples) > batch_size:  # unstack once for all batches, not inside each one's decode
        members = inference.prepare_for_decoding(config, members, layout=layout)
    options = DecodeOptions(max_decode_length=targets_len, beam_size=beam_size)
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        tokens = np.zeros((batch_size, inputs_len), np.int32)  # [B, S]; the last chunk padded with empty rows
        for row, example in enumerate(chunk):
            ids = np.asarray(example["inputs"])[:inputs_len]
            tokens[row, : len(ids)] = ids
        decoded = np.asarray(
            inference.generate_tokens_and_scores(config, members, tokens, options, layout=layout)[0]
        )  # [B, L]
        for row, example in enumerate(chunk):
            text = vocabulary.decode(_strip(decoded[row], config.eos_id))
            target_text = example.get("targets_pretokenized")
            if target_text is None:
                target_text = vocabulary.decode(_strip(np.asarray(example["targets"]), config.eos_id))
            if isinstance(target_text, bytes):
                target_text = target_text.decode("utf-8")
            targets.append(task.postprocess(target_text, example=example, is_target=True))
            predictions.append(task.postprocess(text, example=example, is_target=False))
            pairs.append((str(target_text), text))
    metrics: dict[str, float] = {}
    for metric_fn in task.metric_fns:
        metrics.update({k: float(v) for k, v in metric_fn(targets, predictions).items()})
    return metrics, pairs


def evaluate(
    params: Any,
    config: T5Config,
    *,
    mixture_or_task_name: str,
    task_feature_lengths: Mapping[str, int],
    batch_size: int,
    split: str = "validation",
    max_batches: int | None = None,
    decode: bool = True,
    max_decode_examples: int | None = None,
    beam_size: int = 1,
    layout: layouts.Layout | None = None,
    eval_step_fn: Callable[[Any, Batch], dict[str, jax.Array]] | None = None,
    feature_converter: Any = None,
) -> dict[str, float]:
    """Returns {"loss", "accuracy", "tokens", "<task>/<metric>", ..., "glue_average"?, "super_glue_average"?}
    on the split of a task or mixture.

    A mixture is evaluated task by task, as T5 does: every member task that has the split (the others
    are left out, logged once) gives "<task>/loss" and its metrics on decoded predictions (greedy unless
    beam_size > 1); "loss"/"accuracy" pool the tokens of all of them. `max_batches` and
    `max_decode_examples` apply per task. Decoder-only models decode from the inputs as a prompt.
    `params` may be a list of several models' params: their ensemble, scored on decoded predictions only
    (it has no single loss).
    """
    eval_step_fn = eval_step_fn or steps.make_eval_step(config, layout)
    feature_converter = feature_converter or default_feature_converter(config)
    # Each process reads its slice of every batch (as in training); a short last batch is padded.
    shard_index, num_shards = layouts.process_batch_shard(layout) if layout else (0, 1)
    tasks = member_tasks(mixture_or_task_name, split)
    per_task = isinstance(data.get_mixture_or_task(mixture_or_task_name), data.Mixture)
    ensemble = isinstance(params, list)
    totals: dict[str, float] = {}
    results: dict[str, float] = {}
    for task in tasks:
        if not ensemble:
            batches = data.get_dataset(
                task, task_feature_lengths, split, batch_size // num_shards,
                shuffle=False, seed=0, shard_index=shard_index, num_shards=num_shards,
                feature_converter=feature_converter, pack=False, num_epochs=1,
            )  # fmt: skip
            loss = evaluate_loss(params, batches, eval_step_fn, layout, max_batches, totals)
            if per_task:
                results[f"{task.name}/loss"] = loss["loss"]
        if decode and task.metric_fns and "inputs" in task.output_features:
            metrics, _ = evaluate_decoded(
                params, config, task, split=split, task_feature_lengths=task_feature_lengths,
                batch_size=batch_size, max_examples=max_decode_examples, beam_size=beam_size, layout=layout,
            )  # fmt: skip
            results.update({f"{task.name}/{k}": v for k, v in metrics.items()})
    if not ensemble:
        results.update(_loss_results(totals or {"loss_sum": 0.0, "weight_sum": 0.0, "correct": 0.0}))
    results.update(benchmark_averages(results))  # the paper's GLUE / SuperGLUE columns, when complete
    return results
