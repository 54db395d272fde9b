"""Metric functions, seqio style: `metric_fn(targets: list, predictions: list) -> {name: float}` on
postprocessed values. Scores are percentages (x100) as T5 reports them, except correlations
and Matthews' coefficient which are x100 too (T5's convention)."""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import numpy as np

from mesh_t5.errors import UserError


def _check(targets: Sequence, predictions: Sequence) -> None:
    if len(targets) != len(predictions):
        raise UserError(f"{len(targets)} targets but {len(predictions)} predictions; they must pair up")
    if len(targets) == 0:
        raise UserError("no examples to score")


def accuracy(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Returns {"accuracy": % of predictions equal to their target}."""
    _check(targets, predictions)
    return {"accuracy": 100.0 * float(np.mean([t == p for t, p in zip(targets, predictions, strict=True)]))}


def sequence_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Returns {"sequence_accuracy": % of predicted strings exactly equal to their target} (T5: no
    whitespace stripping, "a b " != "a b")."""
    _check(targets, predictions)
    same = [t == p for t, p in zip(targets, predictions, strict=True)]
    return {"sequence_accuracy": 100.0 * float(np.mean(same))}


def f1_score_with_invalid(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """Returns {"f1": binary F1 x100}; a prediction that is neither 0 nor 1 counts as wrong (T5)."""
    from sklearn.metrics import f1_score

    _check(targets, predictions)
    t = np.asarray(targets)
    p = np.asarray(predictions)
    invalid = (p != 0) & (p != 1)
    p = np.where(invalid, 1 - t, p)
    return {"f1": 100.0 * float(f1_score(t, p))}


def mean_multiclass_f1(num_classes: int):
    """Returns a metric fn giving {"mean_<n>class_f1": macro F1 x100} (T5's CB metric)."""

    def fn(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
        # Imported here, not above: the catalogue builds this metric and sklearn takes ~5 s to import.
        from sklearn.metrics import f1_score

        _check(targets, predictions)
        score = f1_score(targets, predictions, labels=list(range(num_classes)), average="macro")
        return {f"mean_{num_classes}class_f1": 100.0 * float(score)}

    return fn


def matthews_corrcoef(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Returns {"matthews_corrcoef": MCC x100} (CoLA)."""
    from sklearn.metrics import matthews_corrcoef as mcc

    _check(targets, predictions)
    return {"matthews_corrcoef": 100.0 * float(mcc(targets, predictions))}


def pearson_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
    """Returns {"pearson_corrcoef": Pearson r x100} (STS-B)."""
    from scipy.stats import pearsonr

    _check(targets, predictions)
    return {
        "pearson_corrcoef": 100.0
        * float(pearsonr(np.asarray(targets, float), np.asarray(predictions, float))[0])
    }


def spearman_corrcoef(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
    """Returns {"spearman_corrcoef": Spearman rho x100} (STS-B)."""
    from scipy.stats import spearmanr

    _check(targets, predictions)
    rho = spearmanr(np.asarray(targets, float), np.asarray(predictions, float))[0]
    return {"spearman_corrcoef": 100.0 * float(rho)}


def rouge(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Returns {"rouge1", "rouge2", "rougeLsum"}: mean F-measures x100 (summaries split into lines
    at newlines for ROUGE-Lsum, as T5 does after sentence splitting)."""
    from rouge_score import rouge_scorer, scoring

    _check(targets, predictions)
    # T5 scores without a stemmer (t5/evaluation/metrics.py); keep it so numbers compare.
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeLsum"])
    agg = scoring.BootstrapAggregator()
    for t, p in zip(targets, predictions, strict=True):
        # rougeLsum treats newlines as sentence boundaries.
        agg.add_scores(scorer.score(str(t).replace(" . ", " .\n"), str(p).replace(" . ", " .\n")))
    result = agg.aggregate()
    return {k: 100.0 * float(result[k].mid.fmeasure) for k in ("rouge1", "rouge2", "rougeLsum")}


def bleu(targets: Sequence[str] | Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
    """Returns {"bleu": corpus sacreBLEU} ("intl" tokenization, exp smoothing: T5's WMT metric).
    Targets may be strings or lists of reference strings (the same count for every example)."""
    import sacrebleu

    _check(targets, predictions)
    if isinstance(targets[0], str):
        refs = [list(map(str, targets))]
    else:
        refs = [list(r) for r in zip(*targets, strict=True)]
    score = sacrebleu.corpus_bleu(list(map(str, predictions)), refs, smooth_method="exp", tokenize="intl")
    return {"bleu": float(score.score)}


def _normalize_answer(text: str) -> str:
    """Lower-cases, strips punctuation, articles and extra whitespace (the SQuAD evaluation script)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(target: str, prediction: str) -> float:
    t, p = _normalize_answer(target).split(), _normalize_answer(prediction).split()
    common = collections.Counter(t) & collections.Counter(p)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def squad(targets: Sequence[Sequence[str] | str], predictions: Sequence[str]) -> dict[str, float]:
    """Returns {"em", "f1"} x100: best over each example's reference answers (SQuAD v1.1 script)."""
    _check(targets, predictions)
    em, f1 = [], []
    for answers, pred in zip(targets, predictions, strict=True):
        answers = [answers] if isinstance(answers, str) else list(answers)
        em.append(max(float(_normalize_answer(a) == _normalize_answer(pred)) for a in answers))
        f1.append(max(_token_f1(a, pred) for a in answers))
    return {"em": 100.0 * float(np.mean(em)), "f1": 100.0 * float(np.mean(f1))}
