"""GLUE and SuperGLUE as T5 registers them (t5/data/tasks.py, glue_utils.py): glue_<config>_v002 over
TFDS glue/<config>:1.0.0 and super_glue_<config>_v102 over super_glue/<config>:1.0.2, with T5's text
formatting ("cola sentence: ...", "mnli hypothesis: ... premise: ..."), label names, postprocessors and
metrics; plus T5's simple WSC/DPR tasks and the weight tables of the glue/super_glue mixtures."""

from __future__ import annotations

from collections.abc import Callable

from mesh_t5.data import metrics
from mesh_t5.data.preprocessors import append_eos_after_trim, rekey, tokenize
from mesh_t5.tasks import text_formats as fmt
from mesh_t5.tasks.common import (
    ExpandEach,
    add_tfds_task,
    all_match,
    deduplicate_metric,
    mean_group_metric,
    multirc,
    multirc_f1_over_all_answers,
    record,
    string_label_to_class_id,
    string_to_float,
    wsc_referent_match,
)

GLUE_TFDS_VERSION = "1.0.0"  # T5's; `tfds build glue/cola:1.0.0` prepares it (TFDS 4.9 still supports it)
SUPER_GLUE_TFDS_VERSION = "1.0.2"

_NLI3 = ["entailment", "neutral", "contradiction"]
_SPLITS = ("train", "validation", "test")

# config: (label names or None for STS-B, splits, metric fns); TFDS builder_config.label_classes.
GLUE = {
    "cola": (["unacceptable", "acceptable"], _SPLITS,
             [metrics.matthews_corrcoef]),
    "sst2": (["negative", "positive"], _SPLITS, [metrics.accuracy]),
    "mrpc": (["not_equivalent", "equivalent"], _SPLITS, [metrics.f1_score_with_invalid, metrics.accuracy]),
    "qqp": (["not_duplicate", "duplicate"], _SPLITS, [metrics.f1_score_with_invalid, metrics.accuracy]),
    "stsb": (None, _SPLITS, [metrics.pearson_corrcoef, metrics.spearman_corrcoef]),
    "mnli": (_NLI3, ("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"),
             [metrics.accuracy]),
    "mnli_mismatched": (_NLI3, ("validation", "test"), [metrics.accuracy]),
    "mnli_matched": (_NLI3, ("validation", "test"), [metrics.accuracy]),
    "qnli": (["entailment", "not_entailment"], _SPLITS, [metrics.accuracy]),
    "rte": (["entailment", "not_entailment"], _SPLITS, [metrics.accuracy]),
    "wnli": (["not_entailment", "entailment"], _SPLITS, [metrics.accuracy]),
    "ax": (_NLI3, ("test",), []),  # the diagnostic set: test only, cast as MNLI
}  # fmt: skip

SUPER_GLUE = {
    "boolq": (["False", "True"], _SPLITS, [metrics.accuracy]),
    "cb": (["entailment", "contradiction", "neutral"], _SPLITS, [metrics.mean_multiclass_f1(3), metrics.accuracy]),
    "copa": (["choice1", "choice2"], _SPLITS, [metrics.accuracy]),
    "multirc": (["False", "True"], _SPLITS, [multirc_f1_over_all_answers, mean_group_metric(all_match)]),
    "record": (None, _SPLITS, [deduplicate_metric(metrics.squad)]),
    "rte": (["entailment", "not_entailment"], _SPLITS, [metrics.accuracy]),
    "wic": (["False", "True"], _SPLITS, [metrics.accuracy]),
    "axb": (["entailment", "not_entailment"], ("test",), []),  # diagnostics: test only, cast as RTE
    "axg": (["entailment", "not_entailment"], ("test",), []),
}  # fmt: skip

# T5's mixture weights (glue_utils.py): the training-set sizes; 0 for eval-only tasks. T5 omits WNLI
# (it trains on WSC/DPR instead).
GLUE_WEIGHT_MAPPING = {
    "glue_cola_v002": 8_551.0,
    "glue_sst2_v002": 67_349.0,
    "glue_mrpc_v002": 3_668.0,
    "glue_qqp_v002": 363_849.0,
    "glue_stsb_v002": 5_749.0,
    "glue_mnli_v002": 392_702.0,
    "glue_qnli_v002": 104_743.0,
    "glue_rte_v002": 2_490.0,
    "glue_mnli_mismatched_v002": 0.0,
    "glue_mnli_matched_v002": 0.0,
    "glue_ax_v002": 0.0,
}
SUPER_GLUE_WEIGHT_MAPPING = {
    "dpr_v001_simple": 1_322.0,
    "super_glue_wsc_v102_simple_train": 259.0,
    "super_glue_wsc_v102_simple_eval": 0.0,
    "super_glue_boolq_v102": 9_427.0,
    "super_glue_cb_v102": 250.0,
    "super_glue_copa_v102": 400.0,
    "super_glue_multirc_v102": 27_243.0,
    "super_glue_record_v102": 138_854.0,
    "super_glue_rte_v102": 2_490.0,
    "super_glue_wic_v102": 5_428.0,
    "super_glue_axb_v102": 0.0,
    "super_glue_axg_v102": 0.0,
}

