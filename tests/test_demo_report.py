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
