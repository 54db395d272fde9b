"""Writes tests/golden/t5_oracle.json: what the original T5 library (t5 0.9.4, seqio 0.0.20) makes of fixed
raw examples, so that tests/test_t5_golden.py can hold mesh_t5 to it without T5 installed.

For every GLUE / SuperGLUE / WSC / DPR / SQuAD / CNN-DM / WMT task mesh_t5 registers, T5's own registered
task (seqio.TaskRegistry) runs its text preprocessors (everything before tokenization) on hand-written
raw examples that carry each TFDS dataset's real feature names; its postprocessor maps fixed predictions
(correct, wrong, invalid, empty, determiner-only, whitespace variants) and its metric functions score
them, exactly as seqio's evaluator calls them. Stand-alone metric cases (multi-reference BLEU, ROUGE,
SQuAD normalisation, sequence accuracy, MCC, correlations) and T5's GLUE/SuperGLUE averages
(t5.evaluation.eval_utils.compute_avg_glue) are recorded too.

Run it in a venv of its own (T5's pinned dependencies clash with mesh_t5's; the tests need none of this):

    python3 -m venv /work/oracle-venv
    /work/oracle-venv/bin/pip install "tensorflow==2.21.*" "tensorflow-text==2.21.*" \\
        "tensorflow-datasets==4.9.*" flax clu gin-config babel sacrebleu scikit-learn rouge-score pandas \\
        editdistance pyglove sentencepiece
    /work/oracle-venv/bin/pip install --no-deps t5==0.9.4 seqio==0.0.20
    /work/oracle-venv/bin/python tools/make_t5_golden.py          # rewrites tests/golden/t5_oracle.json

tools/t5_oracle_requirements.txt pins the versions the committed fixtures were made with
(`pip install --no-deps -r tools/t5_oracle_requirements.txt` reproduces that venv).

Nothing is downloaded: no TFDS data, no vocabulary (tokenization is not run).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pandas as pd
import seqio
import t5.data.mixtures
import t5.data.tasks  # noqa: F401
import tensorflow as tf
from t5.evaluation import eval_utils, metrics

OUT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "t5_oracle.json"
VERSIONS = {"t5": "0.9.4", "seqio": "0.0.20", "tensorflow": tf.__version__}

# ----------------------------------------------------------------------------- raw examples per task
# Each entry: task name -> (split, [raw examples as TFDS yields them], [one prediction per formatted example]).
# Raw values are JSON: ints (labels, idx), floats (STS-B), strings, lists, nested dicts.

_GLUE_PAIR = [
    ("The cat sat on the mat.", "A cat was sitting on a mat."),
    ('He said "no" twice, then left!', "He left."),
    ("Stocks fell 3% on Monday; bonds rose.", "Bonds rose on Monday."),
    ("  Leading and trailing spaces  ", "Tabs\tand\nnewlines"),
]


def _pair(k1: str, k2: str, labels: list[int]) -> list[dict]:
    return [
        {k1: a, k2: b, "label": y, "idx": i}
        for i, ((a, b), y) in enumerate(zip(_GLUE_PAIR, labels, strict=False))
    ]


TASKS: dict[str, tuple[str, list[dict], list[str] | None]] = {
    "glue_cola_v002": (
        "validation",
        [
            {"sentence": "The book was written by John.", "label": 1, "idx": 0},
            {"sentence": "Book the John by written.", "label": 0, "idx": 1},
            {"sentence": "Who do you think that left?", "label": 0, "idx": 2},
            {"sentence": "She seems happy.", "label": 1, "idx": 3},
            {"sentence": "Unlabeled test-style example.", "label": -1, "idx": 4},
        ],
        ["acceptable", "acceptable", "unacceptable", "nonsense", "acceptable"],
    ),
    "glue_sst2_v002": (
        "validation",
        [
            {"sentence": "a gorgeous, witty, seductive movie.", "label": 1, "idx": 0},
            {"sentence": "the plot is nothing but boilerplate clichés", "label": 0, "idx": 1},
            {"sentence": "it 's a charming and often affecting journey . ", "label": 1, "idx": 2},
        ],
        ["positive", "positive", " positive"],
    ),
    "glue_mrpc_v002": (
        "validation",
        _pair("sentence1", "sentence2", [1, 0, 1, 0]),
        ["equivalent", "equivalent", "not_equivalent", "maybe"],
    ),
    "glue_qqp_v002": (
        "validation",
        _pair("question1", "question2", [1, 1, 0, 0]),
        ["duplicate", "not_duplicate", "not_duplicate", ""],
    ),
    "glue_stsb_v002": (
        "validation",
        [
            {"sentence1": a, "sentence2": b, "label": y, "idx": i}
            for i, ((a, b), y) in enumerate(
                zip(_GLUE_PAIR * 2, [5.0, 1.66, 2.5, 0.0, 3.9, 4.1, 0.3, 2.7], strict=False)
            )
        ],
        ["5.0", "1.6", "2.6", "0.0", "4", "foo", "0.4", "2.8"],
    ),
    "glue_mnli_v002": (
        "validation_matched",
        [
            {"premise": a, "hypothesis": b, "label": y, "idx": i}
            for i, ((a, b), y) in enumerate(zip(_GLUE_PAIR, [0, 1, 2, 0], strict=False))
        ],
        ["entailment", "contradiction", "contradiction", "Entailment"],
    ),
    "glue_mnli_matched_v002": (
        "validation",
        [
            {"premise": a, "hypothesis": b, "label": y, "idx": i}
            for i, ((a, b), y) in enumerate(zip(_GLUE_PAIR, [0, 1, 2, 1], strict=False))
        ],
        ["entailment", "neutral", "neutral", "neutral"],
    ),
    "glue_mnli_mismatched_v002": (
        "validation",
        [
            {"premise": a, "hypothesis": b, "label": y, "idx": i}
            for i, ((a, b), y) in enumerate(zip(_GLUE_PAIR, [2, 2, 0, 1], strict=False))
        ],
        ["contradiction", "entailment", "entailment", "neutral"],
    ),
    "glue_qnli_v002": (
        "validation",
        _pair("question", "sentence", [0, 1, 1, 0]),
        ["entailment", "entailment", "not_entailment", "not_entailment"],
    ),
    "glue_rte_v002": (
        "validation",
        _pair("sentence1", "sentence2", [0, 1, 0, 1]),
        ["entailment", "entailment", "entailment", "not_entailment"],
    ),
    "glue_wnli_v002": (
        "validation",
        _pair("sentence1", "sentence2", [1, 0, 1, 0]),
        ["entailment", "entailment", "not_entailment", "not_entailment"],
    ),
    "glue_ax_v002": (
        "test",
        [{"premise": a, "hypothesis": b, "label": -1, "idx": i} for i, (a, b) in enumerate(_GLUE_PAIR[:2])],
        ["entailment", "neutral"],
    ),
    "glue_wnli_v002_simple_eval": (
        "validation",
        [
            {
                "sentence1": "The fish ate the worm. It was tasty.",
                "sentence2": "The worm was tasty.",
                "label": 1,
                "idx": 0,
            },
            {
                "sentence1": "The trophy doesn't fit into the brown suitcase because it is too large.",
                "sentence2": "The suitcase is too large.",
                "label": 0,
                "idx": 1,
            },
            {
                "sentence1": "John couldn't see the stage with Billy in front of him because he is so short.",
                "sentence2": "John is so short.",
                "label": 1,
                "idx": 2,
            },
            {
                "sentence1": "Sam pulled up a chair to the piano, but it was broken, so he had to stand instead.",
                "sentence2": "The piano was broken, so he had to stand instead.",
                "label": 0,
                "idx": 3,
            },
            {
                "sentence1": "Mark told Pete many lies about himself, which Pete included in his book. "
                "He should have been more skeptical.",
                "sentence2": "Mark should have been more skeptical.",
                "label": 0,
                "idx": 4,
            },
            {
                "sentence1": "Bob paid for Charlie's college education. He is very generous.",
                "sentence2": "Bob is very generous.",
                "label": 1,
                "idx": 5,
            },
        ],
        ["the worm", "The suitcase", "", "the", "Pete's book", "bob"],
    ),
    "super_glue_boolq_v102": (
        "validation",
        [
            {
                "question": "is the sky blue",
                "passage": "The sky is blue on clear days.",
                "label": 1,
                "idx": 0,
            },
            {"question": "do cats bark", "passage": "Cats meow; dogs bark.", "label": 0, "idx": 1},
            {"question": "is water wet", "passage": "Water makes things wet.", "label": 1, "idx": 2},
        ],
        ["True", "True", "true"],
    ),
    "super_glue_cb_v102": (
        "validation",
        [
            {"premise": a, "hypothesis": b, "label": y, "idx": i}
            for i, ((a, b), y) in enumerate(zip(_GLUE_PAIR * 2, [0, 1, 2, 0, 1, 2, 0, 0], strict=False))
        ],
        ["entailment", "contradiction", "neutral", "entailment", "neutral", "neutral", "yes", "entailment"],
    ),
    "super_glue_copa_v102": (
        "validation",
        [
            {
                "premise": "The man broke his toe.",
                "choice1": "He dropped a hammer on his foot.",
                "choice2": "He got a hole in his sock.",
                "question": "cause",
                "label": 0,
                "idx": 0,
            },
            {
                "premise": "I tipped the bottle.",
                "choice1": "The liquid in the bottle froze.",
                "choice2": "The liquid in the bottle poured out.",
                "question": "effect",
                "label": 1,
                "idx": 1,
            },
            {
                "premise": "The girl ran.",
                "choice1": "She was late.",
                "choice2": "She was early.",
                "question": "cause",
                "label": 0,
                "idx": 2,
            },
        ],
        ["choice1", "choice1", "choice3"],
    ),
    "super_glue_multirc_v102": (
        "validation",
        [
            {
                "paragraph": "<b>Sent 1: </b>Alice went home.<br><b>Sent 2: </b>She ate soup.<br>",
                "question": "What did Alice eat?",
                "answer": a,
                "label": y,
                "idx": {"paragraph": 0, "question": q, "answer": j},
            }
            for j, (q, a, y) in enumerate(
                [
                    (0, "Soup", 1),
                    (0, "Bread", 0),
                    (0, "A hot soup", 1),
                    (1, "Home", 1),
                    (1, "Work", 0),
                    (2, "Nothing", 0),
                ]
            )
        ],
        ["True", "False", "False", "True", "False", "maybe"],
    ),
    "super_glue_record_v102": (
        "validation",
        [
            {
                "passage": "The penguin waddled.\n@highlight\nPenguins are birds\n@highlight\nThey swim!\n@highlight\n"
                "Pigeons fly",
                "query": "A @placeholder is a bird.",
                "entities": ["penguin", "potato", "pigeon"],
                "answers": ["penguin", "pigeon"],
                "idx": {"passage": 0, "query": 0},
            },
            {
                "passage": "Paris is in France. Rome is in Italy.",
                "query": "@placeholder is in Italy.",
                "entities": ["Paris", "France", "Rome", "Italy"],
                "answers": ["Rome"],
                "idx": {"passage": 1, "query": 1},
            },
            {
                "passage": "The Eiffel Tower stands in Paris.",
                "query": "The tower is in @placeholder.",
                "entities": ["Eiffel Tower", "Paris"],
                "answers": ["Paris", "the city of Paris"],
                "idx": {"passage": 2, "query": 2},
            },
        ],
        ["pigeon", "pigeon", "Italy", "The Paris", "the Paris"],
    ),
    # A test example has no answers: one "<unk>" target (T5's metric cannot score it; formatting only).
    "super_glue_record_v102#test": (
        "test",
        [
            {
                "passage": "No answers here.",
                "query": "@placeholder is unknown.",
                "entities": ["X"],
                "answers": [],
                "idx": {"passage": 3, "query": 3},
            },
        ],
        None,
    ),
    "super_glue_rte_v102": (
        "validation",
        _pair("premise", "hypothesis", [0, 1, 1, 0]),
        ["entailment", "not_entailment", "entailment", "entailment"],
    ),
    "super_glue_wic_v102": (
        "validation",
        [
            {
                "word": "bank",
                "sentence1": "He sat on the river bank.",
                "sentence2": "The bank approved the loan.",
                "start1": 19,
                "end1": 23,
                "start2": 4,
                "end2": 8,
                "label": 0,
                "idx": 0,
            },
            {
                "word": "run",
                "sentence1": "I run every day.",
                "sentence2": "They run fast.",
                "start1": 2,
                "end1": 5,
                "start2": 5,
                "end2": 8,
                "label": 1,
                "idx": 1,
            },
        ],
        ["False", "False"],
    ),
    "super_glue_axb_v102": (
        "test",
        [{"sentence1": a, "sentence2": b, "label": -1, "idx": i} for i, (a, b) in enumerate(_GLUE_PAIR[:2])],
        ["entailment", "not_entailment"],
    ),
    "super_glue_axg_v102": (
        "test",
        [{"premise": a, "hypothesis": b, "label": -1, "idx": i} for i, (a, b) in enumerate(_GLUE_PAIR[:2])],
        ["entailment", "not_entailment"],
    ),
    "super_glue_wsc_v102_simple_train": (
        "train",
        [
            {
                "text": "Mitchell asked Tom if he could lend some money.",
                "span1_text": "Tom",
                "span2_text": "he",
                "span1_index": 3,
                "span2_index": 4,
                "label": 1,
                "idx": 0,
            },
            {
                "text": "Mitchell asked Tom if he could lend some money.",
                "span1_text": "Mitchell",
                "span2_text": "he",
                "span1_index": 0,
                "span2_index": 4,
                "label": 0,
                "idx": 1,
            },
        ],
        ["Tom"],
    ),
    "super_glue_wsc_v102_simple_eval": (
        "validation",
        [
            {
                "text": "Mitchell asked Tom if he could lend some money.",
                "span1_text": "Tom",
                "span2_text": "he",
                "span1_index": 3,
                "span2_index": 4,
                "label": 1,
                "idx": 0,
            },
            {
                "text": "Mitchell asked Tom if he could lend some money.",
                "span1_text": "Mitchell",
                "span2_text": "he",
                "span1_index": 0,
                "span2_index": 4,
                "label": 0,
                "idx": 1,
            },
            {
                "text": "The city councilmen refused the demonstrators a permit because they feared violence.",
                "span1_text": "The city councilmen",
                "span2_text": "they",
                "span1_index": 0,
                "span2_index": 9,
                "label": 1,
                "idx": 2,
            },
            {
                "text": "The city councilmen refused the demonstrators a permit because they feared violence.",
                "span1_text": "the demonstrators",
                "span2_text": "they",
                "span1_index": 4,
                "span2_index": 9,
                "label": 0,
                "idx": 3,
            },
            {
                "text": "Sid's hat fell off when he ran.",
                "span1_text": "Sid",
                "span2_text": "he",
                "span1_index": 0,
                "span2_index": 5,
                "label": 1,
                "idx": 4,
            },
            {
                "text": "Joan made sure to thank Susan for all the help she had given.",
                "span1_text": "Susan",
                "span2_text": "she",
                "span1_index": 5,
                "span2_index": 10,
                "label": 1,
                "idx": 5,
            },
            {
                "text": "The boy continued to whip the pony , and eventually the pony threw him over. John laughed "
                'out quite loud. "Good for him," he said. ',
                "span1_text": "the pony",
                "span2_text": "him",
                "span1_index": 5,
                "span2_index": 21,
                "label": 0,
                "idx": 6,
            },
        ],
        ["", "the", "councilmen", "The demonstrators", "Sid's", "  SUSAN ", "the boy"],
    ),
    "dpr_v001_simple": (
        "test",
        [
            {
                "sentence": "The bee landed on the flower because it had pollen.",
                "pronoun": "it",
                "candidates": ["The bee", "the flower"],
                "label": 1,
            },
            {
                "sentence": "The bee landed on the flower because it wanted pollen.",
                "pronoun": "it",
                "candidates": ["The bee", "the flower"],
                "label": 0,
            },
            {
                "sentence": "Tom gave Bill his book, so he thanked him.",
                "pronoun": "he",
                "candidates": ["Tom", "Bill"],
                "label": 1,
            },
            {
                "sentence": "She told her, she was right.",
                "pronoun": "she",
                "candidates": ["Ann", "Mary"],
                "label": 0,
            },
        ],
        ["the flower", "The bee", "", "the"],
    ),
    "squad_v010_allanswers": (
        "validation",
        [
            {
                "id": "q0",
                "title": "Normans",
                "context": "The Normans were in Normandy, a region in France.",
                "question": "In what country is Normandy located?",
                "answers": {"text": ["France", "France.", "in France"], "answer_start": [42, 42, 39]},
            },
            {
                "id": "q1",
                "title": "Physics",
                "context": "Force equals mass times acceleration (F=ma).",
                "question": "What does force equal?",
                "answers": {"text": ["mass times acceleration"], "answer_start": [13]},
            },
            {
                "id": "q2",
                "title": "Cities",
                "context": "The capital of Italy is Rome, an ancient city.",
                "question": "What is the capital of Italy?",
                "answers": {"text": ["Rome"], "answer_start": [24]},
            },
        ],
        ["France", "mass x acceleration", "The Rome!"],
    ),
    "squad_v010_context_free": (
        "validation",
        [
            {
                "id": "q0",
                "title": "Normans",
                "context": "The Normans were in Normandy, a region in France.",
                "question": "In what country is Normandy located?",
                "answers": {"text": ["France", "France."], "answer_start": [42, 42]},
            },
        ],
        ["france"],
    ),
    "cnn_dailymail_v002": (
        "validation",
        [
            {
                "article": "The quick brown fox jumped over the lazy dog . It was a sunny day .",
                "highlights": "Fox jumps over dog .\nSunny day .",
                "id": "a0",
            },
            {
                "article": "Markets rallied on Tuesday as inflation cooled . Investors cheered .",
                "highlights": "Markets rally as inflation cools .",
                "id": "a1",
            },
            {
                "article": "A new bridge opened in the city . Traffic eased .",
                "highlights": "New bridge opens . Traffic eases .",
                "id": "a2",
            },
        ],
        [
            "The fox jumped over the dog . It was sunny .",
            "Markets rallied .",
            "New bridge opens . Traffic eased .",
        ],
    ),
}

_WMT = {
    "wmt14_ende_v003": ("de", "validation"),
    "wmt14_enfr_v003": ("fr", "validation"),
    "wmt16_enro_v003": ("ro", "validation"),
    "wmt15_enfr_v003": ("fr", "validation"),
    "wmt19_ende_v003": ("de", "validation"),
    "wmt_t2t_ende_v003": ("de", "validation"),
}
_SENT = {
    "en": ["That is good.", "The house is small, but it is mine.", "Where is the station?"],
    "de": ["Das ist gut.", "Das Haus ist klein, aber es gehört mir.", "Wo ist der Bahnhof?"],
    "fr": ["C'est bon.", "La maison est petite, mais elle est à moi.", "Où est la gare ?"],
    "ro": ["Este bine.", "Casa este mică, dar este a mea.", "Unde este gara?"],
}
_WMT_PRED = {
    "de": ["Das ist gut.", "Das Haus ist klein, aber gehört mir.", "Wo ist Bahnhof?"],
    "fr": ["C'est bien.", "La maison est petite, mais à moi.", "Où est la gare ?"],
    "ro": ["Este bine.", "Casa este mica, dar este a mea.", "Unde e gara?"],
}
for _name, (_lang, _split) in _WMT.items():
    TASKS[_name] = (
        _split,
        [{"en": e, _lang: t} for e, t in zip(_SENT["en"], _SENT[_lang], strict=False)],
        _WMT_PRED[_lang],
    )


# ----------------------------------------------------------------------------- running T5


def _to_tf(value, key: str = ""):
    """Returns the tensor TFDS would give for a JSON raw value (int64 labels, int32 indices, float32 scores)."""
    if isinstance(value, dict):
        return {k: _to_tf(v, k) for k, v in value.items()}
    if isinstance(value, int):
        return tf.constant(value, tf.int64 if key == "label" else tf.int32)
    if isinstance(value, float):
        return tf.constant(value, tf.float32)
    if isinstance(value, list):
        if not value:
            return tf.zeros([0], tf.string)
        return tf.constant(value, tf.string if isinstance(value[0], str) else tf.int32)
    return tf.constant(value, tf.string)


def _jsonable(value):
    """Returns a JSON value for a numpy/bytes/tuple value (tuples become lists)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _text_preprocessors(task: seqio.Task) -> list:
    """Returns the task's preprocessors before tokenization (the text formatting)."""
    out = []
    for p in task.preprocessors:
        if p is seqio.preprocessors.tokenize or getattr(p, "func", None) is seqio.preprocessors.tokenize:
            break
        out.append(p)
    return out