_TAIL = [tokenize, append_eos_after_trim]


def _formatter(config: str, labels: list[str] | None) -> Callable | ExpandEach:
    """Returns T5's text preprocessor for a GLUE/SuperGLUE config (get_glue_text_preprocessor)."""
    if config == "stsb":
        return fmt.stsb
    if config == "record":
        return ExpandEach(fmt.record_examples)
    benchmark = (
        "mnli" if ("mnli" in config or config == "ax") else "rte" if config in ("axb", "axg") else config
    )
    feature_names = {
        "multirc": ("question", "answer", "paragraph"),
        "wic": ("sentence1", "sentence2", "word"),
    }
    return fmt.glue(benchmark, labels or [], feature_names=feature_names.get(config))


def _postprocessor(config: str, labels: list[str] | None) -> Callable:
    if config == "stsb":
        return string_to_float
    if config == "multirc":
        return multirc
    if config == "record":
        return record
    return string_label_to_class_id(labels or [])


def _register_glue() -> list[str]:
    names = []
    for config, (labels, splits, metric_fns) in GLUE.items():
        name = f"glue_{config}_v002"
        add_tfds_task(
            name, f"glue/{config}:{GLUE_TFDS_VERSION}", splits, [_formatter(config, labels), *_TAIL],
            postprocess_fn=_postprocessor(config, labels), metric_fns=metric_fns,
        )  # fmt: skip
        names.append(name)
    return names


def _register_super_glue() -> list[str]:
    names = []
    for config, (labels, splits, metric_fns) in SUPER_GLUE.items():
        name = f"super_glue_{config}_v102"
        pre: list = [_formatter(config, labels), *_TAIL]
        if config == "axb":  # premise/hypothesis from sentence1/sentence2, then sorted as T5 does
            pre.insert(
                0, rekey({"premise": "sentence1", "hypothesis": "sentence2", "label": "label", "idx": "idx"})
            )
        passthrough = {"multirc": ("idx/paragraph", "idx/question", "idx/answer"),
                       "record": ("answers", "idx/passage", "idx/query")}.get(config, ())  # fmt: skip
        add_tfds_task(
            name, f"super_glue/{config}:{SUPER_GLUE_TFDS_VERSION}", splits, pre,
            postprocess_fn=_postprocessor(config, labels), metric_fns=metric_fns, passthrough=passthrough,
        )  # fmt: skip
        names.append(name)

    # T5 replaces WSC by a "simple" version: name the referent of the *pronoun*.
    wsc = f"super_glue/wsc.fixed:{SUPER_GLUE_TFDS_VERSION}"
    add_tfds_task("super_glue_wsc_v102_simple_train", wsc, ("train",), [fmt.wsc_simple(True), *_TAIL])
    add_tfds_task(
        "super_glue_wsc_v102_simple_eval", wsc, ("validation", "test"), [fmt.wsc_simple(False), *_TAIL],
        postprocess_fn=wsc_referent_match, metric_fns=[metrics.accuracy], passthrough=("label",),
    )  # fmt: skip
    add_tfds_task(
        "dpr_v001_simple", "definite_pronoun_resolution:1.1.0", ("train", "test"),
        [fmt.definite_pronoun_resolution_simple, *_TAIL], metric_fns=[metrics.accuracy],
    )  # fmt: skip
    return [*names, "super_glue_wsc_v102_simple_train", "super_glue_wsc_v102_simple_eval", "dpr_v001_simple"]


def _register_wnli_simple() -> list[str]:
    """T5's WNLI recast as WSC, for evaluation (the paper evaluates WNLI with a model trained on WSC/DPR)."""
    add_tfds_task(
        "glue_wnli_v002_simple_eval", f"glue/wnli:{GLUE_TFDS_VERSION}", ("validation", "test"),
        [fmt.wnli_simple, *_TAIL], postprocess_fn=wsc_referent_match, metric_fns=[metrics.accuracy],
        passthrough=("label",),
    )  # fmt: skip
    return ["glue_wnli_v002_simple_eval"]


GLUE_TASKS = _register_glue() + _register_wnli_simple()
SUPER_GLUE_TASKS = _register_super_glue()

__all__ = ["GLUE_TASKS", "GLUE_WEIGHT_MAPPING", "SUPER_GLUE_TASKS", "SUPER_GLUE_WEIGHT_MAPPING"]
