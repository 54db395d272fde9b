"""TFDS mock data for the catalogue's tasks, and a tiny SentencePiece vocabulary for them (test helpers).

`mock_tfds()` wraps `tfds.testing.mock_data`: every TFDS dataset yields `num_examples` random examples
made from its own feature spec, through the real `TfdsSource` code path (builder, as_dataset, shard,
skip). Three changes to plain mock_data, for speed or validity and none seen by the library:
- each (dataset, split) builds its tf.data.Dataset once and hands the same object out again (mock_data
  re-traces a generator pipeline, ~0.5 s, every time a stream starts an epoch);
- WSC examples get what real ones always have: the word at `span2_index` is `span2_text` (random text
  never satisfies it, so T5's simple-WSC formatting would drop every example);
- WNLI examples are real-shaped pairs whose premise has a pronoun and whose hypothesis names its referent
  (T5's WNLI-as-WSC evaluation task drops the others, i.e. all random ones).

Run as a script, it is the `mesh-t5` command under mock data:
    python tests/mock_tfds.py train --gin_file=... (the vocabulary from $MESH_T5_VOCAB)
"""

from __future__ import annotations

import contextlib
import itertools
import string
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

NUM_EXAMPLES = 12


def _label_words() -> list[str]:
    from mesh_t5.tasks import glue

    words = set()
    for labels, *_ in [*glue.GLUE.values(), *glue.SUPER_GLUE.values()]:
        words.update(labels or [])
    return sorted(words)


def train_tiny_vocab(path: str | Path) -> Path:
    """Trains a 120-piece SentencePiece model covering ASCII, mock data's letters and the label names."""
    from mesh_t5.vocab import SentencePieceVocabulary

    pairs = ["".join(p) for p in itertools.product("abcdefghij ", repeat=2)]
    lines = [string.printable, *pairs, *_label_words(), "<unk> choice1 choice2 True False"] * 3
    SentencePieceVocabulary.train(lines, 120, model_path=path)
    return Path(path)


def _fix_wsc(ex: dict, rng: np.random.Generator) -> dict:
    words = str(ex["text"]).split(" ")
    if len(words) < 3:
        words = [*words, "he", "said"]
    i = int(rng.integers(1, len(words)))
    words[i] = words[i] or "it"
    return dict(ex, text=" ".join(words), span2_index=np.int32(i), span2_text=words[i], label=np.int64(i % 2))


# WNLI pairs whose premise has a pronoun and whose hypothesis names its referent: T5's WNLI-as-WSC
# evaluation task (glue_wnli_v002_simple_eval) drops examples without one, as random mock text is.
_WNLI_PAIRS = [
    ("The cat sat on the mat because it was tired.", "The cat was tired."),
    ("Sam called Bob because he wanted help.", "Sam wanted help."),
    ("The trophy did not fit in the case because it was too big.", "The trophy was too big."),
]


def _fix_wnli(ex: dict, i: int) -> dict:
    premise, hypothesis = _WNLI_PAIRS[i % len(_WNLI_PAIRS)]
    return dict(ex, sentence1=premise, sentence2=hypothesis)


@contextlib.contextmanager
def mock_tfds(num_examples: int = NUM_EXAMPLES) -> Iterator[None]:
    """Mocks every TFDS dataset with `num_examples` random examples per split (see module docstring)."""
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from tensorflow_datasets.testing.mocking import RandomFakeGenerator

    cache: dict[tuple[str, str], tf.data.Dataset] = {}

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        key = (self.info.full_name, str(split))
        if key not in cache:
            features = self.info.features
            examples = list(RandomFakeGenerator(features, num_examples))
            if self.info.full_name.startswith("super_glue/wsc"):
                rng = np.random.default_rng(0)
                examples = [_fix_wsc(ex, rng) for ex in examples]
            if self.info.full_name.startswith("glue/wnli"):
                examples = [_fix_wnli(ex, i) for i, ex in enumerate(examples)]
            spec = tf.nest.map_structure(
                lambda t: tf.TensorSpec(t.shape, t.dtype), features.get_tensor_info()
            )
            ds = tf.data.Dataset.from_generator(lambda exs=examples: iter(exs), output_signature=spec)
            cache[key] = ds.apply(tf.data.experimental.assert_cardinality(num_examples))
        return cache[key]

    _forget_tfds_sizes()
    try:
        with tfds.testing.mock_data(num_examples=num_examples, as_dataset_fn=as_dataset):
            yield
    finally:
        _forget_tfds_sizes()


def _forget_tfds_sizes() -> None:
    """Clears the split sizes the registered tasks' TfdsSources remember (a source reads them once per
    process; each mock_tfds() context has its own sizes, and several run in one pytest worker)."""
    from mesh_t5 import data
    from mesh_t5.data.sources import TfdsSource

    for name in data.list_tasks():
        source = data.get_task(name).source
        if isinstance(source, TfdsSource):
            source._files.clear()


if __name__ == "__main__":
    from mesh_t5.cli import main

    with mock_tfds():
        sys.exit(main(sys.argv[1:]))
