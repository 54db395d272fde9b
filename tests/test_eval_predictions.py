"""`mesh-t5 eval --predictions=FILE`: scoring what `mesh-t5 infer` writes against a task's or mixture's
targets without a model, and refusing (one line, nothing written) a file that does not match."""

import json

import pytest

from mesh_t5 import cli, data
from mesh_t5.data import metrics
from mesh_t5.data import preprocessors as pp
from mesh_t5.vocab import ByteVocabulary

VOCAB = ByteVocabulary()
PAIRS = {
    "pred_test_a": [("one", "1"), ("two", "2"), ("three", "3"), ("four", "4")],
    "pred_test_b": [("red", "rot"), ("blue", "blau")],
}


@pytest.fixture(scope="module", autouse=True)
def tasks():
    feats = {"inputs": data.Feature(VOCAB), "targets": data.Feature(VOCAB)}
    for name, pairs in PAIRS.items():

        def examples(split, pairs=pairs):
            return ({"inputs": a, "targets": b} for a, b in pairs)

        data.TaskRegistry.add(
            name, data.FunctionSource(examples, splits=("validation",)), [pp.tokenize, pp.append_eos_after_trim],
            feats, metric_fns=[metrics.sequence_accuracy], overwrite=True,
        )  # fmt: skip
    data.MixtureRegistry.add("pred_test_mix", list(PAIRS), default_rate=1.0, overwrite=True)
    yield
    data.MixtureRegistry.remove("pred_test_mix")
    for name in PAIRS:
        data.TaskRegistry.remove(name)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _rows(name, outputs, **changes):
    """infer --task's records: task, index, inputs, targets, outputs, score."""
    rows = [
        {"task": name, "index": i, "inputs": a, "targets": b, "outputs": o, "score": -1.0}
        for i, ((a, b), o) in enumerate(zip(PAIRS[name], outputs, strict=True))
    ]
    for i, change in changes.items():
        rows[int(i[1:])].update(change)
    return rows


def _eval(capsys, *argv):
    code = cli.main(["eval", *argv])
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


def test_scores_a_task_and_a_mixture(tmp_path, capsys):
    rows_a = _rows("pred_test_a", ["1", "2", "x", "4"])
    code, out, err = _eval(capsys, f"--predictions={_write(tmp_path / 'a.jsonl', rows_a)}",
                           "--gin.MIXTURE_OR_TASK_NAME=pred_test_a")  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == {"pred_test_a/sequence_accuracy": 75.0}
    assert "pred_test_a/sequence_accuracy 75" in err
    # Lines in any order: "index" places them. A mixture takes the concatenation of its tasks' files.
    rows = [*_rows("pred_test_b", ["rot", "blue"]), *reversed(rows_a)]
    out_dir = tmp_path / "scores"
    code, out, err = _eval(capsys, f"--predictions={_write(tmp_path / 'mix.jsonl', rows)}",
                           "--gin.MIXTURE_OR_TASK_NAME=pred_test_mix", f"--gin.EVAL_OUTPUT_DIR={out_dir}")  # fmt: skip
    assert code == 0, err
    want = {"pred_test_a/sequence_accuracy": 75.0, "pred_test_b/sequence_accuracy": 50.0}
    assert json.loads(out) == want
    saved = [json.loads(line) for line in (out_dir / "eval_results.jsonl").read_text().splitlines()]
    assert saved == [{"step": 0, **want}]
    assert list(out_dir.glob("events.*"))
    # A file without task/index (infer --input_file) is matched to a single task by position.
    plain = [{"inputs": a, "outputs": b} for a, b in PAIRS["pred_test_b"]]
    code, out, err = _eval(capsys, f"--predictions={_write(tmp_path / 'plain.jsonl', plain)}",
                           "--gin.MIXTURE_OR_TASK_NAME=pred_test_b")  # fmt: skip
    assert code == 0 and json.loads(out) == {"pred_test_b/sequence_accuracy": 100.0}


BAD = {
    "missing ids": (lambda: _rows("pred_test_a", ["1", "2", "3", "4"])[:3], "pred_test_a",
                    "has 3 predictions for task 'pred_test_a' split 'validation', which has 4 examples "
                    "(missing examples 3)"),
    "wrong count": (lambda: [*_rows("pred_test_a", ["1", "2", "3", "4"]), {**_rows("pred_test_a", "1234")[0],
                    "index": 7}], "pred_test_a", "examples 7 do not exist"),
    "repeated id": (lambda: _rows("pred_test_a", ["1", "2", "3", "4"], i3={"index": 2}), "pred_test_a",
                    "repeats the prediction for example 2"),
    "wrong task": (lambda: _rows("pred_test_b", ["rot", "blau"]), "pred_test_a",
                   "is a prediction for task 'pred_test_b', which is not scored in 'pred_test_a'"),
    "other data": (lambda: _rows("pred_test_a", ["1", "2", "3", "4"], i1={"inputs": "zwei"}), "pred_test_a",
                   "but example 1 of task 'pred_test_a' split 'validation' is 'two'"),
    "task of a mixture missing": (lambda: _rows("pred_test_a", ["1", "2", "3", "4"]), "pred_test_mix",
                                  "has no predictions for task 'pred_test_b' split 'validation'"),
    "no task fields for a mixture": (lambda: [{"outputs": "1"}], "pred_test_mix", 'has no "task" fields'),
    "score-mode file": (lambda: [{"inputs": "one", "targets": "1", "score": -2.0}], "pred_test_a",
                        'has no string "outputs"'),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_mismatched_file_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    rows, name, needle = BAD[case]
    path = _write(tmp_path / "p.jsonl", rows())
    out_dir = tmp_path / "out"
    code, out, err = _eval(
        capsys,
        f"--predictions={path}",
        f"--gin.MIXTURE_OR_TASK_NAME={name}",
        f"--gin.EVAL_OUTPUT_DIR={out_dir}",
    )
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert out == "" and not out_dir.exists()


def test_not_jsonl_and_missing_file(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"task": "pred_test_a", "index": 0, "outputs": "1"}\nnot json at all\n')
    code, out, err = _eval(capsys, f"--predictions={path}", "--gin.MIXTURE_OR_TASK_NAME=pred_test_a")
    assert (
        code == 2
        and out == ""
        and err.endswith(f"{path}:2 is not JSON; --predictions takes the JSONL that `mesh-t5 infer` writes")
    )
    code, _, err = _eval(
        capsys, f"--predictions={tmp_path / 'nope.jsonl'}", "--gin.MIXTURE_OR_TASK_NAME=pred_test_a"
    )
    assert code == 2 and "does not exist" in err and len(err.splitlines()) == 1
