"""GLUE and SuperGLUE tasks with T5's text formatting ("cola sentence: ...") and metrics (v002 names)."""

from __future__ import annotations

from typing import Any

from mesh_t5.data import metrics
from mesh_t5.data.preprocessors import append_eos_after_trim, format_text, stsb_label, tokenize
from mesh_t5.data.registry import Context, TaskRegistry
from mesh_t5.data.sources import TfdsSource
from mesh_t5.tasks.common import (
    DEFAULT_OUTPUT_FEATURES,
    TFDS_DATA_DIR,
    string_label_to_class_id,
    string_to_float,
)

# name: (TFDS name, input fields in T5's (sorted) order, label names or None for STS-B, metrics)
GLUE = {
    "cola": ("glue/cola:2.0.0", ["sentence"], ["unacceptable", "acceptable"], [metrics.matthews_corrcoef]),
    "sst2": ("glue/sst2:2.0.0", ["sentence"], ["negative", "positive"], [metrics.accuracy]),
    "mrpc": ("glue/mrpc:2.0.0", ["sentence1", "sentence2"], ["not_equivalent", "equivalent"],
             [metrics.f1_score_with_invalid, metrics.accuracy]),
    "qqp": ("glue/qqp:2.0.0", ["question1", "question2"], ["not_duplicate", "duplicate"],
            [metrics.f1_score_with_invalid, metrics.accuracy]),
    "stsb": ("glue/stsb:2.0.0", ["sentence1", "sentence2"], None, [metrics.pearson_corrcoef, metrics.spearman_corrcoef]),
    "mnli": ("glue/mnli:2.0.0", ["hypothesis", "premise"], ["entailment", "neutral", "contradiction"], [metrics.accuracy]),
    "qnli": ("glue/qnli:2.0.0", ["question", "sentence"], ["entailment", "not_entailment"], [metrics.accuracy]),
    "rte": ("glue/rte:2.0.0", ["sentence1", "sentence2"], ["entailment", "not_entailment"], [metrics.accuracy]),
    "wnli": ("glue/wnli:2.0.0", ["sentence1", "sentence2"], ["not_entailment", "entailment"], [metrics.accuracy]),
}  # fmt: skip

SUPERGLUE = {
    "boolq": ("super_glue/boolq:1.0.2", ["passage", "question"], ["False", "True"], [metrics.accuracy]),
    "cb": ("super_glue/cb:1.0.2", ["hypothesis", "premise"], ["entailment", "contradiction", "neutral"],
           [metrics.mean_multiclass_f1(3), metrics.accuracy]),
    "copa": ("super_glue/copa:1.0.2", ["choice1", "choice2", "premise", "question"], ["choice1", "choice2"],
             [metrics.accuracy]),
    "rte": ("super_glue/rte:1.0.2", ["hypothesis", "premise"], ["entailment", "not_entailment"], [metrics.accuracy]),
    "wic": ("super_glue/wic:1.0.2", ["sentence1", "sentence2", "word"], ["False", "True"], [metrics.accuracy]),
}  # fmt: skip


def _stsb_format(ex: dict, ctx: Context) -> dict:
    out = format_text("stsb", ["sentence1", "sentence2"])(ex, ctx)
    out["targets"] = stsb_label(ex["label"])
    return out


def _register(prefix: str, table: dict[str, tuple], suffix: str) -> list[str]:
    names = []
    for short, (tfds_name, fields, labels, metric_fns) in table.items():
        name = f"{prefix}{short}{suffix}"
        benchmark = short if prefix == "glue_" else f"{short}"
        if labels is None:
            formatter: Any = _stsb_format
            post: Any = string_to_float
        else:
            formatter = format_text(benchmark, fields, "label", labels)
            post = string_label_to_class_id(labels)
        splits = {"train": "train", "validation": "validation", "test": "test"}
        if short == "mnli":
            splits = {"train": "train", "validation": "validation_matched", "validation_mismatched": "validation_mismatched",
                      "test": "test_matched"}  # fmt: skip
        TaskRegistry.add(
            name,
            TfdsSource(tfds_name, data_dir=TFDS_DATA_DIR, splits=splits),
            [formatter, tokenize, append_eos_after_trim],
            DEFAULT_OUTPUT_FEATURES,
            postprocess_fn=post,
            metric_fns=metric_fns,
            overwrite=True,
        )
        names.append(name)
    return names


GLUE_TASKS = _register("glue_", GLUE, "_v002")
SUPERGLUE_TASKS = _register("super_glue_", SUPERGLUE, "_v102")
