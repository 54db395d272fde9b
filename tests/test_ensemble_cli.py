"""Ensembles from the command line (the paper's Table 13): `infer` and `eval` take several checkpoints and
decode / score with the mean of their per-token log-probabilities."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from mesh_t5 import cli, data, inference
from mesh_t5.commands import infer
from mesh_t5.config import DecodeOptions, T5Config
from mesh_t5.data import metrics
from mesh_t5.data import preprocessors as pp
from mesh_t5.errors import UserError
from mesh_t5.model import T5Model
from mesh_t5.vocab import ByteVocabulary

BYTES = ByteVocabulary()
CONFIG = T5Config(
    vocab_size=BYTES.vocab_size, d_model=32, d_ff=48, num_heads=4, d_kv=8, num_encoder_layers=2,
    num_decoder_layers=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
    relative_attention_num_buckets=8, relative_attention_max_distance=16,
)  # fmt: skip
TASK = "ensemble_test_task"
PAIRS = [("abc", "abc"), ("hello", "hello"), ("xy", "yx")]


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two different tiny models saved as mesh_t5 model dirs (sharpened so argmax is far from round-off)."""
    out = []
    for seed in (3, 4):
        model = T5Model.init(CONFIG, seed=seed)
        model.params["logits_dense"]["kernel"] = model.params["logits_dense"]["kernel"] * 8.0
        path = tmp_path_factory.mktemp(f"member{seed}")
        model.save_pretrained(path, format="mesh_t5")
        out.append((str(path), model))
    feats = {"inputs": data.Feature(BYTES), "targets": data.Feature(BYTES)}
    src = data.FunctionSource(
        lambda split: ({"inputs": a, "targets": b} for a, b in PAIRS), splits=("validation",)
    )
    data.TaskRegistry.add(
        TASK, src, [pp.tokenize, pp.append_eos_after_trim], feats, metric_fns=[metrics.sequence_accuracy],
        overwrite=True,
    )  # fmt: skip
    yield out
    data.TaskRegistry.remove(TASK)


