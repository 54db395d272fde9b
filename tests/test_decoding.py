"""Decoding algorithms against a toy Markov model with a numpy reference and exhaustive search."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import jaxpr_eqns

from mesh_t5 import decoding

EOS = 1


class ToyModel:
    """Logits depend on the last token, a step counter, a per-row bias and a hash of earlier tokens.

    The cache holds batched leaves on `axis` (a leading dummy axis when axis=1, like stacked layers)
    and one scalar, so beam reordering, batch-major flattening and scalar pass-through all matter.
    """

    def __init__(
        self, vocab: int, length: int, batch: int, seed: int = 0, eos_bias: float = 0.0, axis: int = 0
    ):
        rng = np.random.default_rng(seed)
        self.vocab, self.axis = vocab, axis
        self.trans = rng.normal(size=(vocab, vocab)) * 2.0  # [V, V]
        self.step_bias = rng.normal(size=(length + 2, vocab))  # [L+2, V]
        self.step_bias[:, EOS] += eos_bias
        self.row_bias = rng.normal(size=(batch, vocab))  # [B, V]
        self.hist_bias = rng.normal(size=(7, vocab)) * 2.0  # [7, V]: a hash of the earlier tokens
        self.calls = 0

    def init_cache(self) -> dict:
        row = jnp.asarray(self.row_bias, jnp.float32)  # [B, V]
        hist = jnp.zeros(row.shape[:1], jnp.int32)  # [B]
        if self.axis == 1:
            row, hist = row[None], hist[None]  # [1, B, V], [1, B]
        return {"step": jnp.asarray(0, jnp.int32), "row": row, "hist": hist}

    def tokens_to_logits(self, last, cache):
        jax.debug.callback(self._count)
        row, hist = (cache["row"][0], cache["hist"][0]) if self.axis == 1 else (cache["row"], cache["hist"])
        logits = (
            jnp.asarray(self.trans, jnp.float32)[last]
            + jnp.asarray(self.step_bias, jnp.float32)[cache["step"]]
            + row
            + jnp.asarray(self.hist_bias, jnp.float32)[hist]
        )  # [B, V]
        new_hist = (hist * self.vocab + last + 1) % 7
        new_hist = new_hist[None] if self.axis == 1 else new_hist
        return logits, {"step": cache["step"] + 1, "row": cache["row"], "hist": new_hist}

    def _count(self):
        self.calls += 1

    def log_probs(self, row: int, prefix: tuple[int, ...]) -> np.ndarray:
        """Reference next-token log-probs [V] (float64) after the start token and `prefix`."""
        tokens = (0, *prefix)
        hist = 0
        for tok in tokens[:-1]:
            hist = (hist * self.vocab + tok + 1) % 7
        logits = (
            self.trans[tokens[-1]] + self.step_bias[len(prefix)] + self.row_bias[row] + self.hist_bias[hist]
        )
        return logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()

    def sequence_log_prob(self, row: int, seq) -> tuple[float, int]:
        """(summed log-prob up to and including the first EOS, its length) of a decoded sequence."""
        total, seq = 0.0, [int(t) for t in seq]
        for n, tok in enumerate(seq):
            total += self.log_probs(row, tuple(seq[:n]))[tok]
            if tok == EOS:
                return total, n + 1
        return total, len(seq)


def _greedy_reference(model: ToyModel, row: int, length: int) -> list[int]:
    out: list[int] = []
    while len(out) < length and (not out or out[-1] != EOS):
        out.append(int(np.argmax(model.log_probs(row, tuple(out)))))
    return out + [0] * (length - len(out))


@pytest.mark.parametrize("axis", [0, 1])
def test_greedy_equals_stepwise_argmax_and_scores(axis):
    batch, length = 3, 6
    model = ToyModel(vocab=7, length=length, batch=batch, seed=1, axis=axis)
    decode = jax.jit(
        lambda cache: decoding.greedy_decode(
            model.tokens_to_logits, cache, batch_size=batch, max_decode_length=length, cache_batch_axis=axis
        )
    )
    tokens, scores = map(np.asarray, decode(model.init_cache()))
    assert tokens.shape == (batch, length) and tokens.dtype == np.int32
    for b in range(batch):
        assert tokens[b].tolist() == _greedy_reference(model, b, length)
        np.testing.assert_allclose(scores[b], model.sequence_log_prob(b, tokens[b])[0], rtol=1e-5, atol=1e-5)


def test_greedy_pads_after_eos_and_stops_early():
    batch, length = 2, 10
    model = ToyModel(vocab=5, length=length, batch=batch, seed=2, eos_bias=30.0)  # EOS all but certain
    tokens, _ = decoding.greedy_decode(
        model.tokens_to_logits, model.init_cache(), batch_size=batch, max_decode_length=length
    )
    tokens = np.asarray(tokens)
    assert tokens[:, 0].tolist() == [EOS, EOS] and not tokens[:, 1:].any()
    assert model.calls == 1  # one step: both rows ended at once

    model_long = ToyModel(vocab=5, length=length, batch=batch, seed=2, eos_bias=-30.0)  # EOS never
    decoding.greedy_decode(
        model_long.tokens_to_logits, model_long.init_cache(), batch_size=batch, max_decode_length=length
    )
    assert model_long.calls == length


def test_start_tokens_override_start_id():
    batch, length = 2, 4
    model = ToyModel(vocab=6, length=length, batch=batch, seed=3)
    start = jnp.asarray([3, 4], jnp.int32)
    tokens, _ = decoding.greedy_decode(
        model.tokens_to_logits,
        model.init_cache(),
        batch_size=batch,
        max_decode_length=length,
        start_tokens=start,
    )
    first = [
        int(np.argmax(model.trans[s] + model.step_bias[0] + model.row_bias[b] + model.hist_bias[0]))
        for b, s in enumerate([3, 4])
    ]
    assert np.asarray(tokens)[:, 0].tolist() == first


def _exhaustive_ranking(model: ToyModel, row: int, length: int, alpha: float) -> list[tuple[float, tuple]]:
    """All sequences ranked by score = logp / lp(len), best first: EOS-ended ones of any length <= L
    plus length-L ones without EOS (the documented convention), by enumerating every one."""
    ranked = []
    non_eos = [t for t in range(model.vocab) if t != EOS]
    for n in range(1, length + 1):
        for body in itertools.product(non_eos, repeat=n - 1):
            endings = [(EOS,)] + ([(t,) for t in non_eos] if n == length else [])
            for end in endings:
                seq = body + end
                logp, seq_len = model.sequence_log_prob(row, seq)
                ranked.append((logp / ((5.0 + seq_len) / 6.0) ** alpha, seq + (0,) * (length - n)))
    return sorted(ranked, reverse=True)


@pytest.mark.parametrize(
    ("alpha", "eos_bias", "axis", "seed", "reorder"),
    [
        (0.6, 0.0, 0, 4, "gather"),
        (0.6, 1.5, 1, 5, "rows"),
        (0.0, -1.0, 1, 6, "gather"),
        (0.6, -2.0, 0, 15, "rows"),
        (1.0, -1.0, 1, 16, "rows"),
        (2.0, 0.5, 0, 7, "gather"),
    ],
)
def test_large_beam_finds_exhaustive_best(alpha, eos_bias, axis, seed, reorder):
    batch, length, vocab = 3, 4, 4
    model = ToyModel(vocab=vocab, length=length, batch=batch, seed=seed, eos_bias=eos_bias, axis=axis)
    tokens, scores = decoding.beam_search(
        model.tokens_to_logits, model.init_cache(), batch_size=batch, max_decode_length=length,
        beam_size=32, alpha=alpha, cache_batch_axis=axis, num_decodes=5, reorder=reorder,
    )  # fmt: skip
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    assert tokens.shape == (batch, 5, length) and scores.shape == (batch, 5)
    for b in range(batch):
        # 32 beams hold every alive prefix (at most 3^3 = 27), so the top 5 are exact.
        top5 = _exhaustive_ranking(model, b, length, alpha)[:5]
        assert [tuple(t) for t in tokens[b].tolist()] == [seq for _, seq in top5]
        np.testing.assert_allclose(scores[b], [score for score, _ in top5], rtol=1e-5)


@pytest.mark.parametrize("axis", [0, 1])
def test_small_beam_scores_are_penalised_log_probs_sorted(axis):
    batch, length, alpha = 2, 6, 0.6
    model = ToyModel(vocab=6, length=length, batch=batch, seed=8, eos_bias=0.5, axis=axis)
    tokens, scores = decoding.beam_search(
        model.tokens_to_logits, model.init_cache(), batch_size=batch, max_decode_length=length,
        beam_size=4, alpha=alpha, cache_batch_axis=axis,
    )  # fmt: skip
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    for b in range(batch):
        assert np.all(np.diff(scores[b]) <= 1e-6), scores[b]  # best first
        assert len({tuple(t) for t in tokens[b].tolist()}) == 4  # distinct hypotheses
        for k in range(4):
            logp, n = model.sequence_log_prob(b, tokens[b, k])
            assert not tokens[b, k, n:].any()  # PAD after EOS
            np.testing.assert_allclose(scores[b, k], logp / ((5.0 + n) / 6.0) ** alpha, rtol=1e-5)
        # Beam search is at least as good as greedy under its own objective.
        greedy = _greedy_reference(model, b, length)
        logp, n = model.sequence_log_prob(b, greedy)
        assert scores[b, 0] >= logp / ((5.0 + n) / 6.0) ** alpha - 1e-5


def test_beam_search_stops_early_when_no_alive_beam_can_win():
    batch, length = 2, 12
    model = ToyModel(vocab=5, length=length, batch=batch, seed=9, eos_bias=25.0)
    tokens, _ = decoding.beam_search(
        model.tokens_to_logits, model.init_cache(), batch_size=batch, max_decode_length=length, beam_size=2
    )
    assert np.asarray(tokens)[:, 0, 0].tolist() == [EOS, EOS]
    assert model.calls < 4  # far fewer than the 12 steps to max length


def test_beam_size_one_equals_greedy():
    batch, length = 3, 7
    model = ToyModel(vocab=6, length=length, batch=batch, seed=10)
    greedy, g_scores = decoding.greedy_decode(
        model.tokens_to_logits, model.init_cache(), batch_size=batch, max_decode_length=length
    )
    beam, b_scores = decoding.beam_search(
        model.tokens_to_logits,
        model.init_cache(),
        batch_size=batch,
        max_decode_length=length,
        beam_size=1,
        alpha=0.0,
    )
    np.testing.assert_array_equal(np.asarray(beam)[:, 0], np.asarray(greedy))
    np.testing.assert_allclose(np.asarray(b_scores)[:, 0], np.asarray(g_scores), rtol=1e-6)


@pytest.mark.parametrize(
    "options", [{"top_k": 1}, {"top_p": 1e-6}, {"temperature": 0.0}, {"temperature": 1e-3, "top_k": 3}]
)
def test_sampling_degenerate_cases_equal_greedy(options):
    batch, length = 4, 6
    model = ToyModel(vocab=8, length=length, batch=batch, seed=11)
    greedy, g_scores = decoding.greedy_decode(
        model.tokens_to_logits, model.init_cache(), batch_size=batch, max_decode_length=length
    )
    sampled, s_scores = decoding.temperature_sample(
        model.tokens_to_logits, model.init_cache(), jax.random.key(3), batch_size=batch,
        max_decode_length=length, **options,
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(sampled), np.asarray(greedy))
    np.testing.assert_allclose(np.asarray(s_scores), np.asarray(g_scores), rtol=1e-6)


def _first_token_samples(model, batch, **options) -> np.ndarray:
    tokens, scores = decoding.temperature_sample(
        model.tokens_to_logits,
        model.init_cache(),
        jax.random.key(0),
        batch_size=batch,
        max_decode_length=2,
        **options,
    )
    tokens = np.asarray(tokens)
    for b in range(0, batch, 97):  # scores are the model's own log-probs of what was sampled
        np.testing.assert_allclose(
            np.asarray(scores)[b], model.sequence_log_prob(b, tokens[b])[0], rtol=1e-4, atol=1e-5
        )
    return tokens[:, 0]


def test_sampling_distribution_temperature_top_k_top_p():
    batch, vocab = 4000, 6
    model = ToyModel(vocab=vocab, length=2, batch=batch, seed=12)
    model.row_bias[:] = 0.0  # every row shares one first-step distribution
    logits = model.trans[0] + model.step_bias[0] + model.hist_bias[0]
    order = np.argsort(-logits)

    def softmax(x):
        e = np.exp(x - x.max())
        return e / e.sum()

    for options, allowed in [
        ({"temperature": 1.0}, order),
        ({"temperature": 2.0}, order),
        ({"top_k": 2}, order[:2]),
        ({"top_p": 0.7}, order[: int(np.searchsorted(np.cumsum(softmax(logits)[order]), 0.7) + 1)]),
    ]:
        temp = options.get("temperature", 1.0)
        expected = np.zeros(vocab)
        expected[allowed] = softmax((logits / temp)[allowed])
        first = _first_token_samples(model, batch, **options)
        freq = np.bincount(first, minlength=vocab) / batch
        np.testing.assert_allclose(freq, expected, atol=0.03, err_msg=str(options))


def test_ensemble_averages_log_probs():
    batch, length = 3, 5
    a = ToyModel(vocab=6, length=length, batch=batch, seed=13)
    b = ToyModel(vocab=6, length=length, batch=batch, seed=14, axis=0)
    fn = decoding.ensemble_tokens_to_logits([a.tokens_to_logits, b.tokens_to_logits])
    last = jnp.asarray([0, 0, 0], jnp.int32)
    logits, caches = fn(last, (a.init_cache(), b.init_cache()))
    for row in range(batch):
        expected = (a.log_probs(row, ()) + b.log_probs(row, ())) / 2
        expected -= np.log(np.exp(expected).sum())
        np.testing.assert_allclose(np.asarray(logits[row]), expected, rtol=1e-5, atol=1e-5)
    assert int(caches[0]["step"]) == 1 and int(caches[1]["step"]) == 1

    # An ensemble of one model with itself decodes exactly like the model.
    same = decoding.ensemble_tokens_to_logits([a.tokens_to_logits, a.tokens_to_logits])
    ens, _ = decoding.beam_search(
        same, (a.init_cache(), a.init_cache()), batch_size=batch, max_decode_length=length, beam_size=3
    )
    single, _ = decoding.beam_search(
        a.tokens_to_logits, a.init_cache(), batch_size=batch, max_decode_length=length, beam_size=3
    )
    np.testing.assert_array_equal(np.asarray(ens), np.asarray(single))


def test_cache_beam_helpers_round_trip():
    x = jnp.arange(2 * 3 * 4).reshape(2, 3, 4)  # [layers=2, B=3, 4], batch on axis 1
    expanded = decoding.expand_cache_to_beams({"x": x, "i": jnp.asarray(7)}, 2, axis=1)
    assert expanded["x"].shape == (2, 6, 4) and int(expanded["i"]) == 7
    np.testing.assert_array_equal(expanded["x"][:, 2], x[:, 1])  # row b*K + k holds batch row b
    idx = jnp.asarray([[1, 0], [0, 0], [1, 1]])
    marked = expanded["x"] + jnp.arange(6)[None, :, None] * 100  # tell beams apart
    gathered = decoding.gather_cache_beams(marked, idx, axis=1)
    for b in range(3):
        for k in range(2):
            np.testing.assert_array_equal(gathered[:, b * 2 + k], marked[:, b * 2 + int(idx[b, k])])


@pytest.mark.parametrize("axis", [0, 1])
def test_copying_changed_rows_equals_the_gather(axis):
    """reorder="rows" moves only the rows whose beam changed, through a scratch buffer: a row may be
    the source of several rows and be overwritten itself (swaps, cycles), and leaves the step did not
    change stay as they are."""
    rng = np.random.default_rng(3)
    batch, beams = 5, 4
    shape = (2, batch * beams, 3, 6) if axis == 1 else (batch * beams, 3, 6)
    old = {
        "a": jnp.asarray(rng.normal(size=shape), jnp.float32),
        "kept": jnp.ones(shape),
        "i": jnp.asarray(3),
    }
    new = {**old, "a": old["a"] + 1.0}  # "kept" and "i" come back as they went in
    indices = jnp.asarray(
        [[0, 1, 2, 3], [1, 0, 3, 2], [2, 2, 2, 0], [3, 0, 1, 2], [0, 0, 1, 1]]
    )  # identity, swaps, one source thrice, a cycle, duplicates
    scratch = tuple(jnp.zeros(shape) for _ in range(2))  # one per batched leaf: "a", "kept"
    got, scratch = decoding._reorder_updated(old, new, indices, axis, scratch)
    want, none = decoding._reorder_updated(old, new, indices, axis)
    assert none is None and got["kept"] is new["kept"] and got["i"] is new["i"]
    np.testing.assert_array_equal(got["a"], want["a"])
    np.testing.assert_array_equal(want["a"], decoding.gather_cache_beams(new["a"], indices, axis))
    # Twice in a row, the scratch holding the first call's rows: still the gather.
    again, _ = decoding._reorder_updated(got, {**got, "a": got["a"] * 2.0}, indices[::-1], axis, scratch)
    np.testing.assert_array_equal(
        again["a"], decoding.gather_cache_beams(got["a"] * 2.0, indices[::-1], axis)
    )
    with pytest.raises(ValueError, match="reorder='copy'"):
        decoding.beam_search(lambda t, c: (t, c), {}, batch_size=1, max_decode_length=1, reorder="copy")


def _gather_shapes(jaxpr) -> list[tuple[int, ...]]:
    """Output shapes of every gather in jaxpr, nested calls included."""
    return [e.outvars[0].aval.shape for e in jaxpr_eqns(jaxpr) if e.primitive.name == "gather"]


def test_beam_search_reorders_only_the_cache_leaves_a_step_changes():
    """A leaf the step returns untouched (like cross-attention keys) holds equal copies across a
    row's beams, so it is carried as is: the loop gathers only the leaves the step changed."""
    batch, length, beams = 2, 5, 3
    model = ToyModel(vocab=6, length=length, batch=batch, seed=11, axis=1)
    cache = {**model.init_cache(), "const": jnp.ones((1, batch, 13), jnp.float32)}  # [1, B, 13]

    def run(cache, touch_all: bool):
        def tokens_to_logits(last, cache):
            logits, new = model.tokens_to_logits(last, cache)  # passes "row" through
            new = {**new, "const": cache["const"]}
            if touch_all:  # new values (equal ones): every batched leaf is reordered
                new = {**new, "row": new["row"] * 1.0, "const": new["const"] * 1.0}
            return logits + cache["const"][0, :, :1], new

        return decoding.beam_search(
            tokens_to_logits, cache, batch_size=batch, max_decode_length=length, beam_size=beams,
            cache_batch_axis=1,
        )  # fmt: skip

    def loop_gathers(touch_all: bool) -> list[tuple[int, ...]]:
        (loop,) = [
            e for e in jax.make_jaxpr(lambda c: run(c, touch_all))(cache).eqns if e.primitive.name == "while"
        ]
        return _gather_shapes(loop.params["body_jaxpr"].jaxpr)

    rows = batch * beams
    kept = loop_gathers(False)
    assert (1, rows) in kept  # "hist" changes every step: reordered
    assert (1, rows, 6) not in kept and (1, rows, 13) not in kept  # "row", "const": carried as they are
    every = loop_gathers(True)
    assert (1, rows, 6) in every and (1, rows, 13) in every
    # The same hypotheses and scores either way.
    tokens, scores = run(cache, False)
    ref_tokens, ref_scores = run(cache, True)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(ref_tokens))
    np.testing.assert_allclose(np.asarray(scores), np.asarray(ref_scores), rtol=1e-6)


