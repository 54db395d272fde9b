"""SavedModel export: the exported graph decodes exactly as the JAX side, in a process without JAX."""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
import pytest
from conftest import run_script

from mesh_t5 import checkpoints, cli, export, inference, network
from mesh_t5.config import DecodeOptions, T5Config
from mesh_t5.model import T5Model
from mesh_t5.vocab import ByteVocabulary, SentencePieceVocabulary

pytest.importorskip("tensorflow_text")

TEXTS = [
    "translate: the cat sat on the mat",
    "summarize: a dog ran in the park and then it slept",
    "",
    "the the the",
    "a much longer input about cats and dogs and parks and mats that gets cut to the length",
]
MAX_INPUT, MAX_DECODE = 12, 10


def _corpus() -> list[str]:
    words = [
        "the",
        "cat",
        "sat",
        "on",
        "mat",
        "a",
        "dog",
        "ran",
        "in",
        "park",
        "and",
        "then",
        "it",
        "slept",
        "translate",
        "summarize",
        "about",
    ]
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=8)) for _ in range(300)]


def _tiny(vocab_size: int) -> T5Config:
    return T5Config(
        vocab_size=vocab_size, d_model=32, d_ff=48, num_heads=2, d_kv=8, num_encoder_layers=2,
        num_decoder_layers=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
    )  # fmt: skip


def _model(vocab, seed: int, vocab_path: str | None = None) -> T5Model:
    config = _tiny(vocab.vocab_size)
    params = network.init_params(config, jax.random.key(seed))
    # Larger logits than T5 init give confident, input-dependent outputs (fewer near-ties across backends).
    params["logits_dense"]["kernel"] = params["logits_dense"]["kernel"] * 8.0
    return T5Model(config, params, vocab_path=vocab_path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two SavedModels (SentencePiece + greedy, bytes + beam 3) and their outputs in a JAX-free process."""
    root = tmp_path_factory.mktemp("export")
    sp_path = str(root / "sp.model")
    sp_vocab = SentencePieceVocabulary.train(_corpus(), vocab_size=36, model_path=sp_path)
    cases = {
        "sp_greedy": (_model(sp_vocab, 0, sp_path), sp_vocab, None, 1),
        "byte_beam": (_model(ByteVocabulary(), 1), ByteVocabulary(), ByteVocabulary(), 3),
    }
    dirs = {}
    start = time.time()
    for name, (model, _, vocabulary, beam) in cases.items():
        dirs[name] = export.export_saved_model(
            model, str(root / name), DecodeOptions(max_decode_length=MAX_DECODE, beam_size=beam),
            max_input_length=MAX_INPUT, vocabulary=vocabulary,
        )  # fmt: skip
    print(f"export: {time.time() - start:.1f}s")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.time()
    proc = run_script(
        "load_saved_models.py", ",".join(dirs.values()), json.dumps(TEXTS), env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"fresh process: {time.time() - start:.1f}s")
    return cases, dirs, out


def test_fresh_process_needs_no_jax(exported):
    _, _, out = exported
    assert out["loaded"] == []


@pytest.mark.parametrize("name", ["sp_greedy", "byte_beam"])
def test_savedmodel_decodes_like_jax_generate(exported, name):
    cases, dirs, out = exported
    model, vocab, _, beam = cases[name]
    result = out["result"][dirs[name]]
    assert result["outer_dim"] == [None]
    ids, scores = inference.generate_ids(
        model.config, [model.params], inference.tokenize(vocab, TEXTS),
        DecodeOptions(max_decode_length=MAX_DECODE, beam_size=beam), max_input_length=MAX_INPUT,
    )  # fmt: skip
    texts = vocab.decode_batch(ids.tolist())
    assert len(set(texts)) > 2, texts  # the model's outputs depend on its input
    # Batch sizes 1 and 5 for the greedy model (one compiled shape each: ~10 s), 5 for the beam one.
    for run_texts, run_scores in result["runs"]:
        n = len(run_texts)
        assert run_texts == texts[:n]
        np.testing.assert_allclose(run_scores, scores[:n], atol=2e-3, rtol=1e-4)
    all_texts = result["runs"][-1][0]
    reference = inference.score(
        model.config, model.params, vocab, TEXTS, all_texts, max_input_length=MAX_INPUT,
        max_target_length=MAX_DECODE,
    )  # fmt: skip
    np.testing.assert_allclose(result["score"], reference, atol=2e-3, rtol=1e-4)


def test_refuses_non_empty_output_dir(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    model = _model(ByteVocabulary(), 0)
    with pytest.raises(export.ExportError, match="exists and is not empty"):
        export.export_saved_model(model, str(tmp_path), vocabulary=ByteVocabulary())
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_cli_bad_inputs_are_one_line(tmp_path, capsys):
    code = cli.main(["export", f"--checkpoint={tmp_path / 'nope'}", f"--output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "does not exist" in err, err
    model = _model(ByteVocabulary(), 0)
    checkpoints.save_model(tmp_path / "novocab", model.config, model.params, vocab_path=None)
    code = cli.main(
        ["export", f"--gin.CHECKPOINT_PATH={tmp_path / 'novocab'}", f"--output_dir={tmp_path / 'out'}"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "has no vocabulary" in err, err
    assert not (tmp_path / "out").exists()
