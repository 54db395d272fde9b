"""The task catalogue against T5: raw examples (as TFDS yields them) -> the exact strings T5's
preprocessors give (golden strings from t5/data/preprocessors_test.py and the preprocessors' docstrings),
postprocessing and metrics on known predictions."""

import numpy as np
import pytest

from mesh_t5.tasks import get_mixture, get_task, list_mixtures, list_tasks
from mesh_t5.tasks import text_formats as fmt
from mesh_t5.tasks.common import task_with_examples
from mesh_t5.tasks.glue import GLUE_WEIGHT_MAPPING
from mesh_t5.vocab import ByteVocabulary

VOCAB = ByteVocabulary()


def _run(name, raw, split="validation"):
    """Returns the examples task `name` makes of the raw examples (byte vocabulary)."""
    task = task_with_examples(name, {split: raw}, vocabulary=VOCAB)
    return task, list(task.get_dataset(split))


def _check(ex, inputs, targets):
    assert ex["inputs_pretokenized"] == inputs and ex["targets_pretokenized"] == targets
    assert ex["inputs"].tolist() == [*VOCAB.encode(inputs), VOCAB.eos_id]
    assert ex["targets"].tolist() == [*VOCAB.encode(targets), VOCAB.eos_id]


def _score(task, examples, predictions):
    """Returns the task's metrics for `predictions` (strings), postprocessed as the eval loop does."""
    targets = [task.postprocess(e["targets_pretokenized"], example=e, is_target=True) for e in examples]
    preds = [
        task.postprocess(p, example=e, is_target=False) for p, e in zip(predictions, examples, strict=True)
    ]
    out = {}
    for fn in task.metric_fns:
        out.update(fn(targets, preds))
    return out


def test_t5_names_registered_without_data():
    tasks = set(list_tasks())
    for name in [
        *(f"glue_{c}_v002" for c in ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "mnli_matched",
                                     "mnli_mismatched", "qnli", "rte", "wnli", "ax")),
        *(f"super_glue_{c}_v102" for c in ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "axb", "axg")),
        "super_glue_wsc_v102_simple_train", "super_glue_wsc_v102_simple_eval", "dpr_v001_simple",
        "c4_v220_span_corruption", "c4_v220_iid_denoising", "c4_v220_prefix_lm", "c4_v020_unsupervised",
        "squad_v010_allanswers", "cnn_dailymail_v002", "wmt_t2t_ende_v003", "wmt14_enfr_v003",
        "wmt15_enfr_v003", "wmt16_enro_v003", "wmt19_ende_v003",
    ]:  # fmt: skip
        assert name in tasks, name
    assert get_task("glue_mnli_v002").splits[:3] == ("train", "validation_matched", "validation_mismatched")
    assert get_task("super_glue_axb_v102").splits == ("test",)
    assert get_task("glue_cola_v002").source.name == "glue/cola:1.0.0"
    assert get_task("c4_v220_span_corruption").source.name == "c4/en:2.2.0"
    assert {"glue_v002_proportional", "super_glue_v102_proportional", "all_mix", "all_proportional"} <= set(
        list_mixtures()
    )
    # T5's GLUE weights are fixed example counts: the rates need no data.
    rates = get_mixture("glue_v002_proportional").rates()
    total = sum(GLUE_WEIGHT_MAPPING.values())
    assert rates["glue_mnli_v002"] == pytest.approx(392_702 / total)
    assert rates["glue_ax_v002"] == 0.0 and "glue_wnli_v002" not in rates
    assert get_mixture("all_proportional").get_rate(get_task("glue_rte_v002")) == 2_490 * 0.5


