"""`mesh-t5 demo`: the run directory (resume or refuse, never overwrite) and the end-to-end --quick run."""

import json

import pytest

from mesh_t5 import cli
from mesh_t5.commands import demo
from mesh_t5.errors import UserError


def test_new_directory_starts_and_same_settings_resume(tmp_path):
    out = tmp_path / "run"
    run = demo.Run(str(out), demo.Settings.for_run(quick=True))
    assert run.check_or_start() is False
    assert json.loads((out / demo.SETTINGS_FILE).read_text())["quick"] is True
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


def test_default_settings_fit_the_budget_shape():
    quick, full = demo.Settings.for_run(True), demo.Settings.for_run(False)
    assert quick.pretrain_steps < full.pretrain_steps and quick.finetune_steps < full.finetune_steps
    assert quick.vocab_size < full.vocab_size
