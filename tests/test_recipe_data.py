"""The catalogue on TFDS mock data (every dataset's own feature spec, nothing downloaded): every registered
mixture builds its train and validation (and test) streams, every registered task formats a mock example
that decodes back; a mixture's split is the union of its tasks that have it; decoder-only models keep a
supervised task's inputs and are scored and decoded from them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import tiny_config, tiny_params
from mock_tfds import mock_tfds, train_tiny_vocab

from mesh_t5 import data, evaluation, inference
from mesh_t5.config import DecodeOptions
from mesh_t5.data import preprocessors as pp
from mesh_t5.data.sources import FunctionSource, TfdsSource
from mesh_t5.errors import UserError
from mesh_t5.tasks import common
from mesh_t5.tasks.glue import GLUE_WEIGHT_MAPPING
from mesh_t5.vocab import ByteVocabulary, SentencePieceVocabulary

LENGTHS = {"inputs": 64, "targets": 16}


@pytest.fixture(scope="module")
def mocked(tmp_path_factory):
    """TFDS mocked and the catalogue's default vocabulary set to a tiny SentencePiece model."""
    vocab = SentencePieceVocabulary(train_tiny_vocab(tmp_path_factory.mktemp("vocab") / "spm.model"))
    saved = common.DEFAULT_VOCABULARY._vocab
    common.DEFAULT_VOCABULARY._vocab = vocab
    try:
        with mock_tfds():
            yield vocab
    finally:
        common.DEFAULT_VOCABULARY._vocab = saved


def _tfds_mixtures() -> list[str]:
    return [
        m
        for m in data.list_mixtures()
        if all(isinstance(t.source, TfdsSource) for t in data.get_mixture(m).tasks)
    ]


def test_every_mixture_builds_train_validation_and_test_streams(mocked):
    names = _tfds_mixtures()
    assert {
        "glue_v002_proportional",
        "super_glue_v102_proportional",
        "all_equal",
        "glue_mnli_and_dev_v002",
    } <= set(names)
    for name in names:
        mixture = data.get_mixture(name)
        for split in ("train", "validation", "test"):
            if not any(split in t.splits for t in mixture.tasks):
                continue
            it = data.get_dataset(
                name,
                LENGTHS,
                split=split,
                batch_size=2,
                pack=False,
                num_epochs=None if split == "train" else 1,
            )
            batch = next(it)
            assert batch["decoder_target_tokens"].shape == (2, 16), (name, split)
            # Every row holds a real example: targets end with EOS (or were cut at the row's end).
            for row in batch["decoder_target_tokens"]:
                kept = row[row != 0]
                assert len(kept) > 0 and (kept[-1] == 1 or len(kept) == 16), (name, split, row)
            streams = it.rows.upstream.streams  # the tasks in the split's stream
            with_split = [t.name for t in mixture.tasks if split in t.splits]
            rates = mixture.rates(split)
            assert set(streams) == {n for n in with_split if rates[n] > 0}, (name, split)


def test_a_mixture_split_is_the_union_of_its_tasks_that_have_it(mocked, caplog):
    # T5's GLUE mixture: MNLI has no "validation" split (validation_matched/_mismatched), AX only "test".
    mixture = data.Mixture("recipe_glue_copy", list(GLUE_WEIGHT_MAPPING.items()))
    with caplog.at_level(logging.WARNING, logger="mesh_t5.data"):
        mixture.rates("validation")
        rates = mixture.rates("validation")
    said = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(said) == 1 and "'glue_mnli_v002'" in said[0] and "'glue_ax_v002'" in said[0]
    assert "glue_mnli_v002" not in rates and rates["glue_mnli_matched_v002"] == 0.0
    assert rates["glue_cola_v002"] == pytest.approx(
        8_551 / sum(v for k, v in GLUE_WEIGHT_MAPPING.items() if k in rates)
    )
    # Only eval-only (rate 0) tasks have the split: they are mixed equally rather than refused.
    assert data.get_mixture("wsc_dpr_simple_proportional").rates("validation") == {
        "super_glue_wsc_v102_simple_eval": 1.0
    }
    with pytest.raises(UserError, match="none of its tasks has a 'test_matched' split"):
        data.get_mixture("super_glue_v102_proportional").rates("test_matched")
    # Examples-proportional rates give a task without training examples rate 0 (en_mix's MNLI-matched).
    assert data.rate_num_examples(data.get_task("glue_mnli_matched_v002")) == 0.0
    # ... and read the size of the others from TFDS (mock data: 12 examples per split).
    assert data.rate_num_examples(data.get_task("cnn_dailymail_v002")) == 12.0


