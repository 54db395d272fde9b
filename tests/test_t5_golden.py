"""mesh_t5's catalogue against the original T5 library (t5 0.9.4 / seqio 0.0.20), through the fixtures
tools/make_t5_golden.py wrote from it (tests/golden/t5_oracle.json): for every GLUE / SuperGLUE / WSC /
DPR / SQuAD / CNN-DM / WMT task, the same raw examples must give the same formatted text, the same
postprocessed targets and predictions, and the same metric values; plus stand-alone metric cases and
T5's GLUE / SuperGLUE averages. Where mesh_t5 deliberately differs, the test says so and why."""

import json
import math
from pathlib import Path

import pytest

from mesh_t5.data import metrics
from mesh_t5.data.benchmark_scores import benchmark_averages
from mesh_t5.tasks.common import task_with_examples
from mesh_t5.vocab import ByteVocabulary

GOLDEN = json.loads((Path(__file__).parent / "golden" / "t5_oracle.json").read_text(encoding="utf-8"))
TASKS = GOLDEN["tasks"]
VOCAB = ByteVocabulary()


def _jsonable(value):
    """The fixture's JSON form of a postprocessed value (tuples as lists, numpy scalars as Python)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else list(v)))


def _examples(key):
    golden = TASKS[key]
    task = task_with_examples(key.split("#")[0], {golden["split"]: golden["raw"]}, vocabulary=VOCAB)
    return task, list(task.get_dataset(golden["split"], shuffle=False, num_epochs=1))


@pytest.mark.parametrize("key", sorted(TASKS))
def test_formatting_matches_t5(key):
    _, examples = _examples(key)
    got = [{"inputs": e["inputs_pretokenized"], "targets": e["targets_pretokenized"]} for e in examples]
    assert got == TASKS[key]["formatted"]


_SCORED = sorted(k for k, v in TASKS.items() if "metrics" in v)


@pytest.mark.parametrize("key", _SCORED)
def test_postprocessing_and_metrics_match_t5(key):
    golden = TASKS[key]
    task, examples = _examples(key)
    targets = [task.postprocess(e["targets_pretokenized"], example=e, is_target=True) for e in examples]
    preds = [
        task.postprocess(p, example=e, is_target=False)
        for p, e in zip(golden["predictions"], examples, strict=True)
    ]
    assert _jsonable(targets) == golden["postprocessed_targets"]
    assert _jsonable(preds) == golden["postprocessed_predictions"]
    scores = {}
    for fn in task.metric_fns:
        scores.update(fn(targets, preds))
    assert set(scores) == set(golden["metrics"])
    for name, value in golden["metrics"].items():
        # ROUGE: both are the median of a bootstrap over examples (rouge_score's BootstrapAggregator,
        # unseeded), which can move by a resample; everything else is deterministic.
        tol = 1.0 if key.startswith("cnn_dailymail") else 1e-9
        assert scores[name] == pytest.approx(value, abs=tol), name


def test_tricky_postprocessing_cases_are_covered():
    """The fixtures hold the cases T5's own code treats specially (so the parity above tests them)."""
    wsc = TASKS["super_glue_wsc_v102_simple_eval"]
    # An empty or determiner-only prediction is -1 (neither label), so it cannot match label 0 by accident.
    assert wsc["predictions"][:2] == ["", "the"] and wsc["postprocessed_predictions"][:2] == [-1, -1]
    # "Sid's" vs the referent "Sid": a possessive only matches a possessive.
    assert wsc["postprocessed_predictions"][4] == 0
    stsb = TASKS["glue_stsb_v002"]
    assert [f["targets"] for f in stsb["formatted"]][:2] == ["5.0", "1.6"]  # rounded to 0.2
    assert stsb["postprocessed_predictions"][5] == -1.0  # not a number
    record = TASKS["super_glue_record_v102"]
    assert len(record["formatted"]) == 5 and len(record["raw"]) == 3  # one example per answer
    assert TASKS["super_glue_record_v102#test"]["formatted"][0]["targets"] == "<unk>"
    assert TASKS["super_glue_multirc_v102"]["metrics"]["exact_match"] == pytest.approx(100 / 3)


# ----------------------------------------------------------------------------- stand-alone metrics

CASES = GOLDEN["metric_cases"]


def test_sequence_accuracy_whitespace_as_t5():
    case = CASES["sequence_accuracy"]
    # T5 compares the strings exactly: "a b " != "a b" and " a b" != "a b".
    assert metrics.sequence_accuracy(case["targets"], case["predictions"]) == case["value"]


def test_bleu_single_and_multi_reference():
    case = CASES["bleu_single"]
    assert metrics.bleu(case["targets"], case["predictions"])["bleu"] == pytest.approx(case["value"]["bleu"])
    # Deliberate difference: T5's bleu() hands a list of per-example reference lists straight to sacreBLEU,
    # which reads it as reference *streams* (one list per reference, one entry per prediction), so it only
    # runs when #examples == #references and then pairs the wrong references. mesh_t5 takes each example's
    # own references (the natural layout of a multi-reference dataset) and transposes them into streams;
    # the result equals T5's on the stream layout.
    case = CASES["bleu_reference_streams"]
    per_example = [list(r) for r in zip(*case["streams"], strict=True)]
    got = metrics.bleu(per_example, case["predictions"])["bleu"]
    assert got == pytest.approx(case["value"]["bleu"])


def test_rouge_matches_t5():
    case = CASES["rouge"]
    # One example: the bootstrap median is the score itself, exactly.
    for t, p, value in zip(case["targets"], case["predictions"], case["per_example"], strict=True):
        got = metrics.rouge([t], [p])
        assert got == pytest.approx(value, abs=1e-9)
    got = metrics.rouge(case["targets"], case["predictions"])
    # Several examples: a bootstrap median (unseeded in rouge_score) lies within the per-example range
    # and close to T5's.
    for key, value in case["value"].items():
        assert got[key] == pytest.approx(value, abs=3.0)