def run_task(key: str, split: str, raw: list[dict], predictions: list[str] | None) -> dict:
    """Returns {"split", "raw", "formatted", and unless `predictions` is None: "predictions",
    "postprocessed_targets", "postprocessed_predictions", "metrics"} for T5's task `key` ("name[#variant]")."""
    task = seqio.TaskRegistry.get(key.split("#")[0])
    formatted = []
    for ex in raw:
        ds = tf.data.Dataset.from_tensors(_to_tf(ex))
        for p in _text_preprocessors(task):
            ds = p(ds)
        for out in ds.as_numpy_iterator():
            out = dict(out)
            out["inputs_pretokenized"], out["targets_pretokenized"] = out["inputs"], out["targets"]
            formatted.append(out)
    result = {
        "split": split,
        "raw": raw,
        "formatted": [
            {"inputs": _jsonable(f["inputs"]), "targets": _jsonable(f["targets"])} for f in formatted
        ],
    }
    if predictions is None or (not task.predict_metric_fns and task.postprocess_fn is None):
        return result
    if len(predictions) != len(formatted):
        raise SystemExit(f"{key}: {len(predictions)} predictions for {len(formatted)} formatted examples")
    post = task.postprocess_fn or (lambda text, example=None, is_target=False: text)
    targets = [post(f["targets_pretokenized"].decode("utf-8"), example=f, is_target=True) for f in formatted]
    preds = [post(p, example=f, is_target=False) for p, f in zip(predictions, formatted, strict=False)]
    scores = {}
    for fn in task.predict_metric_fns:
        scores.update(fn(targets, preds))
    result.update(
        predictions=predictions,
        postprocessed_targets=_jsonable(targets),
        postprocessed_predictions=_jsonable(preds),
        metrics={k: float(v) for k, v in scores.items()},
    )
    return result


