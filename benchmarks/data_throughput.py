"""Input-pipeline throughput: tokenize (SentencePiece) + span corruption + packing, in tokens/s.

Trains a small SentencePiece model on synthetic text, registers a span-corruption task over a
Python-function source, and times `get_dataset(...)` batches (inputs 512 / targets 114, batch 32).
Usage: python benchmarks/data_throughput.py [--batches 40] [--vocab_size 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mesh_t5.data import Feature, FunctionSource, Task, get_dataset, unsupervised_preprocessors
from mesh_t5.vocab import SentencePieceVocabulary


def synthetic_corpus(num_docs: int, seed: int = 0) -> list[str]:
    """Returns documents of Zipf-distributed pseudo-words (a few hundred words each)."""
    rnd = np.random.default_rng(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    words = ["".join(rnd.choice(syllables, size=int(rnd.integers(1, 4)))) for _ in range(5000)]
    docs = []
    for _ in range(num_docs):
        n = int(rnd.integers(50, 600))
        idx = np.minimum(rnd.zipf(1.2, size=n) - 1, len(words) - 1)
        docs.append(" ".join(words[i] for i in idx) + ".")
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--vocab_size", type=int, default=1000)
    args = parser.parse_args()

    docs = synthetic_corpus(4000)
    vocab = SentencePieceVocabulary.train(docs[:2000], vocab_size=args.vocab_size)
    source = FunctionSource(lambda split: ({"text": d} for d in docs), splits=("train",))
    feats = {"inputs": Feature(vocab), "targets": Feature(vocab)}
    task = Task("bench_span_corruption", source, unsupervised_preprocessors("span_corruption"), feats)
    lengths = {"inputs": 512, "targets": 114}
    it = get_dataset(task, lengths, batch_size=args.batch_size, shuffle=True, seed=0, pack=True)
    next(it)  # warm-up (fills the shuffle buffer)
    start = time.perf_counter()
    enc_tokens = dec_tokens = 0
    for _ in range(args.batches):
        b = next(it)
        enc_tokens += int((b["encoder_input_tokens"] != 0).sum())
        dec_tokens += int((b["decoder_target_tokens"] != 0).sum())
    secs = time.perf_counter() - start
    fill = enc_tokens / (args.batches * args.batch_size * lengths["inputs"])
    print(
        f"span corruption + packing, batch {args.batch_size} x 512/114, {args.batches} batches in {secs:.2f} s: "
        f"{enc_tokens / secs:,.0f} encoder tokens/s, {(enc_tokens + dec_tokens) / secs:,.0f} total tokens/s, "
        f"{args.batches / secs:.2f} batches/s, encoder fill {fill:.1%}"
    )


if __name__ == "__main__":
    main()
