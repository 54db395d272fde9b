"""Vocabularies: SentencePiece (load or train, T5's special ids) and a file-free byte vocabulary (ByT5).

Both share T5's layout: PAD=0, EOS=1, UNK=2, and `extra_ids` sentinels at the top of the id space,
`<extra_id_i>` = vocab_size - 1 - i. The decoder starts from PAD; decoding stops at EOS and drops PAD.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from mesh_t5.errors import UserError

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
DEFAULT_EXTRA_IDS = 100
_EXTRA_ID_RE = re.compile(r"<extra_id_(\d+)>")


class Vocabulary:
    """Common surface: ids <-> text, special ids, sentinels (`extra_id(i)`)."""

    pad_id = PAD_ID
    eos_id = EOS_ID
    unk_id = UNK_ID

    def __init__(self, extra_ids: int = DEFAULT_EXTRA_IDS):
        if extra_ids < 0:
            raise UserError(f"extra_ids={extra_ids} must be >= 0")
        self.extra_ids = int(extra_ids)

    # --- subclasses implement these two plus `_base_vocab_size` ---

    def _until_eos(self, ids: Iterable[int]) -> list[int]:
        """Returns the ids before the first EOS, PAD dropped (what decode renders); ids past the vocabulary
        (a model's padded embedding rows, e.g. 32128 > 32100) become UNK, as in seqio."""
        kept: list[int] = []
        size = self.vocab_size
        for t in ids:
            t = int(t)
            if t == self.eos_id:
                break
            if t != self.pad_id:
                kept.append(t if t < size else self.unk_id)
        return kept

    def _encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def _decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    @property
    def _base_vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        """Pieces (or bytes + specials) plus extra ids."""
        return self._base_vocab_size + self.extra_ids

    def extra_id(self, i: int) -> int:
        """Returns the id of `<extra_id_i>` (vocab_size - 1 - i)."""
        if not 0 <= i < self.extra_ids:
            raise UserError(f"<extra_id_{i}> does not exist; this vocabulary has {self.extra_ids} extra ids")
        return self.vocab_size - 1 - i

    def encode(self, text: str) -> list[int]:
        """Returns the ids of `text` (no EOS appended); `<extra_id_i>` markers map to their sentinel id."""
        ids: list[int] = []
        pos = 0
        for m in _EXTRA_ID_RE.finditer(text):
            i = int(m.group(1))
            if i >= self.extra_ids:
                continue  # not a sentinel of this vocabulary: tokenized as plain text
            if m.start() > pos:
                ids += self._encode(text[pos : m.start()])
            ids.append(self.extra_id(i))
            pos = m.end()
        if pos < len(text) or not ids:
            ids += self._encode(text[pos:])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Returns the text of `ids`, stopping at the first EOS and dropping PAD."""
        kept = self._until_eos(ids)
        # Sentinels are rendered as `<extra_id_i>` so that span-corruption text is readable.
        out, run = [], []
        first_extra = self._base_vocab_size
        for t in kept:
            if t >= first_extra:
                if run:
                    out.append(self._decode(run))
                    run = []
                out.append(f"<extra_id_{self.vocab_size - 1 - t}>")
            else:
                run.append(t)
        if run:
            out.append(self._decode(run))
        return "".join(out)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Returns one id list per text."""
        return [self.encode(t) for t in texts]

    def decode_batch(self, ids: Iterable[Iterable[int]]) -> list[str]:
        """Returns one string per row of ids (each row stops at EOS)."""
        return [self.decode(row) for row in ids]

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.identity() == other.identity()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.identity()))

    def identity(self) -> tuple:
        """What makes two vocabularies equal (and a task cache's vocabulary the same one)."""
        return (self.extra_ids,)


class ByteVocabulary(Vocabulary):
    """ByT5 layout: 3 special ids, then the 256 bytes (byte b -> b + 3), then extra ids at the top."""

    _OFFSET = 3

    @property
    def _base_vocab_size(self) -> int:
        return self._OFFSET + 256

    def _encode(self, text: str) -> list[int]:
        return [b + self._OFFSET for b in text.encode("utf-8")]

    def _decode(self, ids: list[int]) -> str:
        data = bytes(t - self._OFFSET for t in ids if self._OFFSET <= t < self._OFFSET + 256)
        return data.decode("utf-8", errors="ignore")  # as ByT5: a cut multi-byte char is dropped

    def __repr__(self) -> str:
        return f"ByteVocabulary(extra_ids={self.extra_ids})"


