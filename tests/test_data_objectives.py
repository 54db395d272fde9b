import numpy as np
import pytest

from mesh_t5.data import objectives as obj
from mesh_t5.data import random_spans_helper
from mesh_t5.data.registry import Context, Feature, Task
from mesh_t5.data.sources import FunctionSource
from mesh_t5.vocab import ByteVocabulary


class WordVocab:
    """A word-level stand-in: word i -> id 3 + i; sentinels at the top of `vocab_size`."""

    def __init__(self, words, vocab_size=100):
        self.words, self.vocab_size, self.extra_ids = list(words), vocab_size, 10

    def encode(self, text):
        return [3 + self.words.index(w) for w in text.split()]

    def decode(self, ids):
        out = []
        for t in ids:
            if t >= self.vocab_size - self.extra_ids:
                out.append("<" + "XYZABCDEFG"[self.vocab_size - 1 - t] + ">")
            else:
                out.append(self.words[t - 3])
        return " ".join(out)


SENTENCE = "Thank you for inviting me to your party last week."


def test_figure_2_span_corruption_word_level():
    vocab = WordVocab(SENTENCE.split())
    tokens = np.array(vocab.encode(SENTENCE))
    mask = np.array([0, 0, 1, 1, 0, 0, 0, 0, 1, 0], bool)  # "for inviting" and "last"
    inputs = obj.noise_span_to_unique_sentinel(tokens, mask, vocab.vocab_size)
    targets = obj.nonnoise_span_to_unique_sentinel(tokens, mask, vocab.vocab_size)
    assert vocab.decode(inputs) == "Thank you <X> me to your party <Y> week."
    assert vocab.decode(targets) == "<X> for inviting <Y> last <Z>"
    assert inputs[2] == vocab.vocab_size - 1 and inputs[7] == vocab.vocab_size - 2


def test_figure_2_span_corruption_byte_vocab():
    v = ByteVocabulary()
    words = SENTENCE.split()
    tokens = np.array(v.encode(SENTENCE))
    # Mask the bytes of "for inviting" and "last" (each with its leading space kept in the input).
    mask = np.zeros(len(tokens), bool)
    for span in ("for inviting", "last"):
        start = SENTENCE.index(span)
        mask[start : start + len(span)] = True
    assert len(words) == 10
    inputs = obj.noise_span_to_unique_sentinel(tokens, mask, v.vocab_size)
    targets = obj.nonnoise_span_to_unique_sentinel(tokens, mask, v.vocab_size)
    assert v.decode(inputs) == "Thank you <extra_id_0> me to your party <extra_id_1> week."
    assert v.decode(targets) == "<extra_id_0>for inviting<extra_id_1>last<extra_id_2>"


def test_random_spans_helper_golden():
    assert random_spans_helper(512, 0.15, 3.0, 1, 1) == (568, 114)
    assert random_spans_helper(1024, 0.15, 3.0, 1, 1) == (1137, 229)
    # Noise 0.5: T5 makes targets no longer than inputs.
    raw, tgt = random_spans_helper(128, 0.5, 3.0, 1, 1)
    assert tgt <= 128 and raw > 128


def test_random_spans_noise_mask_counts_and_statistics():
    rng = np.random.default_rng(0)
    lengths, densities, spans = [], [], []
    for _ in range(500):
        mask = obj.random_spans_noise_mask(568, 0.15, rng, 3.0)
        assert mask.sum() == 85  # round(568 * 0.15) exactly, every time
        starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
        assert len(starts) == 28  # round(85 / 3)
        assert not mask[0]  # T5 starts with a non-noise span
        densities.append(mask.mean())
        spans.append(mask.sum() / len(starts))
        lengths.append(len(starts))
    assert abs(np.mean(densities) - 0.15) < 0.001
    assert abs(np.mean(spans) - 3.0) < 0.05
    # Tiny lengths keep at least one noise and one clean token.
    assert obj.random_spans_noise_mask(2, 0.15, rng).tolist() == [False, True]


def _ctx(vocab, seed=0, key=(0, 0)):
    src = FunctionSource(lambda split: [], splits=("train",))
    task = Task("objective_test", src, [], {"inputs": Feature(vocab), "targets": Feature(vocab)})
    return Context(task, "train", seed, 0, key)


