"""The unsupervised objectives the paper compares (Tables 3-7), as numpy preprocessors.

Each objective reads the token feature "targets" (a chunk of text) and writes "inputs" and
"targets". Noise masks choose which tokens are corrupted; span transforms turn (tokens, mask)
into inputs/targets. Sentinels: the first noise span gets <extra_id_0> = vocab_size - 1, then
vocab_size - 2, ... (the vocabulary of the "inputs" feature).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from mesh_t5 import validate
from mesh_t5.data.preprocessors import (
    ConcatAndSplit,
    append_eos_after_trim,
    rekey,
    select_random_chunk,
    tokenize,
)
from mesh_t5.data.registry import Context
from mesh_t5.errors import UserError

Example = dict


def random_spans_helper(
    inputs_length: int = 512,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    extra_tokens_per_span_inputs: int = 1,
    extra_tokens_per_span_targets: int = 1,
) -> tuple[int, int]:
    """Returns (raw tokens length, targets length) so that span corruption of a raw chunk gives
    exactly `inputs_length` input tokens (EOS counted), as T5's random_spans_helper: 512 -> (568, 114)."""
    # A chunk needs a token besides EOS; at density 0 or 1 there is nothing (or only noise) to corrupt.
    validate.integer(inputs_length, "inputs_length", minimum=2)
    validate.number(noise_density, "noise_density", 0, 1, open_min=True, open_max=True)
    validate.number(mean_noise_span_length, "mean_noise_span_length", minimum=1)
    validate.integer(extra_tokens_per_span_inputs, "extra_tokens_per_span_inputs", minimum=0)
    validate.integer(extra_tokens_per_span_targets, "extra_tokens_per_span_targets", minimum=0)

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise = round(tokens_length * noise_density)
        num_nonnoise = tokens_length - num_noise
        num_spans = round(num_noise / mean_noise_span_length)
        # inputs: non-noise tokens, a sentinel per span, EOS; targets: noise tokens, sentinels, EOS.
        return (
            num_nonnoise + num_spans * extra_tokens_per_span_inputs + 1,
            num_noise + num_spans * extra_tokens_per_span_targets + 1,
        )

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = lengths(tokens_length)
    # T5's adjustment so that targets are not longer than inputs at density 0.5.
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


# ----------------------------------------------------------------------------- noise masks [length] bool


