"""Preprocessors: text formatting (T5's "prefix field: value" style), tokenize, EOS, truncation,
and the document concatenate-and-split of pre-training (`reduce_concat_tokens` + `split_tokens`).

Per-example preprocessors have the signature `fn(example, ctx) -> example | None`; helpers that
take options return such a function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mesh_t5.data.registry import Context, StreamPreprocessor
from mesh_t5.data.stream import Stream
from mesh_t5.errors import UserError

Example = dict[str, Any]
Preprocessor = Callable[[Example, Context], Example | None]


def _field(ex: Example, name: str, ctx: Context, who: str) -> Any:
    if name not in ex:
        raise UserError(
            f"task {ctx.task.name!r}: {who} needs field {name!r}, missing from an example with fields {sorted(ex)}"
        )
    return ex[name]


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def rekey(key_map: Mapping[str, str | None]) -> Preprocessor:
    """Returns a preprocessor making `{new: example[old]}` (old None gives "", as T5's rekey)."""

    def rekey_fn(ex: Example, ctx: Context) -> Example:
        return {new: ("" if old is None else _field(ex, old, ctx, "rekey")) for new, old in key_map.items()}

    rekey_fn.__name__ = "rekey"
    return rekey_fn


def format_text(
    prefix: str,
    input_fields: Sequence[str],
    target_field: str | None = None,
    label_names: Sequence[str] | None = None,
    *,
    field_names: Mapping[str, str] | None = None,
) -> Preprocessor:
    """Returns a preprocessor giving inputs "prefix field1: v1 field2: v2" (T5's GLUE formatting).

    targets: `label_names[example[target_field]]` (label -1, an unlabeled test example, gives
    "<unk>"), or the field's text without `label_names`. `field_names` renames fields in the text.
    """
    shown = dict(field_names or {})

    def format_fn(ex: Example, ctx: Context) -> Example:
        parts = [prefix] if prefix else []
        for f in input_fields:
            parts.append(f"{shown.get(f, f)}: {_as_text(_field(ex, f, ctx, 'format_text'))}")
        out = {"inputs": " ".join(parts)}
        if target_field is not None:
            value = _field(ex, target_field, ctx, "format_text")
            if label_names is not None:
                out["targets"] = "<unk>" if int(value) < 0 else label_names[int(value)]
            else:
                out["targets"] = _as_text(value)
        return out

    format_fn.__name__ = "format_text"
    return format_fn


def translate(source_key: str, target_key: str, source_language: str, target_language: str) -> Preprocessor:
    """Returns a preprocessor giving "translate {source_language} to {target_language}: {text}" -> target."""

    def translate_fn(ex: Example, ctx: Context) -> Example:
        src = _as_text(_field(ex, source_key, ctx, "translate"))
        return {
            "inputs": f"translate {source_language} to {target_language}: {src}",
            "targets": _as_text(_field(ex, target_key, ctx, "translate")),
        }

    translate_fn.__name__ = "translate"
    return translate_fn


def summarize(article_key: str, summary_key: str) -> Preprocessor:
    """Returns a preprocessor giving "summarize: {article}" -> summary."""

    def summarize_fn(ex: Example, ctx: Context) -> Example:
        return {
            "inputs": "summarize: " + _as_text(_field(ex, article_key, ctx, "summarize")),
            "targets": _as_text(_field(ex, summary_key, ctx, "summarize")),
        }

    summarize_fn.__name__ = "summarize"
    return summarize_fn


def tokenize(ex: Example, ctx: Context) -> Example:
    """Tokenizes the string output features with their vocabularies; keeps "<name>_pretokenized"."""
    out = dict(ex)
    for name, feat in ctx.output_features.items():
        if name in ex and isinstance(ex[name], str | bytes):
            text = _as_text(ex[name])
            out[f"{name}_pretokenized"] = text
            out[name] = np.asarray(feat.vocabulary.encode(text), dtype=np.int32)
    return out


tokenize.is_tokenize = True  # type: ignore[attr-defined]  # marks where the task counts tokens (max_tokens)


def _trim(ex: Example, ctx: Context, name: str, length: int) -> np.ndarray:
    arr = np.asarray(ex[name], dtype=np.int32)
    if len(arr) > length:
        ctx.count(f"truncated {name}")
        ctx.warn_once(
            f"truncate:{name}", f"{name!r} longer than {length} tokens are truncated (count in task.stats)"
        )
        arr = arr[:length]
    return arr


def append_eos(ex: Example, ctx: Context) -> Example:
    """Appends EOS to the token features whose Feature has add_eos=True."""
    out = dict(ex)
    for name, feat in ctx.output_features.items():
        if feat.add_eos and name in ex:
            out[name] = np.append(np.asarray(ex[name], dtype=np.int32), np.int32(feat.vocabulary.eos_id))
    return out


def append_eos_after_trim(ex: Example, ctx: Context) -> Example:
    """Truncates each token feature to its sequence length (one less when EOS is added), then appends EOS,
    so that a truncated example still ends with EOS. Truncations are counted and warned once."""
    out = dict(ex)
    seq = ctx.sequence_length or {}
    for name, feat in ctx.output_features.items():
        if name not in ex:
            continue
        arr = np.asarray(ex[name], dtype=np.int32)
        if name in seq:
            arr = _trim(ex, ctx, name, seq[name] - 1 if feat.add_eos else seq[name])
        if feat.add_eos:
            arr = np.append(arr, np.int32(feat.vocabulary.eos_id))
        out[name] = arr
    return out


def truncate(ex: Example, ctx: Context) -> Example:
    """Truncates each token feature to its sequence length (counted and warned once)."""
    out = dict(ex)
    for name, length in (ctx.sequence_length or {}).items():
        if name in ex and not isinstance(ex[name], str):
            out[name] = _trim(ex, ctx, name, length)
    return out


def select_random_chunk(feature: str = "targets", max_length: int = 65536) -> Preprocessor:
    """Returns a preprocessor keeping one random chunk of at most `max_length` tokens (T5: 65536),
    at a chunk boundary, so that very long documents do not dominate a concatenation."""

    def select_random_chunk_fn(ex: Example, ctx: Context) -> Example | None:
        tokens = np.asarray(_field(ex, feature, ctx, "select_random_chunk"))
        if len(tokens) == 0:
            return None
        num_chunks = (len(tokens) + max_length - 1) // max_length
        start = max_length * int(ctx.rng.integers(num_chunks))
        return {feature: tokens[start : start + max_length]}

    select_random_chunk_fn.__name__ = "select_random_chunk"
    return select_random_chunk_fn


class ConcatAndSplit(StreamPreprocessor):
    """Concatenates the `feature` tokens of `docs_per_group` documents (T5's reduce_concat_tokens,
    batch_size=128), then splits the result into chunks of `length` tokens (split_tokens; the
    last chunk of a group may be shorter). Other fields are dropped.

    `length`: an int, or a function of the sequence_length mapping (for span corruption:
    the raw length from random_spans_helper). Resumable: the state is the upstream state at
    the start of the current group plus the number of chunks already given; restoring re-reads it.
    """

    def __init__(
        self,
        feature: str = "targets",
        length: int | Callable[[Mapping[str, int] | None], int] = 512,
        docs_per_group: int = 128,
    ):
        self.feature, self.length, self.docs_per_group = feature, length, docs_per_group

    def stream(self, upstream: Stream, ctx: Context) -> Stream:
        length = self.length(ctx.sequence_length) if callable(self.length) else self.length
        if length < 1:
            raise UserError(f"task {ctx.task.name!r}: split length {length} must be >= 1")
        return _ConcatSplitStream(upstream, self.feature, int(length), self.docs_per_group, ctx)


class _ConcatSplitStream(Stream):
    def __init__(self, upstream: Stream, feature: str, length: int, docs: int, ctx: Context):
        self.upstream, self.feature, self.length, self.docs, self.ctx = upstream, feature, length, docs, ctx
        self.group_state = upstream.get_state()
        self.chunks: list[np.ndarray] = []
        self.k = 0
        self.counter = 0

    def _fill(self) -> None:
        self.group_state = self.upstream.get_state()
        docs = []
        for _ in range(self.docs):
            try:
                _, ex = next(self.upstream)
            except StopIteration:
                break
            docs.append(np.asarray(_field(ex, self.feature, self.ctx, "ConcatAndSplit"), dtype=np.int32))
        if not docs:
            raise StopIteration
        tokens = np.concatenate(docs)  # [sum of document lengths]
        self.chunks = [tokens[i : i + self.length] for i in range(0, len(tokens), self.length)]
        self.k = 0

    def __next__(self) -> tuple[tuple[int, ...], Example]:
        while self.k >= len(self.chunks):
            self._fill()
        chunk = self.chunks[self.k]
        self.k += 1
        self.counter += 1
        return (self.counter - 1,), {self.feature: chunk}

    def get_state(self) -> dict:
        return {"group_start": self.group_state, "k": self.k, "counter": self.counter}

    def set_state(self, state: dict) -> None:
        self.upstream.set_state(state["group_start"])
        self.chunks, self.k = [], 0
        if state["k"] > 0:
            self._fill()
            self.k = int(state["k"])
        else:
            self.group_state = state["group_start"]
        self.counter = int(state["counter"])