def test_per_input_state_is_neither_expanded_nor_reordered():
    """State wrapped in decoding.PerInput stays at batch B under beam search (tokens_to_logits gets
    B*K rows beside it, batch-major); decoding from it equals decoding from the expanded copies."""
    batch, length, beams = 3, 5, 4
    model = ToyModel(vocab=6, length=length, batch=batch, seed=17)
    seen: list[tuple[int, ...]] = []

    def shared_rows(last, cache):
        rows = cache["rows"].value  # [B, V], whatever the number of beams
        seen.append((last.shape[0], *rows.shape))
        base = {
            "step": cache["step"],
            "hist": cache["hist"],
            "row": jnp.repeat(rows, last.shape[0] // batch, axis=0),
        }
        logits, new = model.tokens_to_logits(last, base)
        return logits, {
            "step": new["step"],
            "hist": new["hist"],
            "rows": decoding.PerInput(cache["rows"].value * 1.0),
        }

    plain = model.init_cache()
    shared = {"step": plain["step"], "hist": plain["hist"], "rows": decoding.PerInput(plain["row"])}
    tokens, scores = decoding.beam_search(
        shared_rows, shared, batch_size=batch, max_decode_length=length, beam_size=beams
    )
    assert set(seen) == {(batch * beams, batch, 6)}
    ref_tokens, ref_scores = decoding.beam_search(
        model.tokens_to_logits, plain, batch_size=batch, max_decode_length=length, beam_size=beams
    )
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(ref_tokens))
    np.testing.assert_allclose(np.asarray(scores), np.asarray(ref_scores), rtol=1e-6)
    greedy, _ = decoding.greedy_decode(shared_rows, shared, batch_size=batch, max_decode_length=length)
    ref_greedy, _ = decoding.greedy_decode(
        model.tokens_to_logits, plain, batch_size=batch, max_decode_length=length
    )
    np.testing.assert_array_equal(np.asarray(greedy), np.asarray(ref_greedy))
    expanded = decoding.expand_cache_to_beams(shared, beams)
    assert expanded["rows"].value.shape == (batch, 6) and expanded["hist"].shape == (batch * beams,)
