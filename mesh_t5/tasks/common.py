"""Shared pieces of the catalogue: the default vocabulary and output features, postprocessors."""

from __future__ import annotations

import os
from typing import Any

from mesh_t5.data.registry import Feature
from mesh_t5.errors import UserError
from mesh_t5.vocab import LazyVocabulary, SentencePieceVocabulary

VOCAB_ENV = "MESH_T5_VOCAB"


def _load_default_vocab() -> SentencePieceVocabulary:
    path = os.environ.get(VOCAB_ENV)
    if not path:
        raise UserError(
            f"the catalogue tasks need a SentencePiece vocabulary: set {VOCAB_ENV}=path/to/spiece.model "
            "(T5's own, or one trained with SentencePieceVocabulary.train)"
        )
    return SentencePieceVocabulary(path, extra_ids=100)


# Loaded on first use, so registering the catalogue needs no file.
DEFAULT_VOCABULARY = LazyVocabulary(_load_default_vocab, f"${VOCAB_ENV}")
DEFAULT_OUTPUT_FEATURES = {
    "inputs": Feature(DEFAULT_VOCABULARY, add_eos=True),
    "targets": Feature(DEFAULT_VOCABULARY, add_eos=True),
}
TFDS_DATA_DIR = os.environ.get("TFDS_DATA_DIR")


def string_label_to_class_id(label_classes: list[str]):
    """Returns a postprocessor mapping a label string to its index (-1 if the model wrote something else)."""

    def fn(text: str, example: Any = None, is_target: bool = False) -> int:
        text = text.strip()
        return label_classes.index(text) if text in label_classes else -1

    fn.__name__ = "string_label_to_class_id"
    return fn


def string_to_float(text: str, example: Any = None, is_target: bool = False, default: float = -1.0) -> float:
    """Returns float(text), or `default` when the model wrote something that is not a number."""
    try:
        return float(text)
    except ValueError:
        return default


def squad_answers(text: str, example: Any = None, is_target: bool = False) -> Any:
    """Returns all reference answers for targets (from the example), the text for predictions."""
    if is_target and example is not None and "answers" in example:
        return list(example["answers"])
    return text