def test_a_finite_pass_gives_every_example_of_every_task(registered_pair):
    a, b = registered_pair
    mixture = data.MixtureRegistry.add("recipe_pair", [(a, 3.0), (b, 1.0), ("recipe_pair_test_only", 1.0)])
    try:
        it = data.get_dataset(
            "recipe_pair",
            {"inputs": 8, "targets": 8},
            split="validation",
            batch_size=4,
            pack=False,
            num_epochs=1,
        )
        rows = [r for batch in it for r in batch["encoder_input_tokens"] if r.any()]
        texts = sorted(bytes(int(t) - 3 for t in r[r > 2]).decode() for r in rows)
        assert texts == sorted([f"a{i}" for i in range(7)] + [f"b{i}" for i in range(3)])
        # Resumable across a task running out: restore mid-way and get the same rest.
        it = data.get_dataset("recipe_pair", {"inputs": 8, "targets": 8}, split="validation", batch_size=1,
                              pack=False, num_epochs=1)  # fmt: skip
        head = [next(it) for _ in range(6)]
        state = it.get_state()
        rest = [b["encoder_input_tokens"].tolist() for b in it]
        again = data.get_dataset("recipe_pair", {"inputs": 8, "targets": 8}, split="validation", batch_size=1,
                                 pack=False, num_epochs=1)  # fmt: skip
        again.set_state(state)
        assert [b["encoder_input_tokens"].tolist() for b in again] == rest and len(head) + len(rest) == 10
    finally:
        data.MixtureRegistry.remove(mixture.name)


VOCAB = ByteVocabulary()
FEATURES = {"inputs": data.Feature(VOCAB), "targets": data.Feature(VOCAB)}


def _register(name: str, examples: dict[str, list[dict]], metric_fns=()) -> data.Task:
    source = FunctionSource(lambda split: examples[split], splits=tuple(examples))
    preprocessors = [pp.rekey({"inputs": "q", "targets": "a"}), pp.tokenize, pp.append_eos_after_trim]
    return data.TaskRegistry.add(
        name, source, preprocessors, FEATURES, metric_fns=list(metric_fns), overwrite=True
    )


@pytest.fixture
def registered_pair():
    _register("recipe_pair_a", {"validation": [{"q": f"a{i}", "a": "x"} for i in range(7)]})
    _register("recipe_pair_b", {"validation": [{"q": f"b{i}", "a": "y"} for i in range(3)]})
    _register("recipe_pair_test_only", {"test": [{"q": "t", "a": "z"}]})
    yield "recipe_pair_a", "recipe_pair_b"
    for name in ("recipe_pair_a", "recipe_pair_b", "recipe_pair_test_only"):
        data.TaskRegistry.remove(name)


def _decoded_pieces(vocab, ids) -> str:
    return " ".join(vocab.decode([int(t) for t in ids if t != 1]).split())


