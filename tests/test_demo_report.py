"""The demo's report pieces: the loss PNG decodes with the curves drawn, tables and verdicts are right."""

import matplotlib.image

from mesh_t5.demo import report as dr


def test_plot_loss_curves_writes_a_decodable_png(tmp_path):
    curves = {
        "pre-training": {"span corruption": [(s, 6.0 / (1 + s / 50)) for s in range(1, 200)]},
        "fine-tuning": {
            "from pre-trained": [(s, 2.0) for s in range(50)],
            "from scratch": [(s, 3.0) for s in range(50)],
        },
        "empty": {"nothing": []},
    }
    path = dr.plot_loss_curves(curves, tmp_path / "loss.png", title="demo")
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert (
        image.ndim == 3 and height > 300 and width > 1000
    )  # two panels side by side: the empty one is skipped
    assert width < 1500
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_ema_is_bias_corrected_and_smooths():
    assert all(abs(v - 5.0) < 1e-9 for v in dr.ema([5.0] * 10, decay=0.9))
    smoothed = dr.ema([0.0, 10.0] * 50, decay=0.9)
    assert abs(smoothed[-1] - 5.0) < 1.0 and smoothed[0] == 0.0


def test_markdown_table_escapes_cells():
    table = dr.markdown_table(
        ["task", "score"], [["a|b", 1.5], ["two\nlines", dr.format_number(0.4567, 100)]]
    )
    assert table.splitlines() == ["| task | score |", "|---|---|", "| a\\|b | 1.5 |", "| two lines | 45.7 |"]
    assert dr.format_number(None) == "—" and dr.format_number(float("nan")) == "—"


def test_shorten_cuts_at_a_word():
    assert dr.shorten("alpha beta gamma", 11) == "alpha…"
    assert dr.shorten("  alpha\n beta ", 20) == "alpha beta"


def test_paired_bootstrap_matches_the_binomial_standard_error():
    # 10 of 100 examples flip from wrong to right: mean difference 10 points, standard error
    # sqrt(0.1 * 0.9 / 100) = 3 points, so the 95% interval is about 10 -/+ 5.9.
    pre, scratch = [100.0] * 10 + [0.0] * 90, [0.0] * 100
    result = dr.paired_bootstrap(pre, scratch)
    assert result["difference"] == 10.0 and result["examples"] == 100
    assert 3.0 < result["low"] < 5.5 and 14.5 < result["high"] < 17.0
    assert dr.paired_bootstrap(pre, scratch) == result  # seeded: the report's numbers are reproducible
    # Identical per-example differences leave no noise.
    assert dr.paired_bootstrap([3.0, 5.0], [1.0, 3.0]) == {
        "difference": 2.0,
        "low": 2.0,
        "high": 2.0,
        "examples": 2,
    }


def test_per_example_scores():
    assert dr.per_example_scores("demo_family", ["xml", "email"], ["xml", "logging"]) == [100.0, 0.0]
    scores = dr.per_example_scores("demo_summarize", ["a b c d", "a b", "x y"], ["a b c d", "a b c d", "z"])
    assert scores[0] == 100.0 and abs(scores[1] - 200.0 / 3.0) < 1e-9 and scores[2] == 0.0


def test_transfer_section_verdicts_come_from_the_interval():
    def comparison(arm, task, pre, scratch, low, high):
        return {
            "arm": arm,
            "task": task,
            "metric": "accuracy",
            "pretrained": pre,
            "scratch": scratch,
            "difference": pre - scratch,
            "low": low,
            "high": high,
            "examples": 237,
        }

    text = dr.transfer_section(
        [
            comparison("2084 training examples", "demo_family", 83.1, 82.7, -3.2, 4.0),
            comparison("64 training examples (few-example arm)", "demo_family", 61.2, 40.1, 14.8, 27.4),
            comparison("64 training examples (few-example arm)", "demo_summarize", 50.0, 55.5, -9.0, -2.1),
        ]
    )
    lines = text.splitlines()
    assert lines[2] == (
        "| 2084 training examples | demo_family | accuracy | 82.7 | 83.1 | +0.4 [-3.2, +4.0] | "
        "no difference beyond test-sample noise (the 95% interval includes zero) |"
    )
    assert lines[3] == (
        "| 64 training examples (few-example arm) | demo_family | accuracy | 40.1 | 61.2 | +21.1 [+14.8, +27.4] | "
        "pre-training helped (the 95% interval is above zero) |"
    )
    assert "| -5.5 [-9.0, -2.1] | pre-training did NOT help: it scored lower" in lines[4]
    assert "scored on the same test examples (237 per task)" in text and "paired bootstrap" in text
    assert dr.transfer_section([]).startswith("(not measured)")


