"""The demo's report pieces: the loss PNG decodes with the curves drawn, tables and verdicts are right."""

import matplotlib.image

from mesh_t5 import demo_report as dr


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


def test_verdict_reports_either_direction_honestly():
    lines = dr.pretraining_verdict(
        {
            "summarize": {"pretrained": 30.0, "scratch": 25.0},
            "family": {"pretrained": 50.0, "scratch": 60.0},
            "same": {"pretrained": 50.0, "scratch": 50.1},
        },
        {"summarize": "ROUGE-L", "family": "accuracy", "same": "accuracy", "missing": "accuracy"},
    )
    assert (
        lines[0]
        == "- summarize: ROUGE-L 30.0 from the pre-trained checkpoint vs 25.0 from scratch (+5.0 points): pre-training helped."
    )
    assert "(-10.0 points)" in lines[1] and "did NOT help" in lines[1]
    assert "no clear difference" in lines[2]
    assert lines[3] == "- missing: not measured."


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
    assert "rougeLsum 79.5 from the pre-trained checkpoint vs 44.0 from scratch (+35.5 points)" in text
    assert "accuracy 78.9 from the pre-trained checkpoint vs 82.3 from scratch (-3.4 points)" in text
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
