"""The paper's summary columns: the GLUE and SuperGLUE averages, computed as T5's
`t5.evaluation.eval_utils.compute_avg_glue` does from per-task scores keyed "<task>/<metric>".

Each benchmark is a list of groups; a group with two metrics (MRPC F1 and accuracy, STS-B Pearson and
Spearman, ...) is averaged first, then the groups are averaged. An average is given only when every
metric of its benchmark is present (T5 leaves it out otherwise). WNLI and DPR are not part of either
average (T5's METRIC_NAMES do not list them; the paper's GLUE column comes from eval_utils)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# {average name: [(group, [metric keys])]}, the groups of T5's METRIC_NAMES.
BENCHMARKS: dict[str, list[tuple[str, list[str]]]] = {
    "glue_average": [
        ("CoLA", ["glue_cola_v002/matthews_corrcoef"]),
        ("SST-2", ["glue_sst2_v002/accuracy"]),
        ("MRPC", ["glue_mrpc_v002/f1", "glue_mrpc_v002/accuracy"]),
        ("STSB", ["glue_stsb_v002/pearson_corrcoef", "glue_stsb_v002/spearman_corrcoef"]),
        ("QQP", ["glue_qqp_v002/f1", "glue_qqp_v002/accuracy"]),
        ("MNLI", ["glue_mnli_matched_v002/accuracy", "glue_mnli_mismatched_v002/accuracy"]),
        ("QNLI", ["glue_qnli_v002/accuracy"]),
        ("GLUE RTE", ["glue_rte_v002/accuracy"]),
    ],
    "super_glue_average": [
        ("BoolQ", ["super_glue_boolq_v102/accuracy"]),
        ("CB", ["super_glue_cb_v102/mean_3class_f1", "super_glue_cb_v102/accuracy"]),
        ("CoPA", ["super_glue_copa_v102/accuracy"]),
        ("MultiRC", ["super_glue_multirc_v102/f1", "super_glue_multirc_v102/exact_match"]),
        ("ReCoRD", ["super_glue_record_v102/f1", "super_glue_record_v102/em"]),
        ("SuperGLUE RTE", ["super_glue_rte_v102/accuracy"]),
        ("WiC", ["super_glue_wic_v102/accuracy"]),
        ("WSC", ["super_glue_wsc_v102_simple_eval/accuracy"]),
    ],
}


def benchmark_averages(scores: Mapping[str, float]) -> dict[str, float]:
    """Returns {"glue_average"?: x, "super_glue_average"?: y} for the benchmarks whose every metric is in
    `scores` ({"<task>/<metric>": value}, values x100 as the metrics give them)."""
    out = {}
    for name, groups in BENCHMARKS.items():
        if all(key in scores for _, keys in groups for key in keys):
            out[name] = float(np.mean([np.mean([scores[k] for k in keys]) for _, keys in groups]))
    return out


def benchmark_tasks(name: str) -> list[str]:
    """Returns the task names whose metrics make up benchmark `name` ("glue_average"...), in order."""
    return list(dict.fromkeys(key.split("/")[0] for _, keys in BENCHMARKS[name] for key in keys))