def test_glue_formatting_matches_t5():
    # t5 preprocessors_test.test_glue: sorted keys by default, feature_names in order, "<unk>" for -1.
    raw = {"q1": "How so?", "q2": "Why not?", "q3": "Who?", "idx": 10, "label": 0}
    labels = ["not_duplicate", "duplicate"]
    assert fmt.glue("qqp", labels)(raw, None) == {
        "inputs": "qqp q1: How so? q2: Why not? q3: Who?", "targets": "not_duplicate", "idx": 10,
    }  # fmt: skip
    assert fmt.glue("qqp", labels, ["q3", "q1"])(raw, None)["inputs"] == "qqp q3: Who? q1: How so?"
    assert fmt.glue("qqp", labels)(dict(raw, label=-1), None)["targets"] == "<unk>"

    _, [cola] = _run("glue_cola_v002", [{"sentence": "John made the table.", "label": 1, "idx": 3}])
    _check(cola, "cola sentence: John made the table.", "acceptable")
    _, [mnli, test] = _run(
        "glue_mnli_v002",
        [{"premise": "A man sleeps.", "hypothesis": "A man runs.", "label": 2, "idx": 0},
         {"premise": "P.", "hypothesis": "H.", "label": -1, "idx": 1}],
    )  # fmt: skip
    _check(mnli, "mnli hypothesis: A man runs. premise: A man sleeps.", "contradiction")
    _check(test, "mnli hypothesis: H. premise: P.", "<unk>")
    _, [ax] = _run("glue_ax_v002", [{"premise": "P.", "hypothesis": "H.", "label": 1, "idx": 0}], "test")
    _check(ax, "mnli hypothesis: H. premise: P.", "neutral")
    _, [boolq] = _run(
        "super_glue_boolq_v102", [{"question": "is it?", "passage": "It is.", "label": 1, "idx": 0}]
    )
    _check(boolq, "boolq passage: It is. question: is it?", "True")
    copa_raw = {
        "premise": "P.",
        "choice1": "C1.",
        "choice2": "C2.",
        "question": "cause",
        "label": 1,
        "idx": 0,
    }
    _, [copa] = _run("super_glue_copa_v102", [copa_raw])
    _check(copa, "copa choice1: C1. choice2: C2. premise: P. question: cause", "choice2")
    wic_raw = {"word": "bank", "sentence1": "S1.", "sentence2": "S2.", "start1": 0, "start2": 1, "end1": 2,
               "end2": 3, "label": 0, "idx": 0}  # fmt: skip
    _, [wic] = _run("super_glue_wic_v102", [wic_raw])
    _check(wic, "wic sentence1: S1. sentence2: S2. word: bank", "False")
    # AX-b is cast as RTE after renaming sentence1 -> premise, sentence2 -> hypothesis.
    _, [axb] = _run(
        "super_glue_axb_v102", [{"sentence1": "A.", "sentence2": "B.", "label": 1, "idx": 0}], "test"
    )
    _check(axb, "rte hypothesis: B. premise: A.", "not_entailment")


def test_mrpc_and_cola_postprocess_and_metrics():
    raw = [
        {"sentence1": f"a{i}", "sentence2": f"b{i}", "label": lab, "idx": i}
        for i, lab in enumerate([1, 1, 0, 0, 1])
    ]
    task, exs = _run("glue_mrpc_v002", raw)
    _check(exs[0], "mrpc sentence1: a0 sentence2: b0", "equivalent")
    preds = ["equivalent", "not_equivalent", "equivalent", "not_equivalent", "banana"]
    # ids [1, 0, 1, 0, -1]; the invalid one counts as wrong (-> 0): tp 1, fp 1, fn 2 -> F1 0.4; 2/5 right.
    assert _score(task, exs, preds) == pytest.approx({"f1": 40.0, "accuracy": 40.0})
    raw = [{"sentence": f"s{i}", "label": lab, "idx": i} for i, lab in enumerate([1, 1, 0, 0])]
    task, exs = _run("glue_cola_v002", raw)
    # confusion [[1, 1], [0, 2]] (rows: target 0, 1) -> MCC = (2*1 - 1*0) / sqrt(3*2*1*2) = 1/sqrt(3)
    got = _score(task, exs, ["acceptable", "acceptable", "acceptable", "unacceptable"])
    assert got["matthews_corrcoef"] == pytest.approx(100 / np.sqrt(3))