# ----------------------------------------------------------------------------- stand-alone metric cases


def metric_cases() -> dict:
    np.random.seed(0)
    seq_t = ["a b", "a b", " a b", "a  b", "x"]
    seq_p = ["a b", "a b ", "a b", "a b", "x"]
    bleu_preds = ["the cat sat on the mat", "a quick brown fox jumps"]
    # sacrebleu's layout: one list per reference *stream*, each with one string per prediction.
    bleu_streams = [
        ["the cat sat on the mat", "the quick brown fox jumps"],
        ["a cat was sitting on the mat", "a fast brown fox leaps"],
    ]
    rouge_t = ["the cat sat on the mat . it purred .", "markets rose today .", "police said the man fled ."]
    rouge_p = ["a cat sat on a mat . it slept .", "markets fell today .", "the man fled , police said ."]
    single_rouge = [metrics.rouge([t], [p]) for t, p in zip(rouge_t, rouge_p, strict=False)]
    squad_t = [["The Rome", "rome!"], ["mass times acceleration"], ["an apple a day"], ["x"]]
    squad_p = ["rome", "acceleration times mass", "Apple, day.", ""]
    cls_t, cls_p = [0, 1, 1, 0, 1, 1, 0, 1], [0, 1, 0, 0, 1, 1, 1, 1]
    corr_t, corr_p = [0.0, 1.2, 2.4, 3.8, 5.0, 2.2], [0.4, 1.0, 2.6, 3.2, 4.6, 3.0]
    return {
        "sequence_accuracy": {
            "targets": seq_t,
            "predictions": seq_p,
            "value": metrics.sequence_accuracy(seq_t, seq_p),
        },
        "bleu_single": {
            "targets": bleu_streams[0],
            "predictions": bleu_preds,
            "value": metrics.bleu(bleu_streams[0], bleu_preds),
        },
        "bleu_reference_streams": {
            "streams": bleu_streams,
            "predictions": bleu_preds,
            "value": metrics.bleu(bleu_streams, bleu_preds),
        },
        "rouge": {
            "targets": rouge_t,
            "predictions": rouge_p,
            "value": metrics.rouge(rouge_t, rouge_p),
            "per_example": single_rouge,
        },
        "squad": {"targets": squad_t, "predictions": squad_p, "value": metrics.squad(squad_t, squad_p)},
        "matthews_corrcoef": {
            "targets": cls_t,
            "predictions": cls_p,
            "value": eval_utils_free_mcc(cls_t, cls_p),
        },
        "f1_with_invalid": {
            "targets": cls_t,
            "predictions": [0, 1, 2, 0, -1, 1, 1, 1],
            "value": metrics.f1_score_with_invalid(cls_t, [0, 1, 2, 0, -1, 1, 1, 1]),
        },
        "pearson_spearman": {
            "targets": corr_t,
            "predictions": corr_p,
            "value": {
                **metrics.pearson_corrcoef(corr_t, corr_p),
                **metrics.spearman_corrcoef(corr_t, corr_p),
            },
        },
    }