def test_squad_normalisation_matches_t5():
    case = CASES["squad"]
    assert metrics.squad(case["targets"], case["predictions"]) == pytest.approx(case["value"])


def test_classification_metrics_match_t5():
    case = CASES["matthews_corrcoef"]
    assert metrics.matthews_corrcoef(case["targets"], case["predictions"]) == pytest.approx(case["value"])
    case = CASES["f1_with_invalid"]
    assert metrics.f1_score_with_invalid(case["targets"], case["predictions"]) == pytest.approx(case["value"])
    case = CASES["pearson_spearman"]
    got = {
        **metrics.pearson_corrcoef(case["targets"], case["predictions"]),
        **metrics.spearman_corrcoef(case["targets"], case["predictions"]),
    }
    assert got == pytest.approx(case["value"])


# ----------------------------------------------------------------------------- GLUE / SuperGLUE averages


@pytest.mark.parametrize("which", ["from_tasks", "hand"])
def test_benchmark_averages_match_t5_eval_utils(which):
    golden = GOLDEN["averages"][which]
    got = benchmark_averages(golden["scores"])
    for name in ("glue_average", "super_glue_average"):
        assert got.get(name) == pytest.approx(golden[name]), name


def test_benchmark_averages_by_hand():
    # GLUE: CoLA, SST-2, MRPC (F1, acc), STS-B (Pearson, Spearman), QQP (F1, acc), MNLI (m, mm), QNLI, RTE:
    # eight groups, a two-metric group averaged first. SuperGLUE: BoolQ, CB (F1, acc), COPA, MultiRC (F1a, EM),
    # ReCoRD (F1, EM), RTE, WiC, WSC: eight groups. WNLI and DPR do not count (as in T5's eval_utils).
    scores = {
        "glue_cola_v002/matthews_corrcoef": 40.0, "glue_sst2_v002/accuracy": 90.0,
        "glue_mrpc_v002/f1": 80.0, "glue_mrpc_v002/accuracy": 70.0,
        "glue_stsb_v002/pearson_corrcoef": 85.0, "glue_stsb_v002/spearman_corrcoef": 83.0,
        "glue_qqp_v002/f1": 60.0, "glue_qqp_v002/accuracy": 64.0,
        "glue_mnli_matched_v002/accuracy": 75.0, "glue_mnli_mismatched_v002/accuracy": 77.0,
        "glue_qnli_v002/accuracy": 88.0, "glue_rte_v002/accuracy": 66.0, "glue_wnli_v002/accuracy": 0.0,
    }  # fmt: skip
    want = (40 + 90 + 75 + 84 + 62 + 76 + 88 + 66) / 8
    got = benchmark_averages(scores)
    assert got["glue_average"] == pytest.approx(want) and "super_glue_average" not in got
    del scores["glue_rte_v002/accuracy"]  # a member missing: no average (T5 computes none either)
    assert "glue_average" not in benchmark_averages(scores)
    sg = {
        "super_glue_boolq_v102/accuracy": 80.0, "super_glue_cb_v102/mean_3class_f1": 70.0,
        "super_glue_cb_v102/accuracy": 90.0, "super_glue_copa_v102/accuracy": 60.0,
        "super_glue_multirc_v102/f1": 70.0, "super_glue_multirc_v102/exact_match": 30.0,
        "super_glue_record_v102/f1": 72.0, "super_glue_record_v102/em": 70.0,
        "super_glue_rte_v102/accuracy": 75.0, "super_glue_wic_v102/accuracy": 65.0,
        "super_glue_wsc_v102_simple_eval/accuracy": 62.0, "dpr_v001_simple/accuracy": 0.0,
    }  # fmt: skip
    want = (80 + 80 + 60 + 50 + 71 + 75 + 65 + 62) / 8
    assert benchmark_averages(sg)["super_glue_average"] == pytest.approx(want)
    assert not any(math.isnan(v) for v in benchmark_averages({**scores, **sg}).values())


@pytest.mark.parametrize(
    ("mixture", "average", "label"),
    [("glue_v002_proportional", "glue_average", "GLUE average"),
     ("super_glue_v102_proportional", "super_glue_average", "SuperGLUE average")],
)  # fmt: skip
def test_eval_predictions_reports_t5s_average_for_the_mixture(tmp_path, capsys, mixture, average, label):
    """`mesh-t5 eval --predictions` on the mixture (its tasks reading the fixture's raw examples) prints
    and returns the average T5's eval_utils computed from the same predictions."""
    from mesh_t5 import cli
    from mesh_t5.data import TaskRegistry, get_mixture, get_task

    members = {t.name for t in get_mixture(mixture).tasks}
    originals, rows = {}, []
    for key, golden in TASKS.items():
        if "#" in key or key not in members:
            continue
        originals[key] = get_task(key)
        TaskRegistry.add(
            task_with_examples(key, {golden["split"]: golden["raw"]}, vocabulary=VOCAB), overwrite=True
        )
        if golden["split"] == "validation" and "predictions" in golden:
            rows += [{"task": key, "index": i, "outputs": p} for i, p in enumerate(golden["predictions"])]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    try:
        code = cli.main(["eval", f"--predictions={path}", f"--gin.MIXTURE_OR_TASK_NAME={mixture}"])
    finally:
        for task in originals.values():
            TaskRegistry.add(task, overwrite=True)
    out = capsys.readouterr()
    assert code == 0, out.err
    want = GOLDEN["averages"]["from_tasks"][average]
    assert json.loads(out.out)[average] == pytest.approx(want)
    assert f"{label} {want:.2f}" in out.err
