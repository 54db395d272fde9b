import json

import numpy as np
import pytest

from mesh_t5.data import (
    Feature,
    FunctionSource,
    Mixture,
    MixtureRegistry,
    Task,
    TaskRegistry,
    append_eos_after_trim,
    get_dataset,
    rate_num_examples,
    rekey,
    tokenize,
    unpack,
    unsupervised_preprocessors,
)
from mesh_t5.data.feature_converters import ConvertedStream, FeatureConverter
from mesh_t5.vocab import ByteVocabulary

VOCAB = ByteVocabulary()
FEATS = {"inputs": Feature(VOCAB), "targets": Feature(VOCAB)}


def _docs(n, prefix="doc"):
    rnd = np.random.default_rng(len(prefix) + n)
    return [f"{prefix} {i} " + "w" * int(rnd.integers(0, 40)) for i in range(n)]


def _supervised_task(name, n, prefix="q"):
    docs = _docs(n, prefix)
    src = FunctionSource(
        lambda split: ({"q": d, "a": d[::-1][:7]} for d in docs), splits=("train", "validation"),
        num_examples={"train": n, "validation": n},
    )  # fmt: skip
    return Task(name, src, [rekey({"inputs": "q", "targets": "a"}), tokenize, append_eos_after_trim], FEATS)


@pytest.fixture
def registered():
    names = []

    def add(task_or_mixture):
        reg = MixtureRegistry if isinstance(task_or_mixture, Mixture) else TaskRegistry
        reg.add(task_or_mixture, overwrite=True)
        names.append((reg, task_or_mixture.name))
        return task_or_mixture

    yield add
    for reg, n in names:
        reg.remove(n)


def _list_of(it, n):
    return [next(it) for _ in range(n)]