def eval_utils_free_mcc(t, p) -> dict:
    from t5.data import glue_utils

    (fn,) = glue_utils.GLUE_METRICS["cola"]
    return {k: float(v) for k, v in fn(t, p).items()}


def averages(task_results: dict) -> dict:
    """T5's GLUE and SuperGLUE averages (eval_utils.compute_avg_glue) of two sets of per-task scores."""
    rows = {
        "from_tasks": {
            f"{name}/{k}": v for name, r in task_results.items() for k, v in r.get("metrics", {}).items()
        },
        "hand": {
            tag: 50.0 + 3.0 * i for i, tag in enumerate(eval_utils.METRIC_NAMES) if "average" not in tag
        },
    }
    out = {}
    for key, scores in rows.items():
        tags = {t: [(0, v)] for t, v in scores.items() if t in eval_utils.METRIC_NAMES}
        df = eval_utils.compute_avg_glue(eval_utils.scores_to_df(tags, dict(eval_utils.METRIC_NAMES)))
        out[key] = {
            "scores": scores,
            "glue_average": _nan_none(df, "Average GLUE Score"),
            "super_glue_average": _nan_none(df, "Average SuperGLUE Score"),
        }
    return out


def _nan_none(df: pd.DataFrame, column: str):
    return float(df[column].iloc[0]) if column in df.columns else None


def main() -> int:
    tasks = {name: run_task(name, *spec) for name, spec in TASKS.items()}
    golden = {
        "versions": VERSIONS,
        "tasks": tasks,
        "metric_cases": metric_cases(),
        "averages": averages(tasks),
        "metric_names": {tag: [m.name, m.group] for tag, m in eval_utils.METRIC_NAMES.items()},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(golden, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(tasks)} tasks)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