class SentencePieceVocabulary(Vocabulary):
    """A SentencePiece model with T5's special ids plus `extra_ids` sentinels appended as pieces.

    The sentinels are added to the model proto as user-defined pieces (in reverse order, so that
    `<extra_id_0>` is the last id), so `sp_model_bytes` tokenizes and detokenizes them too, e.g.
    inside a TF-text graph.
    """

    def __init__(self, model: str | os.PathLike | bytes, extra_ids: int = DEFAULT_EXTRA_IDS):
        super().__init__(extra_ids)
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2

        if isinstance(model, bytes):
            raw = model
            self._path = None
        else:
            self._path = os.fspath(model)
            if not os.path.isfile(self._path):
                raise UserError(f"SentencePiece model file {self._path!r} does not exist; pass a .model file")
            with open(self._path, "rb") as f:
                raw = f.read()
        proto = sentencepiece_model_pb2.ModelProto()
        try:
            proto.ParseFromString(raw)
        except Exception:
            raise UserError(
                f"{self._path or 'model bytes'} is not a SentencePiece model proto; "
                "pass the .model file spm_train wrote"
            ) from None
        if not proto.pieces:
            raise UserError(
                f"{self._path or 'model bytes'} is not a SentencePiece model proto (no pieces); "
                "pass the .model file spm_train wrote"
            )
        self._num_pieces = len(proto.pieces)
        for name, want in (("pad", PAD_ID), ("eos", EOS_ID), ("unk", UNK_ID)):
            got = getattr(proto.trainer_spec, f"{name}_id")
            if got != want:
                raise UserError(
                    f"SentencePiece model has {name}_id={got}; T5 needs pad=0, eos=1, unk=2 "
                    "(train with SentencePieceVocabulary.train)"
                )
        for i in reversed(range(self.extra_ids)):
            piece = proto.pieces.add()
            piece.piece = f"<extra_id_{i}>"
            piece.score = 0.0
            piece.type = sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED
        self._model_bytes = proto.SerializeToString()
        self._sp = spm.SentencePieceProcessor(model_proto=self._model_bytes)
        self._orig_bytes = raw

    @property
    def sp_model_bytes(self) -> bytes:
        """The serialized model proto, sentinels included (ids match this vocabulary's)."""
        return self._model_bytes

    @property
    def _base_vocab_size(self) -> int:
        return self._num_pieces

    def _encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def _decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)

    def encode(self, text: str) -> list[int]:
        # The augmented proto already maps `<extra_id_i>` to its sentinel (user-defined piece).
        return list(self._sp.encode(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(x) for x in self._sp.encode(list(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        kept = self._until_eos(ids)
        return self._sp.decode(kept)

    def identity(self) -> tuple:
        return (self.extra_ids, self._orig_bytes)

    @property
    def path(self) -> str | None:
        """The model file this vocabulary was read from (None when built from bytes)."""
        return self._path

    def __repr__(self) -> str:
        return f"SentencePieceVocabulary({self._path or '<bytes>'!r}, extra_ids={self.extra_ids})"

    @classmethod
    def train(
        cls,
        lines: Iterable[str] | str | os.PathLike,
        vocab_size: int,
        *,
        model_path: str | os.PathLike | None = None,
        extra_ids: int = DEFAULT_EXTRA_IDS,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
        input_sentence_size: int = 1_000_000,
        byte_fallback: bool = False,
    ) -> SentencePieceVocabulary:
        """Trains a SentencePiece model with T5's settings (pad=0, eos=1, unk=2, no bos) and returns it.

        `lines`: an iterable of text lines, or the path of a text file (one sentence per line).
        `vocab_size` counts the pieces; the returned vocabulary has vocab_size + extra_ids ids.
        Writes the model to `model_path` when given.
        """
        import sentencepiece as spm

        if isinstance(lines, str | os.PathLike):
            path = os.fspath(lines)
            if not os.path.isfile(path):
                raise UserError(
                    f"training corpus {path!r} does not exist; pass a text file or an iterable of lines"
                )
            with open(path, encoding="utf-8", errors="replace") as f:
                line_list = [ln.rstrip("\n") for ln in f]
        else:
            line_list = [str(ln) for ln in lines]
        line_list = [ln for ln in line_list if ln.strip()]
        if not line_list:
            raise UserError("cannot train a SentencePiece model on an empty corpus; give it some text lines")
        writer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(line_list),
                model_writer=writer,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=True,
                pad_id=PAD_ID,
                eos_id=EOS_ID,
                unk_id=UNK_ID,
                bos_id=-1,
                byte_fallback=byte_fallback,
                minloglevel=2,
            )
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown error"
            raise UserError(
                f"SentencePiece training failed ({first}); try a smaller vocab_size={vocab_size}"
            ) from None
        raw = writer.getvalue()
        if model_path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
            with open(model_path, "wb") as f:
                f.write(raw)
        vocab = cls(raw, extra_ids=extra_ids)
        vocab._path = os.fspath(model_path) if model_path is not None else None
        return vocab


BYTE_VOCABULARY_NAMES = ("byte", "bytes")


def load_vocabulary(spec: str | os.PathLike) -> Vocabulary:
    """Returns the vocabulary a `--vocab` value or a model's vocab path names: "byte" (or a path whose
    last component is "byte"/"bytes") for the byte vocabulary, else a SentencePiece model file."""
    if os.path.basename(os.fspath(spec)) in BYTE_VOCABULARY_NAMES:
        return ByteVocabulary()
    return SentencePieceVocabulary(spec)


class LazyVocabulary(Vocabulary):
    """A vocabulary built on first use by `factory()` (so a task catalogue can be registered
    without the vocabulary file being present); `missing` is the UserError text if it fails."""

    def __init__(self, factory, description: str):
        self._factory, self._description, self._vocab = factory, description, None

    def resolve(self) -> Vocabulary:
        """The vocabulary itself, built by `factory()` on the first call."""
        if self._vocab is None:
            self._vocab = self._factory()
        return self._vocab

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        return self.resolve().vocab_size

    @property
    def extra_ids(self) -> int:  # type: ignore[override]
        return self.resolve().extra_ids

    def encode(self, text: str) -> list[int]:
        return self.resolve().encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.resolve().decode(ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.resolve().encode_batch(texts)

    def decode_batch(self, ids: Iterable[Iterable[int]]) -> list[str]:
        return self.resolve().decode_batch(ids)

    def extra_id(self, i: int) -> int:
        return self.resolve().extra_id(i)

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"LazyVocabulary({self._description})"


def as_int32(ids: Sequence[int]) -> np.ndarray:
    """Returns `ids` as a 1-D int32 numpy array."""
    return np.asarray(ids, dtype=np.int32).reshape(-1)
