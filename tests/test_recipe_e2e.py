"""The paper's recipe end to end through the command line, on TFDS mock data (each dataset's own feature
spec, nothing downloaded), a tiny model and a few steps, every command in its own process:

    mesh-t5 train   pre-train on c4_v220_span_corruption
    mesh-t5 train   fine-tune from it on glue_v002_proportional / super_glue_v102_proportional,
                    evaluating during training
    mesh-t5 eval    every task of the mixture that has a validation split: its loss and T5's metrics
    mesh-t5 infer   predictions for one task's validation split
    mesh-t5 eval --predictions   scores them without a model, to the numbers `mesh-t5 eval` gave

The GLUE and SuperGLUE chains run side by side (two cores) after the shared pre-training.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mock_tfds import NUM_EXAMPLES, train_tiny_vocab

MOCK_CLI = str(Path(__file__).with_name("mock_tfds.py"))  # `mesh-t5` under tfds.testing.mock_data
LENGTHS = "{'inputs': 64, 'targets': 8}"
FINETUNE_STEPS = 4  # counted from the pre-training's 2 steps: 2 fine-tuning steps, evaluated at 3 and 4

# T5's metric names per task (t5/data/glue_utils.py); tasks without a validation split are left out.
GLUE_METRICS = {
    "glue_cola_v002": ["matthews_corrcoef"],
    "glue_sst2_v002": ["accuracy"],
    "glue_mrpc_v002": ["f1", "accuracy"],
    "glue_qqp_v002": ["f1", "accuracy"],
    "glue_stsb_v002": ["pearson_corrcoef", "spearman_corrcoef"],
    "glue_mnli_matched_v002": ["accuracy"],
    "glue_mnli_mismatched_v002": ["accuracy"],
    "glue_qnli_v002": ["accuracy"],
    "glue_rte_v002": ["accuracy"],
}
SUPER_GLUE_METRICS = {
    "super_glue_boolq_v102": ["accuracy"],
    "super_glue_cb_v102": ["mean_3class_f1", "accuracy"],
    "super_glue_copa_v102": ["accuracy"],
    "super_glue_multirc_v102": ["f1", "exact_match"],
    "super_glue_record_v102": ["em", "f1"],
    "super_glue_rte_v102": ["accuracy"],
    "super_glue_wic_v102": ["accuracy"],
    "super_glue_wsc_v102_simple_eval": ["accuracy"],
}
NO_VALIDATION = {
    "glue_v002_proportional": ["glue_mnli_v002", "glue_ax_v002"],
    "super_glue_v102_proportional": ["dpr_v001_simple", "super_glue_wsc_v102_simple_train",
                                     "super_glue_axb_v102", "super_glue_axg_v102"],
}  # fmt: skip
CORRELATIONS = ("matthews_corrcoef", "pearson_corrcoef", "spearman_corrcoef")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    vocab = train_tiny_vocab(root / "spm.model")
    repo = str(Path(__file__).resolve().parents[1])
    return {
        **os.environ,
        "MESH_T5_VOCAB": str(vocab),
        "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "",  # one CPU device: the recipe, not the mesh, is under test
        "MESH_T5_RECIPE_ROOT": str(root),
    }


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, MOCK_CLI, *args], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"mesh-t5 {' '.join(args)}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def pretrained(env) -> Path:
    model_dir = Path(env["MESH_T5_RECIPE_ROOT"]) / "pretrain"
    proc = _cli(
        env, "train", "--gin_file=models/tiny.gin", "--gin_file=runs/pretrain.gin",
        f"--gin.MODEL_DIR='{model_dir}'", "--gin.MIXTURE_OR_TASK_NAME='c4_v220_span_corruption'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}", "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=4",
    )  # fmt: skip
    assert (
        "mesh-t5 train: step 2, loss" in proc.stdout + proc.stderr
        and (model_dir / "checkpoints" / "2").is_dir()
    )
    return model_dir


def _metrics_line(text: str, prefix: str) -> dict[str, float]:
    """Returns {name: value} of the last line of `text` starting with `prefix` ("k v  k v ..."), not counting
    the benchmark-average line that follows it."""
    lines = [ln for ln in text.splitlines() if ln.startswith(prefix) and " average " not in ln]
    assert lines, f"no line starting with {prefix!r} in:\n{text[-3000:]}"
    fields = lines[-1][len(prefix) :].split()
    return {k: float(v) for k, v in zip(fields[::2], fields[1::2], strict=True)}


def _check_mixture_results(results: dict[str, float], expected: dict[str, list[str]], mixture: str) -> None:
    for task, names in expected.items():
        assert math.isfinite(results[f"{task}/loss"]) and results[f"{task}/loss"] > 0, task
        for name in names:
            value = results[f"{task}/{name}"]
            if name in CORRELATIONS:  # undefined (nan) when a barely trained model predicts a constant
                assert math.isnan(value) or -100.0 <= value <= 100.0, (task, name, value)
            else:
                assert math.isfinite(value) and 0.0 <= value <= 100.0, (task, name, value)
    tasks_seen = {k.split("/")[0] for k in results if "/" in k}
    assert tasks_seen == set(expected)  # every task with the split, and only those
    assert not tasks_seen & set(NO_VALIDATION[mixture])
    assert math.isfinite(results["loss"]) and results["tokens"] > 0


def _recipe(
    env: dict, pretrained: Path, mixture: str, expected: dict[str, list[str]], infer_task: str
) -> dict:
    root = Path(env["MESH_T5_RECIPE_ROOT"])
    model_dir, predictions = root / mixture, root / f"{infer_task}.jsonl"
    common = [f"--gin.MIXTURE_OR_TASK_NAME='{mixture}'", f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}"]
    finetune = _cli(
        env, "train", "--gin_file=models/tiny.gin", "--gin_file=runs/finetune.gin", *common,
        f"--gin.INIT_CHECKPOINT='{pretrained}'", f"--gin.MODEL_DIR='{model_dir}'",
        f"--gin.TRAIN_STEPS={FINETUNE_STEPS}", "--gin.BATCH_SIZE=4", "--gin.train.eval_period=1",
        "--gin.train.eval_batches=1", "--gin.train.eval_decode_examples=4",
    )  # fmt: skip
    evaluate = _cli(
        env, "eval", "--gin_file=runs/eval.gin", *common, f"--gin.CHECKPOINT_PATH='{model_dir}'",
        "--gin.BATCH_SIZE=4", "--gin.evaluate_checkpoints.max_batches=1",
        f"--gin.evaluate_checkpoints.max_decode_examples={NUM_EXAMPLES}",
    )  # fmt: skip
    infer = _cli(
        env, "infer", f"--checkpoint={model_dir}", f"--task={infer_task}", f"--output_file={predictions}",
        "--max_decode_length=8", "--max_input_length=64",
    )  # fmt: skip
    scored = _cli(env, "eval", f"--predictions={predictions}", f"--gin.MIXTURE_OR_TASK_NAME='{infer_task}'")
    return {
        "finetune": finetune,
        "eval": evaluate,
        "infer": infer,
        "predictions": predictions,
        "scored": scored,
    }


def test_pretrain_finetune_eval_infer_on_glue_and_super_glue(env, pretrained):
    runs = {
        "glue_v002_proportional": (GLUE_METRICS, "glue_cola_v002"),
        "super_glue_v102_proportional": (SUPER_GLUE_METRICS, "super_glue_boolq_v102"),
    }
    with ThreadPoolExecutor(2) as pool:
        futures = {m: pool.submit(_recipe, env, pretrained, m, exp, task) for m, (exp, task) in runs.items()}
        done = {m: f.result() for m, f in futures.items()}
    for mixture, (expected, infer_task) in runs.items():
        out = done[mixture]
        # Fine-tuning starts from the pre-training's step and evaluates every step (3 and 4).
        assert (
            f"mesh-t5 train: step {FINETUNE_STEPS}, loss" in out["finetune"].stdout + out["finetune"].stderr
        )
        for step in (3, 4):
            _check_mixture_results(
                _metrics_line(out["finetune"].stderr, f"eval step {step}: "), expected, mixture
            )
        # Tasks without the split are said once per split in the log, not silently dropped.
        left_out = [ln for ln in out["finetune"].stderr.splitlines() if "no 'validation' split" in ln]
        assert len(left_out) == 1 and all(f"'{t}'" in left_out[0] for t in NO_VALIDATION[mixture])
        # `mesh-t5 eval` prints every task's metrics for the last checkpoint.
        results = _metrics_line(out["eval"].stderr, f"step {FINETUNE_STEPS}: ")
        _check_mixture_results(results, expected, mixture)
        # `mesh-t5 infer` writes predictions for the whole split (the examples the evaluation decoded).
        rows = [json.loads(line) for line in out["predictions"].read_text().splitlines()]
        prefix = {"glue_cola_v002": "cola sentence: ", "super_glue_boolq_v102": "boolq "}[infer_task]
        labels = {
            "glue_cola_v002": {"acceptable", "unacceptable"},
            "super_glue_boolq_v102": {"True", "False"},
        }
        assert len(rows) == NUM_EXAMPLES and all(r["inputs"].startswith(prefix) for r in rows)
        assert all(r["targets"] in labels[infer_task] and isinstance(r["outputs"], str) for r in rows)
        assert all(math.isfinite(r["score"]) and r["score"] < 0 for r in rows)
        assert re.search(
            rf"wrote {NUM_EXAMPLES} predict results to {re.escape(str(out['predictions']))}",
            out["infer"].stderr,
        )
        # `mesh-t5 eval --predictions` scores infer's file, without a model, to the numbers `mesh-t5 eval` gave.
        scored = json.loads(out["scored"].stdout.strip().splitlines()[-1])
        names = [f"{infer_task}/{name}" for name in expected[infer_task]]
        assert sorted(scored) == sorted(names)
        for name in names:
            assert scored[name] == pytest.approx(results[name], nan_ok=True), name
        # The paper's summary column: the mean over T5's task groups, a two-metric task averaged first.
        average = _average_line(out["eval"].stderr, f"step {FINETUNE_STEPS}: ", AVERAGES[mixture][0])
        assert average == pytest.approx(_hand_average(results, AVERAGES[mixture][1]), abs=0.006, nan_ok=True)


# Each benchmark's groups as the paper's GLUE / SGLUE columns count them (T5's eval_utils.METRIC_NAMES):
# WNLI and DPR are not in them; MNLI is matched and mismatched averaged.
AVERAGES = {
    "glue_v002_proportional": ("GLUE average", [
        ["glue_cola_v002/matthews_corrcoef"], ["glue_sst2_v002/accuracy"],
        ["glue_mrpc_v002/f1", "glue_mrpc_v002/accuracy"],
        ["glue_stsb_v002/pearson_corrcoef", "glue_stsb_v002/spearman_corrcoef"],
        ["glue_qqp_v002/f1", "glue_qqp_v002/accuracy"],
        ["glue_mnli_matched_v002/accuracy", "glue_mnli_mismatched_v002/accuracy"],
        ["glue_qnli_v002/accuracy"], ["glue_rte_v002/accuracy"],
    ]),
    "super_glue_v102_proportional": ("SuperGLUE average", [
        ["super_glue_boolq_v102/accuracy"], ["super_glue_cb_v102/mean_3class_f1", "super_glue_cb_v102/accuracy"],
        ["super_glue_copa_v102/accuracy"], ["super_glue_multirc_v102/f1", "super_glue_multirc_v102/exact_match"],
        ["super_glue_record_v102/f1", "super_glue_record_v102/em"], ["super_glue_rte_v102/accuracy"],
        ["super_glue_wic_v102/accuracy"], ["super_glue_wsc_v102_simple_eval/accuracy"],
    ]),
}  # fmt: skip


def _hand_average(results: dict[str, float], groups: list[list[str]]) -> float:
    group_means = [sum(results[k] for k in keys) / len(keys) for keys in groups]
    return sum(group_means) / len(group_means)


def _average_line(text: str, prefix: str, name: str) -> float:
    """Returns the value after `name` on the last `prefix` line that has it ("step 4: GLUE average 47.53")."""
    lines = [ln for ln in text.splitlines() if ln.startswith(prefix) and f"{name} " in ln]
    assert lines, f"no {name!r} line starting with {prefix!r} in:\n{text[-3000:]}"
    return float(lines[-1].split(f"{name} ")[1].split()[0])
