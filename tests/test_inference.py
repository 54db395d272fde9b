"""Inference on tiny random networks: cached decoding vs uncached forward passes, scores, HF parity."""

from __future__ import annotations

import dataclasses
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_script

from mesh_t5 import inference, layouts, native, network
from mesh_t5.commands import infer
from mesh_t5.config import DecodeOptions, T5Config
from mesh_t5.errors import UserError
from mesh_t5.vocab import ByteVocabulary

EOS = 1

# Jitted once per config (eager scans over layers are slow).
_init = jax.jit(network.init_params, static_argnums=0)
_forward = jax.jit(network.forward, static_argnums=2)


def _config(architecture: str = "encoder_decoder", **changes) -> T5Config:
    base = dict(
        vocab_size=48, d_model=32, d_ff=48, num_heads=4, d_kv=8, num_encoder_layers=2, num_decoder_layers=2,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, architecture=architecture,
    )  # fmt: skip
    return T5Config(**{**base, **changes})


@pytest.fixture(scope="module")
def models():
    out = {}
    for i, arch in enumerate(["encoder_decoder", "decoder_only", "prefix_lm"]):
        config = _config(arch)
        params = _init(config, jax.random.key(10 + i))
        # Sharpen the output distribution so argmax decisions are far from float round-off.
        params["logits_dense"]["kernel"] = params["logits_dense"]["kernel"] * 8.0
        out[arch] = (config, params)
    return out


def _inputs(rng: np.random.Generator, lengths: list[int], width: int, vocab: int) -> np.ndarray:
    """Right-padded rows of random ids in [2, vocab) ending with EOS."""
    out = np.zeros((len(lengths), width), np.int32)
    for i, n in enumerate(lengths):
        out[i, : n - 1] = rng.integers(2, vocab, n - 1)
        out[i, n - 1] = EOS
    return out


def _forward_batch(config: T5Config, inputs: np.ndarray, decoded: list[int], length: int) -> tuple[dict, int]:
    """One example's full forward batch and the position whose logits predict the next token.

    Shapes are fixed (padding after the causal frontier cannot change earlier logits), so the
    reference compiles once.
    """
    n_in = int(np.max(np.nonzero(inputs)[0])) + 1 if inputs.any() else 0
    if config.has_encoder:
        dec_in = np.zeros(length, np.int32)
        dec_in[1 : 1 + len(decoded)] = decoded
        return {"encoder_input_tokens": inputs[None], "decoder_input_tokens": dec_in[None]}, len(decoded)
    dec_in = np.zeros(1 + len(inputs) + length, np.int32)
    dec_in[1 : 1 + n_in] = inputs[:n_in]
    dec_in[1 + n_in : 1 + n_in + len(decoded)] = decoded
    batch = {"decoder_input_tokens": dec_in[None]}
    if config.architecture == "prefix_lm":
        batch["decoder_causal_attention"] = (np.arange(len(dec_in)) <= n_in).astype(np.int32)[None]
    return batch, n_in + len(decoded)