def test_stsb_21_classes_postprocess_and_correlations():
    # t5 preprocessors_test.test_stsb: 2.8 -> "2.8", 1.66 -> "1.6".
    raw = [
        {"sentence1": "Big news.", "sentence2": "No idea.", "label": x, "idx": i}
        for i, x in enumerate([2.8, 1.66, 3.87, 5.0])
    ]
    task, exs = _run("glue_stsb_v002", raw)
    _check(exs[0], "stsb sentence1: Big news. sentence2: No idea.", "2.8")
    assert [e["targets_pretokenized"] for e in exs] == ["2.8", "1.6", "3.8", "5.0"]
    grid = np.linspace(1.0, 5.0, 4001, dtype=np.float32)  # STS-B scores lie in [1, 5] for nearly all pairs
    assert sorted({fmt.stsb_target(x) for x in grid}) == [f"{1 + 0.2 * k:.1f}" for k in range(21)]
    assert task.postprocess("3.8") == pytest.approx(3.8) and task.postprocess("3.8x") == -1.0
    got = _score(task, exs, ["2.8", "1.6", "3.8", "5.0"])
    assert got == pytest.approx({"pearson_corrcoef": 100.0, "spearman_corrcoef": 100.0})
    got = _score(task, exs, ["2.0", "1.0", "3.0", "4.0"])  # the same ranks, not a linear map
    assert got["spearman_corrcoef"] == pytest.approx(100.0)
    assert got["pearson_corrcoef"] == pytest.approx(
        100 * np.corrcoef([2.8, 1.6, 3.8, 5.0], [2, 1, 3, 4])[0, 1]
    )
    assert got["pearson_corrcoef"] < 99.95


def test_squad_matches_t5_and_scores_all_answers():
    # t5 preprocessors_test.test_pad_punctuation / test_pad_punctuation_i18n / test_squad.
    assert fmt.pad_punctuation('"This  is a string with "punctuation (1845-1986) ".') == (
        ' " This is a string with " punctuation ( 1845 - 1986 ) " . '
    )
    assert fmt.pad_punctuation('"Introducción (la vídeo)".') == ' " Introducción ( la vídeo ) " . '
    raw = {"id": "testid", "title": "T", "context": "Some context.", "question": "A question?",
           "answers": {"text": ["The answer.", "Another answer."], "answer_start": [0, 0]}}  # fmt: skip
    task, [ex] = _run("squad_v010_allanswers", [raw])
    _check(ex, "question: A question ? context: Some context . ", "The answer . ")
    assert ex["answers"] == ["The answer . ", "Another answer . "]
    assert task.postprocess("x", example=ex, is_target=True) == ["The answer . ", "Another answer . "]
    # EM/F1 maximised over the answers: "another answer" matches the second after normalisation;
    # "answer indeed" vs "answer" (articles and punctuation dropped): precision 1/2, recall 1 -> F1 2/3.
    got = _score(task, [ex, ex], ["Another answer", "answer indeed"])
    assert got == pytest.approx({"em": 50.0, "f1": (100 + 200 / 3) / 2})