def test_every_task_formats_a_mock_example_that_decodes_back(mocked):
    vocab = mocked
    checked = 0
    for name in data.list_tasks():
        task = data.get_task(name)
        if not isinstance(task.source, TfdsSource):
            continue
        split = "validation" if "validation" in task.splits else task.splits[0]
        ex = next(iter(task.get_dataset(split, sequence_length=None)))
        assert "targets" in ex and len(ex["targets"]) >= 2 and ex["targets"][-1] == 1, name
        for feature in ("inputs", "targets"):
            if feature not in ex:
                continue
            ids = ex[feature]
            assert ids.dtype == np.int32 and ids.min() > 0 and ids.max() < vocab.vocab_size, (name, feature)
            assert (ids[:-1] != 1).all(), (name, feature)  # one EOS, at the end
            text = ex.get(f"{feature}_pretokenized")
            if text is not None:  # SentencePiece normalises whitespace, as for T5's vocabulary
                assert _decoded_pieces(vocab, ids) == " ".join(text.split()), (name, feature, text)
        if task.postprocess_fn is not None and "targets_pretokenized" in ex:
            task.postprocess(ex["targets_pretokenized"], example=ex, is_target=True)  # must not raise
        checked += 1
    assert checked >= 43  # GLUE 12, SuperGLUE 12, C4 10, SQuAD 2, CNN/DM 1, WMT 6


def _pred_length(targets, predictions):
    return {"pred_chars": float(np.mean([len(p) for p in predictions]))}


@pytest.mark.parametrize("architecture", ["decoder_only", "prefix_lm"])
def test_decoder_only_models_keep_the_inputs_and_decode_from_them(architecture):
    examples = [{"q": f"question {i} " * (1 + i % 3), "a": f"answer {i}"} for i in range(5)]
    task = _register("recipe_qa", {"validation": examples}, metric_fns=[_pred_length])
    try:
        config = tiny_config(architecture=architecture, vocab_size=360, num_encoder_layers=0)
        params = tiny_params(config)
        lengths = {"inputs": 40, "targets": 12}
        results = evaluation.evaluate(
            params, config, mixture_or_task_name="recipe_qa", task_feature_lengths=lengths, batch_size=4
        )
        rows = list(data.eval_examples(task, "validation", lengths))
        inputs = np.zeros((len(rows), 40), np.int32)
        targets = np.zeros((len(rows), 12), np.int32)
        for i, r in enumerate(rows):
            inputs[i, : len(r["inputs"])], targets[i, : len(r["targets"])] = r["inputs"], r["targets"]
        # The eval loss is on the targets given the inputs: what inference scores independently.
        log_likelihood = inference.score_tokens(config, params, inputs, targets)
        assert results["tokens"] == sum(len(r["targets"]) for r in rows)
        assert results["loss"] * results["tokens"] == pytest.approx(-log_likelihood.sum(), rel=1e-4)
        # Decoded metrics: the model continues each example's inputs.
        decoded = inference.generate_tokens(config, params, inputs, DecodeOptions(max_decode_length=12))
        texts = [VOCAB.decode(evaluation._strip(d, config.eos_id)) for d in decoded]
        assert results["recipe_qa/pred_chars"] == pytest.approx(np.mean([len(t) for t in texts]))
    finally:
        data.TaskRegistry.remove("recipe_qa")


def test_c4_lm_trains_on_the_whole_chunk(mocked):
    ex = next(iter(data.get_task("c4_v220_lm").get_dataset("validation", sequence_length={"targets": 32})))
    assert "inputs" not in ex and len(ex["targets"]) == 32 and ex["targets"][-1] == 1
    batch = next(data.get_dataset("c4_v220_lm", {"targets": 32}, split="validation", batch_size=1,
                                  feature_converter="lm", pack=False, num_epochs=1))  # fmt: skip
    assert batch["decoder_loss_weights"].sum() == 32  # every token of the chunk is learned


def test_a_repeated_split_whose_examples_are_all_dropped_is_an_error_not_a_hang():
    source = FunctionSource(lambda split: [{"q": "a", "a": "b"}] * 3, splits=("train",))
    task = data.Task("recipe_drop_all", source, [lambda ex, ctx: None, pp.tokenize], FEATURES)
    with pytest.raises(UserError, match="dropped every example of split 'train' for a whole epoch"):
        next(task.get_dataset("train", num_epochs=None))
    assert list(task.get_dataset("train", num_epochs=1)) == []  # one pass: simply empty
