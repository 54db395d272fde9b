import numpy as np
import pytest

from mesh_t5.data import metrics
from mesh_t5.errors import UserError
from mesh_t5.tasks import list_mixtures, list_tasks  # the catalogue's look-ups (it registers on import)


def test_classification_metrics():
    assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == {"accuracy": 50.0}
    # Exact string equality, as T5 (a leading space makes it wrong): tests/test_t5_golden.py checks T5's value.
    assert metrics.sequence_accuracy(["a b", "c"], ["a b", "d"]) == {"sequence_accuracy": 50.0}
    assert metrics.sequence_accuracy(["a b"], [" a b"]) == {"sequence_accuracy": 0.0}
    # F1: tp=2, fp=1, fn=1 -> 2/3; an invalid prediction (-1) counts as wrong.
    assert metrics.f1_score_with_invalid([1, 1, 0, 1], [1, 1, 1, 0])["f1"] == pytest.approx(200 / 3)
    assert metrics.f1_score_with_invalid([1, 0], [-1, 0])["f1"] == 0.0
    # MCC of a perfectly inverted binary prediction is -1.
    assert metrics.matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0])["matthews_corrcoef"] == pytest.approx(-100.0)
    assert metrics.mean_multiclass_f1(3)([0, 1, 2], [0, 1, 2])["mean_3class_f1"] == pytest.approx(100.0)


def test_correlations_against_numpy():
    rnd = np.random.default_rng(0)
    t = rnd.normal(size=50)
    p = t + rnd.normal(size=50) * 0.5
    assert metrics.pearson_corrcoef(t.tolist(), p.tolist())["pearson_corrcoef"] == pytest.approx(
        100 * np.corrcoef(t, p)[0, 1]
    )
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert metrics.spearman_corrcoef(t, p)["spearman_corrcoef"] == pytest.approx(
        100 * np.corrcoef(ranks(t), ranks(p))[0, 1]
    )


def test_rouge_bleu_squad():
    r = metrics.rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert r == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeLsum": 100.0})
    r = metrics.rouge(["the cat sat"], ["the dog sat"])
    assert r["rouge1"] == pytest.approx(200 / 3) and r["rouge2"] == 0.0
    assert metrics.bleu(["the cat is on the mat"], ["the cat is on the mat"])["bleu"] == pytest.approx(100.0)
    assert metrics.bleu(["the cat is on the mat"], ["a dog"])["bleu"] < 10
    s = metrics.squad([["The Eiffel Tower", "Eiffel Tower"], ["Paris"]], ["eiffel tower", "in Paris France"])
    # EM: first matches after normalisation; F1 second: p=1/3, r=1 -> 0.5.
    assert s["em"] == pytest.approx(50.0) and s["f1"] == pytest.approx(75.0)
    with pytest.raises(UserError, match="2 targets but 1 predictions"):
        metrics.accuracy([1, 2], [1])


def test_catalogue_is_registered_without_data(monkeypatch):
    tasks = list_tasks()
    for name in ("c4_v220_span_corruption", "c4_v220_bert_style", "c4_v220_deshuffling", "glue_cola_v002",
                 "glue_stsb_v002", "super_glue_boolq_v102", "squad_v010_allanswers", "cnn_dailymail_v002",
                 "wmt_t2t_ende_v003"):  # fmt: skip
        assert name in tasks
    assert "glue_v002_proportional" in list_mixtures()
    from mesh_t5.data import get_task
    from mesh_t5.tasks import common

    monkeypatch.delenv(common.VOCAB_ENV, raising=False)
    vocab = get_task("glue_cola_v002").output_features["inputs"].vocabulary
    if vocab._vocab is None:
        with pytest.raises(UserError, match="MESH_T5_VOCAB"):
            vocab.encode("x")
    assert get_task("glue_cola_v002").postprocess("acceptable") == 1
    assert get_task("glue_cola_v002").postprocess("banana") == -1
    assert get_task("glue_stsb_v002").postprocess("3.8") == pytest.approx(3.8)