def test_write_report(tmp_path):
    path = dr.write_report(tmp_path / "r.md", "Demo", [("Metrics", "| a |\n"), ("Samples", "text")])
    assert path.read_text() == "# Demo\n\n## Metrics\n\n| a |\n\n## Samples\n\ntext\n"


SCORES = {
    "demo_summarize": {
        "baseline": {"rouge1": 50.0, "rouge2": 40.0, "rougeLsum": 49.0},
        "shortest": {"rouge1": 70.0, "rouge2": 60.0, "rougeLsum": 69.25},
        "pretrained": {"rouge1": 80.0, "rouge2": 75.0, "rougeLsum": 79.5, "generated_rougeLsum": 20.0},
        "scratch": {"rouge1": 45.0, "rouge2": 30.0, "rougeLsum": 44.0, "generated_rougeLsum": 18.0},
    },
    "demo_family": {
        "baseline": {"accuracy": 31.2, "label": "tkinter"},
        "pretrained": {"accuracy": 78.9},
        "scratch": {"accuracy": 82.3},
    },
}


def test_baseline_verdict_names_each_model_and_the_margin():
    assert dr.baseline_verdict(SCORES) == [
        "- demo_summarize: baseline rougeLsum 49.0; pre-trained + fine-tuned beats it (79.5, +30.5 points); "
        "fine-tuned from scratch does NOT beat it (44.0, -5.0 points).",
        "- demo_family: baseline accuracy 31.2; pre-trained + fine-tuned beats it (78.9, +47.7 points); "
        "fine-tuned from scratch beats it (82.3, +51.1 points).",
    ]
    assert dr.baseline_verdict({}) == ["- demo_summarize: not measured.", "- demo_family: not measured."]


def test_results_section_lists_every_metric_with_its_baseline():
    text = dr.results_section(SCORES)
    assert (
        "| demo_summarize | ROUGE-2, picked sentence | 40.0 (lead sentence of the input) | 30.0 | 75.0 |"
        in text
    )
    # Greedy generation is compared with the same lead-sentence baseline.
    assert (
        "| demo_summarize | ROUGE-Lsum, greedy generation | 49.0 (lead sentence of the input) | 18.0 | 20.0 |"
        in text
    )
    assert text.endswith("picking the input's shortest sentence, scores ROUGE-Lsum 69.2.")
    assert "| demo_family | accuracy | 31.2 (majority class (tkinter)) | 82.3 | 78.9 |" in text
    assert "from scratch, few examples" not in text  # no few-example arm in these scores: no columns
    with_few = dict(SCORES, demo_family={**SCORES["demo_family"], "few_pretrained": {"accuracy": 60.0}})
    with_few["demo_family"]["few_scratch"] = {"accuracy": 40.5}
    text = dr.results_section(with_few)
    assert "| demo_family | accuracy | 31.2 (majority class (tkinter)) | 82.3 | 78.9 | 40.5 | 60.0 |" in text
    assert (
        "| demo_summarize | ROUGE-Lsum, picked sentence | 49.0 (lead sentence of the input) | 44.0 | 79.5 | — | — |"
        in text
    )
    assert "from scratch, few examples beats it (40.5, +9.3 points)" in text
    empty = dr.results_section({})
    assert (
        "| demo_summarize | ROUGE-Lsum, picked sentence | — (lead sentence of the input) | — | — |" in empty
    )


def test_corpus_samples_and_timing_sections():
    corpus = {
        "counters": {"docstrings": 100, "files": 7},
        "documents": 60,
        "pretrain_bytes": {"train": 1_500_000},
        "task_examples": {"summarize": {"train": 40, "validation": 2, "test": 5}},
    }
    text = dr.corpus_section(corpus)
    assert "100 docstrings from 7 standard-library files" in text and "1.50 MB" in text
    assert "| summarize | 40 | 2 | 5 |" in text
    samples = [{"task": "t", "inputs": "x " * 400, "targets": "y", "predictions": {"a": "p", "b": "q"}}]
    assert dr.samples_section(samples).endswith("- target: y\n- a: p\n- b: q\n")
    assert dr.samples_section([]) == "(no samples)"
    timing = dr.timing_section({"corpus": 8.0, "pretrain": 300.5, "report": None})
    assert "| report | — |" in timing and "Total: 308 s" in timing
