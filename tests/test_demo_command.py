"""`mesh-t5 demo`: the run directory (resume or refuse, never overwrite) and the end-to-end --quick run."""

import json

import pytest

from mesh_t5 import cli
from mesh_t5.demo import command as demo
from mesh_t5.demo import report as demo_report
from mesh_t5.demo import run as demo_run
from mesh_t5.errors import UserError


def test_new_directory_starts_and_same_settings_resume(tmp_path):
    out = tmp_path / "run"
    run = demo.Run(str(out), demo.Settings.for_run(quick=True))
    assert run.check_or_start() is False
    assert json.loads((out / demo_run.SETTINGS_FILE).read_text())["quick"] is True
    run.mark_done("corpus", {"documents": 3})
    again = demo.Run(str(out), demo.Settings.for_run(quick=True))
    assert again.check_or_start() is True
    assert again.done("corpus") == {"documents": 3} and again.done("vocab") is None


def test_other_settings_foreign_directory_and_finished_run_are_refused(tmp_path):
    out = tmp_path / "run"
    demo.Run(str(out), demo.Settings.for_run(quick=True)).check_or_start()
    with pytest.raises(UserError, match="other settings"):
        demo.Run(str(out), demo.Settings.for_run(quick=False)).check_or_start()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and is not a demo run"):
        demo.Run(str(foreign), demo.Settings.for_run(quick=True)).check_or_start()
    assert (foreign / "notes.txt").read_text() == "mine"

    finished = demo.Run(str(out), demo.Settings.for_run(quick=True))
    finished.mark_done("report", {})
    (out / demo.REPORT_FILE).write_text("# done\n")
    with pytest.raises(UserError, match="already holds a finished demo run"):
        demo.Run(str(out), demo.Settings.for_run(quick=True)).check_or_start()