def _infer(tmp_path, name, *argv):
    out = tmp_path / f"{name}.jsonl"
    assert infer.main([*argv, f"--output_file={out}", "--vocab=byte", "--max_decode_length=4"]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def _mean_log_probs(models, inputs, targets):
    """[B, T, V] renormalised mean of the members' log-softmax, by hand from teacher-forced logits."""
    enc = np.array([[*BYTES.encode(t), 1] + [0] * (8 - len(t) - 1) for t in inputs], np.int32)
    tgt = np.array([[*BYTES.encode(t), 1] + [0] * (8 - len(t) - 1) for t in targets], np.int32)
    dec_in = np.pad(tgt, ((0, 0), (1, 0)))[:, :-1]
    lps = [jax.nn.log_softmax(m.logits(enc, dec_in), axis=-1) for m in models]
    return np.asarray(jax.nn.log_softmax(np.mean(lps, axis=0), axis=-1)), tgt


def test_infer_ensemble_of_one_model_twice_equals_the_model(tmp_path, members):
    (a, _), _ = members
    single = _infer(tmp_path, "single", f"--checkpoint={a}", f"--task={TASK}")
    twice = _infer(tmp_path, "twice", f"--checkpoint={a}", f"--checkpoint={a}", f"--task={TASK}")
    assert [r["outputs"] for r in twice] == [r["outputs"] for r in single]
    np.testing.assert_allclose(
        [r["score"] for r in twice], [r["score"] for r in single], rtol=1e-5, atol=1e-5
    )
    assert [(r["task"], r["index"]) for r in single] == [(TASK, i) for i in range(len(PAIRS))]


def test_infer_ensemble_of_two_models_averages_log_probs(tmp_path, members):
    (a, model_a), (b, model_b) = members
    src = tmp_path / "in.tsv"
    src.write_text("".join(f"{x}\t{y}\n" for x, y in PAIRS))
    scored = _infer(tmp_path, "score", f"--checkpoint={a},{b}", f"--input_file={src}", "--mode=score")
    lp, tgt = _mean_log_probs([model_a, model_b], [x for x, _ in PAIRS], [y for _, y in PAIRS])
    by_hand = [lp[i, np.arange(8), tgt[i]][tgt[i] > 0].sum() for i in range(len(PAIRS))]
    np.testing.assert_allclose([r["score"] for r in scored], by_hand, rtol=1e-4, atol=1e-4)
    # It is neither member's score.
    single = _infer(tmp_path, "score_a", f"--checkpoint={a}", f"--input_file={src}", "--mode=score")
    assert not np.allclose([r["score"] for r in single], by_hand, atol=1e-2)
    # Predict: the CLI's ensemble decodes as the library's (whose first step tests/test_inference.py's
    # test_ensemble checks against the by-hand mean of log-probabilities).
    predicted = _infer(tmp_path, "predict", f"--checkpoint={a}", f"--checkpoint={b}", f"--input_file={src}")
    ids, _ = inference.generate_ids(
        CONFIG, [model_a.params, model_b.params], inference.tokenize(BYTES, [x for x, _ in PAIRS]),
        DecodeOptions(max_decode_length=4),
    )  # fmt: skip
    assert [r["outputs"] for r in predicted] == BYTES.decode_batch(ids.tolist())


def test_eval_ensemble_scores_its_decoded_predictions(tmp_path, members, capsys):
    """eval with two checkpoints decodes as infer's ensemble does: eval --predictions on infer's file agrees."""
    (a, _), (b, _) = members
    preds = _infer(tmp_path, "pred", f"--checkpoint={a},{b}", f"--task={TASK}")
    pred_file = tmp_path / "pred.jsonl"
    common = [f"--gin.MIXTURE_OR_TASK_NAME={TASK}"]
    assert cli.main(["eval", f"--predictions={pred_file}", *common]) == 0
    from_file = json.loads(capsys.readouterr().out)
    code = cli.main([
        "eval", "--gin_file=runs/eval.gin", f"--checkpoint={a}", f"--checkpoint={b}", *common,
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 4}", "--gin.BATCH_SIZE=4",
        f"--gin.evaluate_checkpoints.output_dir={tmp_path / 'eval'}",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    (saved,) = [
        json.loads(line) for line in (tmp_path / "eval" / "eval_results.jsonl").read_text().splitlines()
    ]
    key = f"{TASK}/sequence_accuracy"
    assert (
        saved[key]
        == from_file[key]
        == 100.0 * np.mean([p["outputs"] == y for p, (_, y) in zip(preds, PAIRS, strict=True)])
    )
    assert "loss" not in saved  # an ensemble has no single loss


def test_ensemble_of_different_configs_is_refused(tmp_path, members):
    (a, _), _ = members
    other = T5Model.init(dataclasses.replace(CONFIG, d_ff=64), seed=0)
    other.save_pretrained(tmp_path / "other", format="mesh_t5")
    src = tmp_path / "in.txt"
    src.write_text("abc\n")
    with pytest.raises(UserError, match="has another model config"):
        infer.main([f"--checkpoint={a},{tmp_path / 'other'}", f"--input_file={src}", "--vocab=byte"])


def test_export_ensemble_serves_the_ensemble(tmp_path, members):
    """`mesh-t5 export --checkpoint=A,B`: the SavedModel's score and decode are the ensemble's."""
    tf = pytest.importorskip("tensorflow")
    (a, model_a), (b, model_b) = members
    out = tmp_path / "saved"
    assert cli.main(["export", f"--checkpoint={a},{b}", f"--output_dir={out}", "--vocab=byte",
                     "--max_decode_length=4", "--max_input_length=8"]) == 0  # fmt: skip
    loaded = tf.saved_model.load(str(out))
    inputs, targets = [x for x, _ in PAIRS], [y for _, y in PAIRS]
    scores = loaded.signatures["score"](inputs=tf.constant(inputs), targets=tf.constant(targets))["scores"]
    params = [model_a.params, model_b.params]
    want = inference.score(CONFIG, params, BYTES, inputs, targets, max_input_length=8, max_target_length=4)
    np.testing.assert_allclose(scores.numpy(), want, rtol=1e-4, atol=1e-4)
    served = loaded.signatures["serving_default"](inputs=tf.constant(inputs))["outputs"].numpy()
    ids, _ = inference.generate_ids(
        CONFIG,
        params,
        inference.tokenize(BYTES, inputs),
        DecodeOptions(max_decode_length=4),
        max_input_length=8,
    )
    assert [s.decode("utf-8") for s in served] == BYTES.decode_batch(ids.tolist())