def _equal(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("kind", ["enc_dec", "lm", "prefix_lm"])
def test_packing_round_trip(kind):
    rnd = np.random.default_rng(0)
    examples = [
        {
            "inputs": rnd.integers(3, 200, size=int(rnd.integers(1, 20))).astype(np.int32),
            "targets": np.append(rnd.integers(3, 200, size=int(rnd.integers(0, 9))), 1).astype(np.int32),
        }
        for _ in range(60)
    ]

    class ListStream:
        def __init__(self):
            self.i = 0

        def __next__(self):
            if self.i >= len(examples):
                raise StopIteration
            self.i += 1
            return examples[self.i - 1]

        def get_state(self):
            return {"i": self.i}

        def set_state(self, s):
            self.i = s["i"]

    lengths = {"inputs": 24, "targets": 12}
    rows = list(ConvertedStream(ListStream(), FeatureConverter(kind, pack=True), lengths, pack_window=4))
    assert len(rows) < 60  # several examples per row
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    got = unpack(batch, kind)

    def key(e):
        return (e["inputs"].tolist(), e["targets"].tolist())

    assert sorted(map(key, got)) == sorted(map(key, examples))
    # Segment ids from 1, positions restart at 0, decoder inputs = targets shifted right per segment.
    for r in rows:
        seg, pos = r["decoder_segment_ids"], r["decoder_positions"]
        for s in range(1, seg.max() + 1):
            where = np.flatnonzero(seg == s)
            assert pos[where].tolist() == list(range(len(where)))
            tgt = r["decoder_target_tokens"][where]
            assert r["decoder_input_tokens"][where].tolist() == [0, *tgt[:-1].tolist()]
        if kind != "enc_dec":  # decoder-only: inputs then targets in one row, loss on the targets
            assert ("decoder_causal_attention" in r) == (kind == "prefix_lm")
            for s in range(1, seg.max() + 1):
                where = np.flatnonzero(seg == s)
                w = r["decoder_loss_weights"][where]
                n_in = int(np.argmax(w > 0))
                assert w.tolist() == [0] * n_in + [1] * (len(where) - n_in)  # loss on targets only
                if kind == "prefix_lm":
                    causal = r["decoder_causal_attention"][where]
                    assert causal.tolist() == [1] * (n_in + 1) + [0] * (len(where) - n_in - 1)


def test_unpacked_padding_and_feature_names(registered):
    task = registered(_supervised_task("pipe_sup", 10))
    it = get_dataset(
        task.name, {"inputs": 32, "targets": 8}, batch_size=3, shuffle=False, pack=False, num_epochs=1
    )
    b = next(it)
    assert sorted(b) == [
        "decoder_input_tokens",
        "decoder_loss_weights",
        "decoder_target_tokens",
        "encoder_input_tokens",
    ]
    assert b["encoder_input_tokens"].shape == (3, 32) and b["decoder_target_tokens"].dtype == np.int32
    first = VOCAB.encode(_docs(10, "q")[0][:31])
    assert b["encoder_input_tokens"][0, :32].tolist() == [*first, 1][:32] + [0] * (
        32 - min(32, len(first) + 1)
    )
    batches = [b, *it]
    assert len(batches) == 4  # 10 examples / 3, the last filled with zero rows
    assert batches[-1]["decoder_loss_weights"][1:].sum() == 0


def test_save_restore_mid_epoch_and_mid_packing(registered):
    docs = _docs(200, "corpus")
    src = FunctionSource(
        lambda split: ({"text": d} for d in docs), splits=("train",), num_examples={"train": 200}
    )
    registered(Task("pipe_sc", src, unsupervised_preprocessors("span_corruption", docs_per_group=8), FEATS,
                    shuffle_buffer_size=32))  # fmt: skip
    registered(_supervised_task("pipe_sup2", 37))
    registered(Mixture("pipe_mix", [("pipe_sc", 2.0), ("pipe_sup2", 1.0)]))
    lengths = {"inputs": 48, "targets": 16}
    for name in ("pipe_sc", "pipe_mix"):
        ref = get_dataset(name, lengths, batch_size=4, seed=3)
        all_batches = _list_of(ref, 40)
        for cut in (1, 7, 23):
            it = get_dataset(name, lengths, batch_size=4, seed=3)
            _list_of(it, cut)
            state = json.loads(json.dumps(it.get_state()))  # JSON-serializable
            if name == "pipe_sc":
                assert state["rows"]["open"], "packing buffer should be pending mid-stream"
            fresh = get_dataset(name, lengths, batch_size=4, seed=3)
            fresh.set_state(state)
            assert _equal(_list_of(fresh, 40 - cut), all_batches[cut:])
        # The same seed gives the same batches; another seed differs.
        assert _equal(_list_of(get_dataset(name, lengths, batch_size=4, seed=3), 5), all_batches[:5])
        assert not _equal(_list_of(get_dataset(name, lengths, batch_size=4, seed=4), 5), all_batches[:5])


def test_shuffle_epochs_cover_every_example_once(registered):
    task = registered(_supervised_task("pipe_epochs", 25))
    it = task.get_dataset("train", shuffle=True, seed=1, num_epochs=2)
    texts = [ex["inputs_pretokenized"] for ex in it]
    first, second = texts[:25], texts[25:]
    want = sorted(_docs(25, "q"))
    assert sorted(first) == want and sorted(second) == want and first != second
    assert first != [d for d in _docs(25, "q")]


def test_sharding_is_disjoint_and_complete(registered):
    task = registered(_supervised_task("pipe_shard", 23))
    parts = [
        [e["inputs_pretokenized"] for e in task.get_dataset("train", shard_index=i, num_shards=3)]
        for i in range(3)
    ]
    assert sorted(x for part in parts for x in part) == sorted(_docs(23, "q"))
    assert all(set(a).isdisjoint(b) for a in parts for b in parts if a is not b)


def test_mixing_frequencies_match_rates(registered):
    for n, name in ((100, "mix_a"), (300, "mix_b"), (5000, "mix_c")):
        registered(_supervised_task(name, n, prefix=name))
    from functools import partial

    rate = partial(rate_num_examples, maximum=1000)
    mix = registered(Mixture("mix_abc", ["mix_a", "mix_b", "mix_c"], default_rate=rate))
    assert mix.rates() == pytest.approx({"mix_a": 100 / 1400, "mix_b": 300 / 1400, "mix_c": 1000 / 1400})
    it = get_dataset("mix_abc", {"inputs": 64, "targets": 8}, batch_size=50, pack=False, seed=0)
    counts = {"mix_a": 0, "mix_b": 0, "mix_c": 0}
    for _ in range(40):
        b = next(it)
        for row in b["encoder_input_tokens"]:
            text = VOCAB.decode(row)
            counts[text.split(" ")[0]] += 1
    from scipy.stats import chisquare

    total = sum(counts.values())
    expected = [total * mix.rates()[k] for k in counts]
    assert chisquare(list(counts.values()), expected).pvalue > 0.001
    # Temperature scaling: r^(1/T).
    t = _supervised_task("mix_t", 400)
    assert rate_num_examples(t, temperature=2.0) == pytest.approx(20.0)
    assert rate_num_examples(t, maximum=100, scale=2.0) == 100.0


def test_data_repetition_keeps_first_n_tokens(registered):
    docs = [f"{i:03d}" + "x" * 7 for i in range(50)]  # 10 bytes each
    src = FunctionSource(lambda split: ({"text": d} for d in docs), splits=("train",), max_tokens=35)
    task = registered(
        Task("pipe_rep", src, [rekey({"targets": "text"}), tokenize], {"targets": Feature(VOCAB)})
    )
    seen = [VOCAB.decode(e["targets"]) for e in task.get_dataset("train", shuffle=True, num_epochs=3)]
    assert sorted(seen[:4]) == [docs[0], docs[1], docs[2], docs[3][:5]]
    assert sum(len(s) for s in seen) == 3 * 35  # repeated for each epoch


class _Examples:
    """A resumable stream over a fixed list of examples (for the converter tests)."""

    def __init__(self, examples):
        self.examples, self.i = examples, 0

    def __next__(self):
        if self.i >= len(self.examples):
            raise StopIteration
        self.i += 1
        return self.examples[self.i - 1]

    def get_state(self):
        return {"i": self.i}

    def set_state(self, s):
        self.i = s["i"]


@pytest.mark.parametrize("pack", [True, False])
def test_prefix_lm_overlong_inputs_keep_one_target(pack):
    # Regression: inputs filling the whole row used to cut the targets away entirely; the causal mask
    # then covered every position and read back as (inputs[:-1], one "target" that was an input).
    fits = {"inputs": np.array([10, 11], np.int32), "targets": np.array([12, 1], np.int32)}
    long = {"inputs": np.arange(20, 29, dtype=np.int32), "targets": np.array([7, 8, 1], np.int32)}
    no_targets = {"inputs": np.array([5, 6], np.int32), "targets": np.zeros(0, np.int32)}
    conv = FeatureConverter("prefix_lm", pack=pack)
    rows = list(ConvertedStream(_Examples([fits, long, no_targets]), conv, {"inputs": 4, "targets": 2}))
    assert conv.dropped == 1 and conv.truncated == 1
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    got = [(e["inputs"].tolist(), e["targets"].tolist()) for e in unpack(batch, "prefix_lm")]
    assert got == [([10, 11], [12, 1]), ([20, 21, 22, 23, 24], [7])]
    row = rows[-1]  # the overlong example alone in its row (6 = 4 + 2 positions)
    seg = row["decoder_segment_ids"] == row["decoder_segment_ids"].max() if pack else np.ones(6, bool)
    assert row["decoder_target_tokens"][seg].tolist() == [20, 21, 22, 23, 24, 7]
    assert row["decoder_causal_attention"][seg].tolist() == [1, 1, 1, 1, 1, 1]  # 5 inputs + first target
    assert row["decoder_loss_weights"][seg].tolist() == [0, 0, 0, 0, 0, 1]