def iid_noise_mask(length: int, noise_density: float, rng: np.random.Generator) -> np.ndarray:
    """Returns a [length] bool mask, each token noise with probability noise_density."""
    return rng.random(length) < noise_density


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Returns [num_segments] positive lengths summing to num_items, uniformly random."""
    marks = np.arange(num_items - 1) < num_segments - 1  # [num_items - 1]: num_segments - 1 boundaries
    rng.shuffle(marks)
    segment_id = np.cumsum(np.concatenate([[0], marks]))  # [num_items]
    return np.bincount(segment_id, minlength=num_segments)


def random_spans_noise_mask(
    length: int, noise_density: float, rng: np.random.Generator, mean_noise_span_length: float = 3.0
) -> np.ndarray:
    """Returns a [length] bool mask of random noise spans (T5's algorithm).

    noise tokens = round(length * density) (clipped to [1, length - 1]); spans =
    round(noise tokens / mean span length) (at least 1); noise and non-noise tokens are each
    segmented at random into that many spans, interleaved non-noise first.
    """
    orig_length = length
    length = max(length, 2)  # T5's guard: a mask of 1 token still has one noise and one non-noise slot
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_noise_span_length), 1)
    num_nonnoise = length - num_noise
    num_spans = min(num_spans, num_noise, num_nonnoise)  # only binds in degenerate settings
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)  # [S]
    nonnoise_lengths = _random_segmentation(num_nonnoise, num_spans, rng)  # [S]
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)  # [2S]
    span_starts = np.cumsum(interleaved)[:-1]  # [2S - 1]
    start_indicator = np.zeros(length, np.int32)
    start_indicator[span_starts] = 1
    span_num = np.cumsum(start_indicator)  # [length]
    return (span_num % 2 == 1)[:orig_length]


def random_prefix_noise_mask(length: int, noise_density: float, rng: np.random.Generator) -> np.ndarray:
    """Returns a [length] mask that is noise after a random split point (prefix LM; T5's
    random_prefix_noise_mask: the prefix has between round((1 - 2d)(length - 1)) and length - 1 tokens)."""
    if noise_density > 0.5:
        raise UserError(f"prefix LM noise_density={noise_density} must be <= 0.5")
    max_input = length - 1
    min_input = min(max_input, max(1, round((1 - 2 * noise_density) * max_input)))
    num_input = int(rng.integers(min_input, max_input + 1)) if max_input >= 1 else 0
    return np.arange(length) >= num_input


# ----------------------------------------------------------------------------- span transforms


def noise_span_to_unique_sentinel(tokens: np.ndarray, noise_mask: np.ndarray, vocab_size: int) -> np.ndarray:
    """Returns tokens with each noise span replaced by one sentinel (vocab_size - 1, - 2, ...)."""
    prev = np.concatenate([[False], noise_mask[:-1]])  # [L]
    first_noise = noise_mask & ~prev
    subsequent_noise = noise_mask & prev
    sentinels = vocab_size - np.cumsum(first_noise)  # [L]
    out = np.where(first_noise, sentinels, tokens)
    return out[~subsequent_noise].astype(np.int32)


def nonnoise_span_to_unique_sentinel(
    tokens: np.ndarray, noise_mask: np.ndarray, vocab_size: int
) -> np.ndarray:
    """Returns tokens with each non-noise span replaced by one sentinel (the span-corruption targets)."""
    return noise_span_to_unique_sentinel(tokens, ~noise_mask, vocab_size)


def drop_noise_tokens(tokens: np.ndarray, noise_mask: np.ndarray) -> np.ndarray:
    return tokens[~noise_mask].astype(np.int32)


def drop_nonnoise_tokens(tokens: np.ndarray, noise_mask: np.ndarray) -> np.ndarray:
    return tokens[noise_mask].astype(np.int32)


def noise_token_to_sentinel(tokens: np.ndarray, noise_mask: np.ndarray, vocab_size: int) -> np.ndarray:
    """Returns tokens with every noise token replaced by the one mask sentinel (vocab_size - 1)."""
    return np.where(noise_mask, vocab_size - 1, tokens).astype(np.int32)


def bert_corruption(
    tokens: np.ndarray,
    noise_mask: np.ndarray,
    vocab_size: int,
    num_regular_tokens: int,
    rng: np.random.Generator,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
) -> np.ndarray:
    """Returns BERT-style inputs: of the noise tokens, `mask_prob` become the mask sentinel,
    `random_prob` a random regular token (ids 3 .. num_regular_tokens - 1), the rest stay."""
    u = rng.random(len(tokens))  # [L]
    random_tokens = rng.integers(3, max(num_regular_tokens, 4), size=len(tokens))  # [L]
    out = np.where(noise_mask & (u < mask_prob), vocab_size - 1, tokens)
    out = np.where(noise_mask & (u >= mask_prob) & (u < mask_prob + random_prob), random_tokens, out)
    return out.astype(np.int32)


# ----------------------------------------------------------------------------- objectives (preprocessors)


def _tokens_and_vocab(ex: Example, ctx: Context, who: str) -> tuple[np.ndarray, int, int]:
    if "targets" not in ex:
        raise UserError(f"task {ctx.task.name!r}: {who} needs token field 'targets' (fields: {sorted(ex)})")
    feat = ctx.output_features.get("inputs") or ctx.output_features["targets"]
    vocab = feat.vocabulary
    return np.asarray(ex["targets"], dtype=np.int32), vocab.vocab_size, vocab.vocab_size - vocab.extra_ids


def _objective(name: str, fn: Callable[[np.ndarray, int, int, np.random.Generator], tuple]) -> Callable:
    def objective_fn(ex: Example, ctx: Context) -> Example | None:
        tokens, vocab_size, regular = _tokens_and_vocab(ex, ctx, name)
        if len(tokens) == 0:
            ctx.count(f"empty chunk dropped by {name}")
            return None
        inputs, targets = fn(tokens, vocab_size, regular, ctx.rng)
        return {"inputs": inputs, "targets": targets}

    objective_fn.__name__ = name
    return objective_fn


def span_corruption(noise_density: float = 0.15, mean_noise_span_length: float = 3.0) -> Callable:
    """Returns T5's span corruption: random spans, each replaced by a unique sentinel; targets are
    the dropped spans, each preceded by its sentinel (paper Table 3 winner, Tables 4-5 sweep)."""

    def fn(tokens, vocab_size, regular, rng):
        mask = random_spans_noise_mask(len(tokens), noise_density, rng, mean_noise_span_length)
        return (
            noise_span_to_unique_sentinel(tokens, mask, vocab_size),
            nonnoise_span_to_unique_sentinel(tokens, mask, vocab_size),
        )

    return _objective("span_corruption", fn)


def iid_replace_spans(noise_density: float = 0.15) -> Callable:
    """Returns "replace corrupted spans": i.i.d. noise tokens, consecutive ones merged into one sentinel."""

    def fn(tokens, vocab_size, regular, rng):
        mask = iid_noise_mask(len(tokens), noise_density, rng)
        return (
            noise_span_to_unique_sentinel(tokens, mask, vocab_size),
            nonnoise_span_to_unique_sentinel(tokens, mask, vocab_size),
        )

    return _objective("iid_replace_spans", fn)


def iid_drop_tokens(noise_density: float = 0.15) -> Callable:
    """Returns "drop corrupted tokens": i.i.d. noise tokens removed from inputs; targets are them."""

    def fn(tokens, vocab_size, regular, rng):
        mask = iid_noise_mask(len(tokens), noise_density, rng)
        return drop_noise_tokens(tokens, mask), drop_nonnoise_tokens(tokens, mask)

    return _objective("iid_drop_tokens", fn)


def bert_style(noise_density: float = 0.15, mask_prob: float = 0.8, random_prob: float = 0.1) -> Callable:
    """Returns BERT-style MLM: 15% of tokens corrupted (80% mask / 10% random / 10% kept); targets
    are the whole original text."""

    def fn(tokens, vocab_size, regular, rng):
        mask = iid_noise_mask(len(tokens), noise_density, rng)
        return bert_corruption(tokens, mask, vocab_size, regular, rng, mask_prob, random_prob), tokens

    return _objective("bert_style", fn)


def mass_style(noise_density: float = 0.15) -> Callable:
    """Returns MASS-style: like BERT-style with every corrupted token masked (no random swaps);
    targets are the original text."""

    def fn(tokens, vocab_size, regular, rng):
        mask = iid_noise_mask(len(tokens), noise_density, rng)
        return noise_token_to_sentinel(tokens, mask, vocab_size), tokens

    return _objective("mass_style", fn)


def deshuffling() -> Callable:
    """Returns deshuffling: inputs are the tokens in random order, targets the original order."""

    def fn(tokens, vocab_size, regular, rng):
        return rng.permutation(tokens).astype(np.int32), tokens

    return _objective("deshuffling", fn)


def prefix_lm(noise_density: float = 0.5) -> Callable:
    """Returns prefix language modeling: a random split; inputs the prefix, targets the rest."""

    def fn(tokens, vocab_size, regular, rng):
        mask = random_prefix_noise_mask(len(tokens), noise_density, rng)
        return drop_noise_tokens(tokens, mask), drop_nonnoise_tokens(tokens, mask)

    return _objective("prefix_lm", fn)


OBJECTIVES: dict[str, Callable[..., Callable]] = {
    "span_corruption": span_corruption,
    "iid_replace_spans": iid_replace_spans,
    "iid_drop_tokens": iid_drop_tokens,
    "bert_style": bert_style,
    "mass_style": mass_style,
    "deshuffling": deshuffling,
    "prefix_lm": prefix_lm,
}


def unsupervised_preprocessors(
    objective: str = "span_corruption",
    text_key: str = "text",
    *,
    default_inputs_length: int = 512,
    docs_per_group: int = 128,
    **objective_kwargs: float,
) -> list:
    """Returns the full pre-training preprocessor list for a text source, as T5 builds it:
    rekey text -> targets, tokenize, select_random_chunk(65536), concatenate 128 documents and split
    into raw chunks, apply `objective`, truncate and append EOS.

    The raw chunk length: for span corruption (and i.i.d. span replacement), the length from
    random_spans_helper so that inputs come out at exactly the inputs length; otherwise the inputs
    length minus 1 (room for EOS).
    """
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r}; pick one of {', '.join(OBJECTIVES)}")

    def raw_length(seq: Mapping[str, int] | None) -> int:
        inputs_length = (seq or {}).get("inputs", default_inputs_length)
        if objective in ("span_corruption", "iid_replace_spans"):
            density = float(objective_kwargs.get("noise_density", 0.15))
            mean = float(
                objective_kwargs.get(
                    "mean_noise_span_length", 1.0 if objective == "iid_replace_spans" else 3.0
                )
            )
            return random_spans_helper(inputs_length, density, mean, 1, 1)[0]
        return inputs_length - 1

    return [
        rekey({"inputs": None, "targets": text_key}),
        tokenize,
        select_random_chunk("targets", 65536),
        ConcatAndSplit("targets", raw_length, docs_per_group),
        OBJECTIVES[objective](**objective_kwargs),
        append_eos_after_trim,
    ]


def full_lm_preprocessors(
    text_key: str = "text", *, default_targets_length: int = 512, docs_per_group: int = 128
) -> list:
    """Returns language modeling on whole chunks (the paper's Table 2 LM; seqio's "c4_v220_full_lm"):
    text -> targets, tokenize, select_random_chunk(65536), concatenate 128 documents, split into chunks of
    the targets length minus 1, append EOS. No inputs: a decoder-only model learns every token."""

    def raw_length(seq: Mapping[str, int] | None) -> int:
        return (seq or {}).get("targets", default_targets_length) - 1

    return [
        rekey({"targets": text_key}),
        tokenize,
        select_random_chunk("targets", 65536),
        ConcatAndSplit("targets", raw_length, docs_per_group),
        append_eos_after_trim,
    ]