def test_multirc_record_wsc_dpr():
    # t5 preprocessors_test.test_multirc (HTML dropped, idx kept), then T5's grouped metrics.
    para = ("<b>Sent 1: </b>Once upon a time, there was a squirrel named Joey.<br><b>Sent 2: </b>Joey loved "
            "to go outside and play with his cousin Jimmy.")  # fmt: skip
    q = "Why was Joey surprised the morning he woke up for breakfast?"
    raw = [
        {"paragraph": para, "question": q, "answer": f"ans{a}", "label": lab, "idx": {"paragraph": 5, "question": qi, "answer": a}}
        for a, (qi, lab) in enumerate([(1, 1), (1, 0), (1, 1), (2, 1), (2, 0)])
    ]  # fmt: skip
    task, exs = _run("super_glue_multirc_v102", raw)
    _check(
        exs[0],
        f"multirc question: {q} answer: ans0 paragraph: Sent 1: Once upon a time, there was a squirrel named "
        "Joey. Sent 2: Joey loved to go outside and play with his cousin Jimmy.",
        "True",
    )
    assert exs[3]["idx/question"] == 2
    # question 1 all right, question 2 one wrong: exact match 50; answers: tp 3, fp 1, fn 0 -> F1 6/7.
    got = _score(task, exs, ["True", "False", "True", "True", "True"])
    assert got == pytest.approx({"f1": 600 / 7, "exact_match": 50.0})

    passage = "The passage.\n@highlight\nFirst point\n@highlight\nSecond point"
    raw = {"passage": passage, "query": "A @placeholder is a bird.", "entities": ["penguin", "potato", "pigeon"],
           "answers": ["penguin", "pigeon"], "idx": {"passage": 0, "query": 7}}  # fmt: skip
    task, exs = _run("super_glue_record_v102", [raw])
    inputs = ("record query: A @placeholder is a bird. entities: penguin, potato, pigeon passage: The passage. "
              "First point. Second point")  # fmt: skip
    assert [e["targets_pretokenized"] for e in exs] == ["penguin", "pigeon"]
    _check(exs[1], inputs, "pigeon")
    assert task.postprocess("x", example=exs[1], is_target=True) == {
        "value": ["penguin", "pigeon"],
        "group": (0, 7),
    }
    # Deduplicated: only the first copy of the query counts.
    assert _score(task, exs, ["pigeon", "potato"]) == pytest.approx({"em": 100.0, "f1": 100.0})
    assert _score(task, exs, ["potato", "pigeon"]) == pytest.approx({"em": 0.0, "f1": 0.0})

    wsc = {"text": "Mitchell asked Tom if he could lend some money.", "span1_index": 2, "span2_index": 4,
           "span1_text": "Tom", "span2_text": "he", "idx": 0}  # fmt: skip
    task, exs = _run(
        "super_glue_wsc_v102_simple_eval", [dict(wsc, label=1), dict(wsc, label=0, span1_text="Mitchell")]
    )
    _check(exs[0], "wsc: Mitchell asked Tom if *he* could lend some money.", "Tom")
    assert [task.postprocess(p, example=exs[0]) for p in ("the tom", "Mitchell")] == [1, 0]
    assert _score(task, exs, ["Tom", "Tom"]) == pytest.approx({"accuracy": 100.0})  # 1 == 1, 0 == 0
    train, exs = _run("super_glue_wsc_v102_simple_train", [dict(wsc, label=1), dict(wsc, label=0)], "train")
    assert len(exs) == 1 and train.stats["dropped by wsc_simple"] == 1

    dpr = {
        "sentence": "Bob asked Tom if he can lend some money.",
        "pronoun": "he",
        "candidates": ["Bob", "Tom"],
        "label": 1,
    }
    _, [ex] = _run("dpr_v001_simple", [dpr], "train")
    _check(ex, "wsc: Bob asked Tom if *he* can lend some money.", "Tom")


def test_record_expansion_resumes_mid_example():
    raw = [
        {"passage": f"p{i}", "query": "q", "entities": ["a", "b", "c"], "answers": ["a", "b", "c"][: i % 3],
         "idx": {"passage": i, "query": 0}}
        for i in range(5)
    ]  # fmt: skip
    task = task_with_examples("super_glue_record_v102", {"train": raw}, vocabulary=VOCAB)
    full = [e["targets_pretokenized"] for e in task.get_dataset("train")]
    assert full == ["<unk>", "a", "a", "b", "<unk>", "a"]
    it = task.get_dataset("train")
    head = [next(it)["targets_pretokenized"] for _ in range(3)]  # stops inside example 2
    state = it.get_state()
    again = task.get_dataset("train")
    again.set_state(state)
    assert head + [e["targets_pretokenized"] for e in again] == full


def test_generation_tasks_match_t5():
    _, [ex] = _run(
        "cnn_dailymail_v002", [{"article": "An article.", "highlights": "A summary.", "id": "x"}], "test"
    )
    _check(ex, "summarize: An article.", "A summary.")
    _, [ex] = _run("wmt_t2t_ende_v003", [{"en": "That is good.", "de": "Das ist gut."}], "test")
    _check(ex, "translate English to German: That is good.", "Das ist gut.")
    ro = "Vă mulțumesc foarte mult pentru invitație."
    task, [ex] = _run("wmt16_enro_v003", [{"en": "Thank you very much for the invitation.", "ro": ro}])
    _check(ex, "translate English to Romanian: Thank you very much for the invitation.", ro)
    assert _score(task, [ex], [ro]) == pytest.approx({"bleu": 100.0})
    assert 0 < _score(task, [ex], ["Vă mulțumesc foarte mult pentru cadou."])["bleu"] < 100