def test_cli_refusal_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    run = demo.Run(str(out), demo.Settings.for_run(quick=True))
    run.check_or_start()
    run.mark_done("report", {})
    (out / demo.REPORT_FILE).write_text("# done\n")
    assert cli.main(["demo", "--quick", f"--output_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mesh-t5 demo: error: ") and "finished demo run" in err[0]


def test_demo_tasks_without_a_run_say_which_gin_file_to_pass():
    import gin

    from mesh_t5.demo import tasks as demo_tasks

    gin.clear_config()
    with pytest.raises(UserError, match="pass --gin_file=RUN/demo.gin"):
        demo_tasks.demo_data_dir()


def test_default_settings_fit_the_budget_shape():
    quick, full = demo.Settings.for_run(True), demo.Settings.for_run(False)
    assert quick.pretrain_steps < full.pretrain_steps and quick.finetune_steps < full.finetune_steps
    assert quick.vocab_size < full.vocab_size


def test_quick_demo_end_to_end(tmp_path):
    """`mesh-t5 demo --quick` into a new directory: every artefact exists and parses; a re-run refuses."""
    import os
    import subprocess
    import sys

    import matplotlib.image
    import numpy as np

    out = tmp_path / "demo"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "mesh_t5.cli", "demo", "--quick", f"--output_dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Progress: every step announced, every model step printed as the command it runs.
    for i in range(1, len(demo.STEPS) + 1):
        assert f"[{i}/{len(demo.STEPS)}]" in proc.stdout
    assert (
        "mesh-t5 train --gin_file=runs/demo_model_quick.gin --gin_file=runs/demo_pretrain.gin" in proc.stdout
    )
    assert "mesh-t5 export --checkpoint=" in proc.stdout
    # A printed command runs as copied into a shell (a fresh process): the run's demo.gin names the tasks.
    import shlex

    assert "MESH_T5_DEMO_DIR" not in proc.stdout and (out / "demo.gin").is_file()
    printed = [line.split("$ ", 1)[1] for line in proc.stdout.splitlines() if "$ mesh-t5 train " in line]
    assert len(printed) == 5 and all(f"--gin_file={out / 'demo.gin'}" in line for line in printed)
    copied = [
        a for a in shlex.split(printed[-1])[1:] if not a.startswith(("--gin.MODEL_DIR", "--gin.TRAIN_STEPS"))
    ]
    copied += [f"--gin.MODEL_DIR={tmp_path / 'copied'}", "--gin.TRAIN_STEPS=1"]
    rerun = subprocess.run(
        [sys.executable, "-m", "mesh_t5.cli", *copied], capture_output=True, text=True, env=env
    )
    assert rerun.returncode == 0 and (tmp_path / "copied" / "checkpoints" / "1").is_dir(), rerun.stderr[
        -3000:
    ]

    # Corpus and vocabulary.
    from mesh_t5.demo import corpus as demo_corpus
    from mesh_t5.vocab import SentencePieceVocabulary

    docs = demo_corpus.read_documents(out / "data" / "corpus.jsonl")
    assert len(docs) > 3000
    vocab = SentencePieceVocabulary(out / "data" / "spm.model")
    assert vocab.vocab_size == demo.Settings.for_run(True).vocab_size + 100

    # Checkpoints restore and run.
    from mesh_t5.model import T5Model

    for name in demo.MODEL_DIRS.values():
        model = T5Model.from_pretrained(str(out / name))
        logits = model.logits(np.array([[5, 6, 7, 1]], np.int32), np.array([[0, 5]], np.int32))
        assert logits.shape == (1, 2, vocab.vocab_size) and np.isfinite(logits).all()

    # The SavedModel loads and maps strings to strings.
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    serve = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    result = serve(tf.constant(["which module: Create a socket transport.", "summarize: x: y."]))
    texts = [v for v in result.values() if v.dtype == tf.string]
    assert texts and texts[0].shape[0] == 2

    # The PNG decodes; the report and results list the metrics, baselines included.
    image = matplotlib.image.imread(out / "loss_curves.png")
    assert image.ndim == 3 and image.shape[0] > 300
    results = json.loads((out / demo.RESULTS_FILE).read_text())
    scores = results["scores"]
    for task, metric in demo_report.HEADLINE_METRIC.items():
        for model in ("baseline", *demo_report.ALL_LABELS):
            assert 0.0 <= scores[task][model][metric] <= 100.0
    assert 0.0 <= scores["demo_summarize"]["pretrained"]["generated_rougeLsum"] <= 100.0
    # The baselines score the same test examples the models decode.
    evaluated = results["settings"]["eval_examples"]
    family_test = demo_run.spread(demo_corpus.read_examples(out / "data" / "family_test.jsonl"), evaluated)
    assert scores["demo_family"]["pretrained"]["examples"] == len(family_test) == evaluated
    # Spread over the test file (in module order), not its first examples: several families.
    assert len({e["targets"] for e in family_test}) >= 4
    label = scores["demo_family"]["baseline"]["label"]
    expected = 100.0 * sum(e["targets"] == label for e in family_test) / len(family_test)
    assert abs(scores["demo_family"]["baseline"]["accuracy"] - expected) < 1e-9
    summarize_test = demo_run.spread(
        demo_corpus.read_examples(out / "data" / "summarize_test.jsonl"), evaluated
    )
    from mesh_t5.data import metrics

    targets = [e["targets"] for e in summarize_test]
    lead = metrics.rouge(targets, [demo_corpus.lead_sentence(e["inputs"]) for e in summarize_test])
    # metrics.rouge reports the bootstrap median (as T5 does), which moves by a few tenths between calls.
    assert abs(scores["demo_summarize"]["baseline"]["rougeLsum"] - lead["rougeLsum"]) < 1.0
    # Rank classification picks one of the input's own sentences.
    for model in ("pretrained", "scratch"):
        picked = results["steps"]["evaluate"]["picked"][model]
        assert len(picked) == results["settings"]["num_samples"]
        assert all(
            p in demo_corpus.summarize_sentences(e["inputs"])
            for p, e in zip(picked, summarize_test, strict=False)
        )
    # The low-resource arm trained on its few examples (drawn from the training file), and each arm's
    # two starts are compared on the same test examples with an interval around the difference.
    settings = demo.Settings.for_run(True)
    for task in ("summarize", "family"):
        few = demo_corpus.read_examples(out / "data" / f"{task}_few_train.jsonl")
        train_ids = {e["id"] for e in demo_corpus.read_examples(out / "data" / f"{task}_train.jsonl")}
        assert len(few) == settings.few_shot_examples and {e["id"] for e in few} <= train_ids
    comparisons = results["steps"]["evaluate"]["comparisons"]
    assert [(c["task"], "few-example" in c["arm"]) for c in comparisons] == [
        ("demo_summarize", False), ("demo_family", False), ("demo_summarize", True), ("demo_family", True)
    ]  # fmt: skip
    for c in comparisons:
        assert c["low"] <= c["difference"] <= c["high"] and c["examples"] == evaluated
    few_family = comparisons[3]
    assert abs(few_family["pretrained"] - scores["demo_family"]["few_pretrained"]["accuracy"]) < 1e-9
    report = (out / demo.REPORT_FILE).read_text()
    assert "## Does pre-training help?" in report and "few-example arm" in report
    assert (
        "| demo_summarize | ROUGE-Lsum, picked sentence |" in report
        and "| demo_family | accuracy |" in report
    )
    assert "from scratch" in report and "loss_curves.png" in report

    # Re-running into the finished directory refuses with one line and changes nothing.
    before = (out / demo.REPORT_FILE).stat().st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith("mesh-t5 demo: error: ")
    assert "finished demo run" in again.stderr
    assert (out / demo.REPORT_FILE).stat().st_mtime_ns == before