def _uncached_greedy(config, params, inputs: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy decoding by full forward passes, one example at a time: (tokens [B, L], log-probs [B])."""
    tokens, scores = np.zeros((len(inputs), length), np.int32), np.zeros(len(inputs))
    for b, row in enumerate(inputs):
        out: list[int] = []
        while len(out) < length and (not out or out[-1] != EOS):
            batch, pos = _forward_batch(config, row, out, length)
            logits = np.asarray(_forward(params, {k: jnp.asarray(v) for k, v in batch.items()}, config))[
                0, pos
            ]
            nxt = int(np.argmax(logits))
            scores[b] += float(jax.nn.log_softmax(logits)[nxt])
            out.append(nxt)
        tokens[b, : len(out)] = out
    return tokens, scores


@pytest.mark.parametrize("arch", ["encoder_decoder", "decoder_only", "prefix_lm"])
def test_cached_greedy_equals_uncached_forward_argmax(models, arch):
    config, params = models[arch]
    inputs = _inputs(np.random.default_rng(0), [5, 9, 3], width=10, vocab=config.vocab_size)
    tokens, scores = inference.generate_tokens_and_scores(
        config, [params], inputs, DecodeOptions(max_decode_length=8)
    )
    ref_tokens, ref_scores = _uncached_greedy(config, params, inputs, 8)
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-4)
    # score_tokens (teacher forcing) agrees with what decoding accumulated.
    np.testing.assert_allclose(
        inference.score_tokens(config, params, inputs, tokens), ref_scores, rtol=1e-4, atol=1e-4
    )


def test_sampling_top_k_one_and_beam_one_equal_greedy(models):
    config, params = models["prefix_lm"]
    inputs = _inputs(np.random.default_rng(1), [4, 7], width=8, vocab=config.vocab_size)
    greedy = inference.generate_tokens(config, params, inputs, DecodeOptions(max_decode_length=6))
    sampled = inference.generate_tokens(
        config, params, inputs, DecodeOptions(max_decode_length=6, temperature=0.7, top_k=1, seed=3)
    )
    beam1 = inference.generate_tokens(config, params, inputs, DecodeOptions(max_decode_length=6, beam_size=1))
    np.testing.assert_array_equal(sampled, greedy)
    np.testing.assert_array_equal(beam1, greedy)
    # Real sampling draws something else somewhere (at temperature 3 the distribution is broad).
    hot = inference.generate_tokens(
        config, params, np.repeat(inputs, 4, 0), DecodeOptions(max_decode_length=6, temperature=3.0)
    )
    assert not np.array_equal(hot, np.repeat(greedy, 4, 0))


def test_beam_search_scores_are_penalised_log_likelihoods(models):
    config, params = models["encoder_decoder"]
    inputs = _inputs(np.random.default_rng(2), [6, 3, 8], width=8, vocab=config.vocab_size)
    alpha = 0.6
    greedy, g_scores = inference.generate_tokens_and_scores(
        config, [params], inputs, DecodeOptions(max_decode_length=7)
    )
    beam, b_scores = inference.generate_tokens_and_scores(
        config, [params], inputs, DecodeOptions(max_decode_length=7, beam_size=4, alpha=alpha)
    )
    lengths = np.array([np.argmax(r == EOS) + 1 if (r == EOS).any() else len(r) for r in beam])
    loglik = inference.score_tokens(config, params, inputs, beam)
    np.testing.assert_allclose(b_scores, loglik / ((5.0 + lengths) / 6.0) ** alpha, rtol=1e-4, atol=1e-4)
    g_len = np.array([np.argmax(r == EOS) + 1 if (r == EOS).any() else len(r) for r in greedy])
    assert np.all(b_scores >= g_scores / ((5.0 + g_len) / 6.0) ** alpha - 1e-4)


def test_score_equals_summed_forward_log_probs(models):
    config, params = models["encoder_decoder"]
    vocab = ByteVocabulary(extra_ids=0)
    config = config.replace(vocab_size=vocab.vocab_size)
    params = _init(config, jax.random.key(5))
    inputs, targets = ["abc", "", "hello there"], ["x", "yz!", ""]
    got = inference.score(config, params, vocab, inputs, targets, batch_size=2)
    enc = np.zeros((3, 12), np.int32)
    dec_tgt = np.zeros((3, 4), np.int32)
    for i, (src, tgt) in enumerate(zip(inputs, targets, strict=True)):
        enc[i, : len(src) + 1] = [*vocab.encode(src), EOS]
        dec_tgt[i, : len(tgt) + 1] = [*vocab.encode(tgt), EOS]
    dec_in = np.pad(dec_tgt, ((0, 0), (1, 0)))[:, :-1]
    logits = _forward(params, {"encoder_input_tokens": enc, "decoder_input_tokens": dec_in}, config)
    lp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), dec_tgt[:, :, None], axis=-1)[:, :, 0]
    np.testing.assert_allclose(got, np.sum(lp * (dec_tgt != 0), axis=1), rtol=1e-4, atol=1e-4)


def test_prefix_lm_score_matches_forward(models):
    config, params = models["prefix_lm"]
    inputs = _inputs(np.random.default_rng(3), [3, 5], width=6, vocab=config.vocab_size)
    targets = _inputs(np.random.default_rng(4), [2, 4], width=5, vocab=config.vocab_size)
    got = inference.score_tokens(config, params, inputs, targets)
    for b in range(2):
        n_in, n_t = int((inputs[b] != 0).sum()), int((targets[b] != 0).sum())
        seq = np.concatenate([inputs[b, :n_in], targets[b, :n_t]])
        batch = {
            "decoder_input_tokens": np.pad(seq, (1, 0))[None, :-1],
            "decoder_causal_attention": (np.arange(len(seq)) <= n_in).astype(np.int32)[None],
        }
        logits = np.asarray(_forward(params, batch, config))[0]
        lp = np.asarray(jax.nn.log_softmax(logits))[np.arange(len(seq)), seq][n_in:]
        np.testing.assert_allclose(got[b], lp.sum(), rtol=1e-4, atol=1e-4)


def test_ensemble(models):
    config, params = models["encoder_decoder"]
    other = _init(config, jax.random.key(99))
    other["logits_dense"]["kernel"] = other["logits_dense"]["kernel"] * 8.0
    inputs = _inputs(np.random.default_rng(5), [4, 6], width=6, vocab=config.vocab_size)
    single = inference.generate_tokens(config, params, inputs, DecodeOptions(max_decode_length=5))
    doubled = inference.generate_tokens(config, [params, params], inputs, DecodeOptions(max_decode_length=5))
    np.testing.assert_array_equal(doubled, single)
    mixed = inference.generate_tokens(
        config, [params, other], inputs, DecodeOptions(max_decode_length=5, beam_size=2)
    )
    # The first token is the argmax of the mean log-probabilities of the two forward passes.
    batch = {"encoder_input_tokens": inputs, "decoder_input_tokens": np.zeros((2, 1), np.int32)}
    mean = sum(jax.nn.log_softmax(_forward(p, batch, config)[:, 0]) for p in (params, other)) / 2
    np.testing.assert_array_equal(mixed[:, 0], np.argmax(np.asarray(mean), axis=-1))


@pytest.mark.parametrize("arch", ["encoder_decoder", "decoder_only"])
def test_prepared_params_share_arrays_and_decode_as_the_raw_ones(arch):
    # Tied embeddings: the prepared params also hold the output matrix as [D, V].
    config = _config(arch, tie_word_embeddings=True)
    params, other = _init(config, jax.random.key(21)), _init(config, jax.random.key(22))
    prepared = inference.prepare_for_decoding(config, [params, other])
    assert inference.prepare_for_decoding(config, prepared) == prepared  # prepared already: as is
    first = prepared[0]
    # Nothing but the decoder's layers and the [D, V] kernel is new: the rest is the same arrays.
    assert first["token_embedder"]["embedding"] is params["token_embedder"]["embedding"]
    assert first["decoder"]["relpos_bias"] is params["decoder"]["relpos_bias"]
    if config.has_encoder:
        assert all(
            a is b
            for a, b in zip(
                jax.tree.leaves(first["encoder"]), jax.tree.leaves(params["encoder"]), strict=True
            )
        )
    # On one CPU with the native kernel, the decode step's weights are packed for it (network._PACKED).
    packed = isinstance(first["decode_logits_kernel"], native.PackedKernel)
    assert packed == native.available()

    def plain(tree):
        is_packed = lambda w: isinstance(w, native.PackedKernel)  # noqa: E731
        return jax.tree.map(lambda w: native.unpack(w) if is_packed(w) else w, tree, is_leaf=is_packed)

    np.testing.assert_array_equal(
        plain(first["decode_logits_kernel"]), np.asarray(params["token_embedder"]["embedding"]).T
    )
    stacked = network.decoder_layers(params, config)
    for i, layer in enumerate(first["decoder"]["layers"]):
        if packed:
            assert isinstance(layer["self_attention"]["out"], native.PackedKernel)
            assert not isinstance(layer.get("cross_attention", {}).get("key"), native.PackedKernel)
        for a, b in zip(jax.tree.leaves(plain(layer)), jax.tree.leaves(stacked), strict=True):
            np.testing.assert_array_equal(a, np.asarray(b)[i])
    inputs = _inputs(np.random.default_rng(8), [5, 3, 6], width=6, vocab=config.vocab_size)
    for options in (DecodeOptions(max_decode_length=5), DecodeOptions(max_decode_length=5, beam_size=2)):
        for members, raw in (([first], [params]), (prepared, [params, other])):
            a = inference.generate_tokens_and_scores(config, members, inputs, options)
            b = inference.generate_tokens_and_scores(config, raw, inputs, options)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_allclose(a[1], b[1], rtol=1e-6)


def test_beam_reorder_copies_rows_only_on_one_cpu_device_with_a_static_batch():
    assert jax.default_backend() == "cpu"
    assert inference.beam_reorder(8) == "rows"
    (symbolic,) = jax.export.symbolic_shape("b")
    assert inference.beam_reorder(symbolic) == "gather"  # an exported model's batch
    mesh = layouts.make_layout("data:1")
    with layouts.use_layout(mesh):
        assert inference.beam_reorder(8) == "gather"


def test_generate_text_batches_truncation_and_empty_inputs(models, caplog):
    vocab = ByteVocabulary(extra_ids=0)
    config = _config(vocab_size=vocab.vocab_size)
    params = _init(config, jax.random.key(6))
    texts = ["", "short", "a much longer input that will be cut", "mid size", "x"]
    with caplog.at_level(logging.WARNING, logger="mesh_t5.inference"):
        out = inference.generate(
            config,
            params,
            vocab,
            texts,
            DecodeOptions(max_decode_length=6),
            max_input_length=12,
            batch_size=2,
        )
    assert len(out) == 5 and all(isinstance(t, str) for t in out)
    assert "1 of 2 inputs longer than 12 tokens" in caplog.text
    # The same texts decoded one by one give the same outputs (padding rows and batches do not leak).
    one = [
        inference.generate(
            config, params, vocab, [t], DecodeOptions(max_decode_length=6), max_input_length=12
        )[0]
        for t in texts
    ]
    assert out == one
    tokens = inference.pad_ids(inference.tokenize(vocab, ["", "ab", "abcdef"]), 4, rows_to=4)
    assert tokens.tolist() == [[EOS, 0, 0, 0], [100, 101, EOS, 0], [100, 101, 102, EOS], [EOS, 0, 0, 0]]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"beam_size": 0}, "beam_size=0"),
        ({"max_decode_length": 0}, "max_decode_length=0"),
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"top_p": 0.0}, "top_p=0.0"),
        ({"beam_size": 2, "temperature": 1.0}, "beam_size=2"),
    ],
)
def test_bad_options_are_one_line_user_errors(models, options, needle):
    config, params = models["encoder_decoder"]
    with pytest.raises(UserError, match=needle) as err:
        inference.generate_tokens(config, params, np.ones((1, 2), np.int32), DecodeOptions(**options))
    assert "\n" not in str(err.value)


def test_hf_greedy_and_beam_parity(tmp_path):
    """Greedy equals HF generate; beam search agrees without a length penalty (alpha=0 here,
    length_penalty=0 there) except where HF's narrower EOS rule misses a better sequence. With a
    penalty the conventions differ: T5 divides log-probs by ((5 + n) / 6) ** alpha, HF by
    n ** length_penalty (n = generated tokens incl. EOS)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from mesh_t5.model import T5Model

    torch.manual_seed(0)
    hf_config = transformers.T5Config(
        vocab_size=80, d_model=32, d_ff=48, num_heads=4, d_kv=8, num_layers=2, num_decoder_layers=2,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    hf = transformers.T5ForConditionalGeneration(hf_config).eval()
    # A random T5 repeats one token; larger weights and a random unit-scale head give varied outputs.
    with torch.no_grad():
        hf.lm_head.weight = torch.nn.Parameter(torch.randn_like(hf.shared.weight))  # untie (see test_convert)
        for name, p in hf.named_parameters():
            if "layer_norm" in name:
                p.add_(0.5 * torch.randn_like(p))
            elif p.ndim == 2 and "lm_head" not in name:
                p.mul_(3.0)
    hf.save_pretrained(tmp_path)
    model = T5Model.from_pretrained(tmp_path)
    inputs = _inputs(np.random.default_rng(7), [6, 9, 4, 5], width=9, vocab=80)
    ours = inference.generate_tokens(model.config, model.params, inputs, DecodeOptions(max_decode_length=10))
    assert max(len(set(r)) for r in ours.tolist()) >= 4  # not a degenerate repeat
    ours_beam, ours_scores = inference.generate_tokens_and_scores(
        model.config, [model.params], inputs, DecodeOptions(max_decode_length=10, beam_size=4, alpha=0.0)
    )
    kwargs = dict(input_ids=torch.tensor(inputs, dtype=torch.long), attention_mask=torch.tensor(inputs != 0))
    with torch.no_grad():
        theirs = hf.generate(**kwargs, do_sample=False, num_beams=1, max_new_tokens=10).numpy()[:, 1:]
        beam = hf.generate(
            **kwargs, do_sample=False, num_beams=4, max_new_tokens=10, length_penalty=0.0,
            early_stopping=False, output_scores=True, return_dict_in_generate=True,
        )  # fmt: skip
    np.testing.assert_array_equal(ours, np.pad(theirs, ((0, 0), (0, 10 - theirs.shape[1]))))
    theirs_beam = beam.sequences.numpy()[:, 1:]
    theirs_beam = beam.sequences.numpy()[:, 1:]
    theirs_beam = np.pad(theirs_beam, ((0, 0), (0, 10 - theirs_beam.shape[1])))
    theirs_scores = beam.sequences_scores.numpy()
    # HF finishes a hypothesis only when its EOS ranks in the top K candidates, t5x (and we) in the
    # top 2K: where the results differ ours must be the better sequence under the shared objective.
    same = np.all(ours_beam == theirs_beam, axis=1)
    assert same.sum() >= 2, (ours_beam, theirs_beam)
    np.testing.assert_allclose(ours_scores[same], theirs_scores[same], rtol=1e-4, atol=1e-4)
    assert np.all(ours_scores[~same] > theirs_scores[~same])
    np.testing.assert_allclose(
        inference.score_tokens(model.config, model.params, inputs, ours_beam),
        ours_scores,
        rtol=1e-4,
        atol=1e-4,
    )


# ----------------------------------------------------------------------------- mesh-t5 infer

BYTES = ByteVocabulary()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from mesh_t5.model import T5Model

    config = T5Config(
        vocab_size=BYTES.vocab_size, d_model=32, d_ff=48, num_heads=4, d_kv=8, num_encoder_layers=2,
        num_decoder_layers=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
    )  # fmt: skip
    model = T5Model.init(config, seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "hf"
    model.save_pretrained(path, format="hf")
    return str(path), model


def _read(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_predict_jsonl_partial_batch_and_overwrite(tmp_path, checkpoint):
    path, model = checkpoint
    src = tmp_path / "in.jsonl"
    rows = [{"inputs": "abc", "targets": "x"}, {"inputs": ""}, {"inputs": "hello world", "targets": "y"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out" / "pred.jsonl"
    argv = [f"--checkpoint={path}", f"--input_file={src}", f"--output_file={out}", "--vocab=byte",
            "--batch_size=2", "--max_decode_length=5"]  # fmt: skip
    assert infer.main(argv) == 0
    got = _read(out)
    ids, scores = inference.generate_ids(
        model.config,
        [model.params],
        inference.tokenize(BYTES, [r["inputs"] for r in rows]),
        DecodeOptions(max_decode_length=5),
    )
    assert [g["inputs"] for g in got] == [r["inputs"] for r in rows]
    assert [g.get("targets") for g in got] == ["x", None, "y"]
    assert [g["outputs"] for g in got] == BYTES.decode_batch(ids.tolist())
    np.testing.assert_allclose([g["score"] for g in got], scores, rtol=1e-5)
    with pytest.raises(UserError, match="--overwrite"):
        infer.main(argv)
    assert infer.main([*argv, "--overwrite", "--gin.infer.beam_size=2"]) == 0
    beam_ids, beam_scores = inference.generate_ids(
        model.config, [model.params], inference.tokenize(BYTES, [r["inputs"] for r in rows]),
        DecodeOptions(max_decode_length=5, beam_size=2), batch_size=2,
    )  # fmt: skip
    got = _read(out)
    assert [g["outputs"] for g in got] == BYTES.decode_batch(beam_ids.tolist())
    np.testing.assert_allclose([g["score"] for g in got], beam_scores, rtol=1e-5)


def test_score_mode_tsv(tmp_path, checkpoint):
    path, model = checkpoint
    src = tmp_path / "in.tsv"
    src.write_text("question one\tanswer\nq2\t\nthird\tlonger answer here\n")
    out = tmp_path / "scores.jsonl"
    assert infer.main([f"--checkpoint={path}", f"--input_file={src}", f"--output_file={out}", "--vocab=byte",
                       "--mode=score", "--batch_size=2"]) == 0  # fmt: skip
    got = _read(out)
    expected = inference.score(
        model.config,
        model.params,
        BYTES,
        ["question one", "q2", "third"],
        ["answer", "", "longer answer here"],
    )
    assert [g["targets"] for g in got] == ["answer", "", "longer answer here"] and "outputs" not in got[0]
    np.testing.assert_allclose([g["score"] for g in got], expected, rtol=1e-5)


def test_predict_task_split(tmp_path, checkpoint):
    from mesh_t5.data import Feature, FunctionSource, Task, TaskRegistry, append_eos_after_trim, tokenize

    path, model = checkpoint
    feats = {"inputs": Feature(BYTES), "targets": Feature(BYTES)}
    pairs = [("one", "1"), ("two", "2"), ("three", "3")]
    src = FunctionSource(
        lambda split: ({"inputs": a, "targets": b} for a, b in pairs), splits=("validation",)
    )
    TaskRegistry.add(Task("infer_test_task", src, [tokenize, append_eos_after_trim], feats), overwrite=True)
    try:
        out = tmp_path / "task.jsonl"
        assert infer.main([f"--checkpoint={path}", "--task=infer_test_task", f"--output_file={out}",
                           "--max_decode_length=4", "--batch_size=2"]) == 0  # fmt: skip
    finally:
        TaskRegistry.remove("infer_test_task")
    got = _read(out)
    assert [(g["inputs"], g["targets"]) for g in got] == pairs
    expected = inference.generate(
        model.config,
        model.params,
        BYTES,
        [a for a, _ in pairs],
        DecodeOptions(max_decode_length=4),
        batch_size=2,
    )
    assert [g["outputs"] for g in got] == expected


def test_settings_flags_over_gin_over_defaults():
    s = infer.resolve_settings(["--gin.infer.beam_size=3", "--gin.infer.alpha=0.9", "--alpha=0.5"])
    assert (s.beam_size, s.alpha, s.top_k) == (3, 0.5, 0)


def test_flags_are_the_settings_fields():
    argv = ["--checkpoint=a", "--checkpoint=b,c", "--limit=2", "--overwrite", "--top_p=0.5", "--seed=3"]
    s = infer.resolve_settings(argv)
    assert (s.checkpoint, s.limit, s.overwrite, s.mode, s.top_p, s.seed) == (
        ["a", "b,c"],
        2,
        True,
        "predict",
        0.5,
        3,
    )
    assert s.decode_options() == DecodeOptions(top_p=0.5, seed=3)


def test_one_jitted_decode_serves_every_seed(models):
    config, params = models["encoder_decoder"]
    inputs = _inputs(np.random.default_rng(7), [3], width=4, vocab=config.vocab_size)
    options = DecodeOptions(max_decode_length=3, temperature=1.0)
    inference.generate_tokens(config, params, inputs, options)
    count = len(inference._JITTED)
    inference.generate_tokens(config, params, inputs, dataclasses.replace(options, seed=7))
    assert len(inference._JITTED) == count


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--input_file=x.txt"], "--checkpoint"),
        (["--checkpoint=/nonexistent", "--input_file=a", "--task=b"], "exactly one"),
        (["--checkpoint=/nonexistent", "--input_file=a", "--mode=guess"], "--mode='guess'"),
        (["--checkpoint=/nonexistent", "--input_file=a", "--batch_size=0"], "--batch_size=0"),
    ],
)
def test_bad_command_lines(argv, needle):
    with pytest.raises(UserError, match=needle):
        infer.main(argv)


def test_beam_search_and_sampling_on_a_mesh_match_one_device():
    """Beam search (cache expanded and reordered on a sharded batch) and sampling on data:2,model:2."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = run_script("decode_on_mesh.py", env=env, timeout=900)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