def test_span_corruption_preprocessor_statistics_and_sentinel_order():
    vocab = ByteVocabulary()
    fn = obj.span_corruption(0.15, 3.0)
    noise_total, span_total, token_total = 0, 0, 0
    for i in range(300):
        tokens = np.random.default_rng(i).integers(3, 259, size=568).astype(np.int32)
        out = fn({"targets": tokens}, _ctx(vocab, key=(0, i)))
        inp, tgt = out["inputs"], out["targets"]
        assert len(inp) == 568 - 85 + 28 == 511  # + EOS = 512, the paper's inputs length
        assert len(tgt) == 85 + 28 == 113  # + EOS = 114
        sentinels_in = inp[inp >= 259]
        assert sentinels_in.tolist() == list(range(358, 358 - 28, -1))  # <extra_id_0>, 1, 2, ...
        assert tgt[0] == 358
        # Reconstruct the original from inputs and targets.
        spans, cur = {}, None
        for t in tgt:
            if t >= 259:
                cur = int(t)
                spans[cur] = []
            else:
                spans[cur].append(int(t))
        rebuilt = []
        for t in inp:
            rebuilt += spans[int(t)] if t >= 259 else [int(t)]
        assert rebuilt == tokens.tolist()
        noise_total += sum(len(s) for s in spans.values())
        span_total += len(spans)
        token_total += len(tokens)
    assert abs(noise_total / token_total - 0.15) < 0.002
    assert abs(noise_total / span_total - 85 / 28) < 0.01


def test_span_corruption_deterministic_per_key():
    vocab = ByteVocabulary()
    fn = obj.span_corruption()
    tokens = np.arange(3, 103, dtype=np.int32)
    a = fn({"targets": tokens}, _ctx(vocab, key=(0, 5)))
    b = fn({"targets": tokens}, _ctx(vocab, key=(0, 5)))
    c = fn({"targets": tokens}, _ctx(vocab, key=(0, 6)))
    assert np.array_equal(a["inputs"], b["inputs"]) and not np.array_equal(a["inputs"], c["inputs"])


def test_bert_style_80_10_10():
    vocab = ByteVocabulary()
    fn = obj.bert_style()
    changed = masked = total = 0
    for i in range(200):
        tokens = np.random.default_rng(100 + i).integers(3, 259, size=500).astype(np.int32)
        out = fn({"targets": tokens}, _ctx(vocab, key=(1, i)))
        assert np.array_equal(out["targets"], tokens) and len(out["inputs"]) == 500
        masked += int((out["inputs"] == vocab.vocab_size - 1).sum())
        changed += int(((out["inputs"] != tokens) & (out["inputs"] != vocab.vocab_size - 1)).sum())
        total += 500
        assert out["inputs"].max() < vocab.vocab_size
    noise = 0.15 * total
    assert abs(masked / noise - 0.8) < 0.02
    # 10% random tokens, minus those that happened to draw the same token (1/256).
    assert abs(changed / noise - 0.1 * 255 / 256) < 0.01


def test_other_objectives_shapes():
    vocab = ByteVocabulary()
    tokens = np.random.default_rng(0).integers(3, 259, size=400).astype(np.int32)
    ctx = _ctx(vocab)
    out = obj.deshuffling()({"targets": tokens}, ctx)
    assert sorted(out["inputs"].tolist()) == sorted(tokens.tolist()) and np.array_equal(
        out["targets"], tokens
    )
    assert not np.array_equal(out["inputs"], tokens)
    out = obj.mass_style()({"targets": tokens}, _ctx(vocab, key=(2, 0)))
    m = out["inputs"] == vocab.vocab_size - 1
    assert 0.08 < m.mean() < 0.22 and np.array_equal(out["inputs"][~m], tokens[~m])
    out = obj.iid_drop_tokens()({"targets": tokens}, _ctx(vocab, key=(3, 0)))
    assert len(out["inputs"]) + len(out["targets"]) == 400
    out = obj.iid_replace_spans()({"targets": tokens}, _ctx(vocab, key=(4, 0)))
    n_sent = int((out["inputs"] >= 259).sum())
    assert n_sent == int((out["targets"] >= 259).sum()) - (0 if out["inputs"][-1] >= 259 else 1)
    out = obj.prefix_lm()({"targets": tokens}, _ctx(vocab, key=(5, 0)))
    assert np.array_equal(np.concatenate([out["inputs"], out["targets"]]), tokens)
    assert 1 <= len(out["inputs"]) <= 399


@pytest.mark.parametrize("name", sorted(obj.OBJECTIVES))
def test_unsupervised_preprocessors_build(name):
    procs = obj.unsupervised_preprocessors(name)
    assert len(procs) == 6 and procs[1] is obj.tokenize
