"""Inference over a network's parameters: generate token ids or text, score targets, ensembles.

Plain functions of (config, params, ...) that `T5Model` wraps; how to decode is one `DecodeOptions`.
Decoding runs the cached decoder (`network.init_decode_cache` / `prefill` / `decode_step`) through
`mesh_t5.decoding`; each (config, options, layout) gets one jitted function, which jit caches per
input shape. `decode` and `log_likelihood` are the traced functions (the SavedModel export converts them).

Decoder-only and prefix-LM models read `encoder_input_tokens` as the prompt: the decoder sequence
is [0, prompt..., continuation...] as the feature converters build it in training, and the
returned ids are the continuation only.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mesh_t5 import decoding, layouts, network, validate
from mesh_t5.config import DecodeOptions, T5Config
from mesh_t5.errors import UserError
from mesh_t5.vocab import Vocabulary

log = logging.getLogger("mesh_t5.inference")

Params = Any
GREEDY = DecodeOptions()


# ----------------------------------------------------------------------------- traced pieces


def _length(tokens: jax.Array, pad_id: int) -> jax.Array:
    """Returns [B]: one past the last non-pad position of each row of tokens [B, T]."""
    return jnp.max(jnp.arange(1, tokens.shape[1] + 1)[None] * (tokens != pad_id), axis=1, initial=0)


def _start(params: Params, config: T5Config, inputs: jax.Array, max_decode_length: int):
    """Returns (cache, start_tokens [B]) ready for the first decode_step."""
    if config.has_encoder:
        cache = network.init_decode_cache(
            params, config, encoder_input_tokens=inputs, max_decode_length=max_decode_length
        )
        start = jnp.full((inputs.shape[0],), config.decoder_start_token_id, jnp.int32)
        return cache, start
    # Prompt = [start, inputs...] (right-padded); its length counts up to the last non-pad input.
    batch, s = inputs.shape
    prompt = jnp.concatenate([jnp.full((batch, 1), config.decoder_start_token_id, jnp.int32), inputs], axis=1)
    lengths = _length(inputs, config.pad_id) + 1  # [B]
    cache = network.init_decode_cache(
        params, config, batch_size=batch, max_decode_length=s + 1 + max_decode_length
    )
    return network.prefill(params, cache, prompt, lengths, config)


def decode(
    params_list: tuple[Params, ...],
    inputs: jax.Array,
    rng: jax.Array,
    *,
    config: T5Config,
    options: DecodeOptions,
) -> tuple[jax.Array, jax.Array]:
    """Returns (tokens [B, L], scores [B]) decoded from inputs [B, S] by one model, or by the ensemble of
    params_list (each token drawn from the mean of the members' log-probabilities).

    Traceable; `options` is static and its seed unused (sampling draws from `rng`)."""
    caches, fns = [], []
    pack = network.packs_decoder_weights(config, inputs.shape[0])
    for params in params_list:
        params = network.unstack_decoder_layers(params, config, pack=pack)  # once, outside the decode loop
        cache, start = _start(params, config, inputs, options.max_decode_length)
        caches.append(cache)
        fns.append(functools.partial(_step, params, config=config))
    if len(fns) == 1:
        fn, cache = fns[0], caches[0]
    else:
        fn, cache = decoding.ensemble_tokens_to_logits(fns), tuple(caches)
    common = dict(
        batch_size=inputs.shape[0], max_decode_length=options.max_decode_length, start_tokens=start,
        eos_id=config.eos_id, cache_batch_axis=network.CACHE_BATCH_AXIS,
    )  # fmt: skip
    if options.beam_size > 1:
        tokens, scores = decoding.beam_search(
            fn, cache, beam_size=options.beam_size, alpha=options.alpha, num_decodes=1,
            reorder=beam_reorder(inputs.shape[0]), **common,
        )  # fmt: skip
        return tokens[:, 0], scores[:, 0]
    if options.temperature > 0:
        return decoding.temperature_sample(
            fn,
            cache,
            rng,
            temperature=options.temperature,
            top_k=options.top_k,
            top_p=options.top_p,
            **common,
        )
    return decoding.greedy_decode(fn, cache, **common)


def beam_reorder(batch_size: Any) -> str:
    """How beam search reorders the decode cache (decoding.beam_search's `reorder`) for a decode traced
    now: "rows" (copy only the rows whose beam changed) on the CPU backend with no layout in force
    and a static batch (it sizes a `nonzero`; an exported model's batch is symbolic), else "gather".
    t5-small, batch 8, 256 inputs, beam 4, 64 new: 6 of 32 rows move per step on average."""
    return "rows" if layouts.one_cpu_device(batch_size) else "gather"


def _step(params: Params, last_tokens: jax.Array, cache: Any, *, config: T5Config):
    return network.decode_step(params, cache, last_tokens, config)


def _decoder_weights(params: Params, *, config: T5Config) -> tuple[Any, jax.Array | None]:
    """The new arrays of network.unstack_decoder_layers(params): per-layer trees and the output matrix
    (both packed for the native kernel where it applies), only those: a jitted call returns copies of
    the arrays it passes through unchanged."""
    # Prepared params decode concrete batches (generate_ids, evaluation): a static batch size.
    pack = network.packs_decoder_weights(config, batch_size=1)
    prepared = network.unstack_decoder_layers(params, config, pack=pack)
    return prepared["decoder"]["layers"], prepared.get("decode_logits_kernel")


def prepare_for_decoding(
    config: T5Config, params_list: Sequence[Params], *, layout: layouts.Layout | None = None
) -> list[Params]:
    """Returns params_list with each decoder's layers unstacked (`network.unstack_decoder_layers`),
    for several decode calls with the same params.

    Each decode otherwise unstacks inside its own jitted call, copying every decoder weight (and, with
    tied embeddings, transposing the output matrix) again: ~100 ms of a 2.4 s greedy decode at
    t5-small, batch 8 x 256 inputs, 64 new tokens (2 cores). Decoding the prepared params gives the
    same tokens 1.07x faster (beam 4: 1.03x). The result shares every other array with the input,
    so while it lives the decoder's weights are held twice, as each decode briefly holds them now.
    """
    fn = _jitted(_decoder_weights, _layout_key(layout), config=config)
    out = []
    for params in params_list:
        if isinstance(network.decoder_layers(params, config), tuple):  # prepared already
            out.append(params)
            continue
        per_layer, kernel = _run(fn, layout, params)
        prepared = {**params, "decoder": {**params["decoder"], "layers": per_layer}}
        if kernel is not None:
            prepared["decode_logits_kernel"] = kernel
        out.append(prepared)
    return out


def _layout_key(layout: layouts.Layout | None) -> Any:
    return None if layout is None else (layout.mesh, tuple(sorted(layout.rules.items())))


def decode_compiler_options() -> dict[str, str] | None:
    """XLA options for compiling a decode (None: the defaults), for the default backend.

    On CPU, dots go to XLA's own Eigen-based library instead of YNNPACK fusions. A decode step
    multiplies a few rows (batch, or batch x beams) by every decoder weight, and at few rows
    YNNPACK runs far below Eigen: [8, 512] x [512, 512] in a 64-step loop, 161 vs 99 us per
    product (2 cores, idle); the encoder run inside the same decode was also faster (0.83 vs
    1.05 s, t5-small, batch 8 x 256). Training keeps the default: its dots have thousands of rows.
    On other backends the option does not apply.
    """
    if jax.default_backend() != "cpu":
        return None
    return {"xla_cpu_experimental_ynn_fusion_type": ""}


_JITTED: dict[Any, Any] = {}


def _jitted(fn: Any, key: Any, compiler_options: dict[str, str] | None = None, **static: Any) -> Any:
    """One jax.jit per (function, static options, layout); jit itself caches per input shape."""
    full_key = (fn.__name__, key, tuple(sorted(static.items())))
    if full_key not in _JITTED:
        _JITTED[full_key] = jax.jit(functools.partial(fn, **static), compiler_options=compiler_options)
    return _JITTED[full_key]


def _run(fn: Any, layout: layouts.Layout | None, *args: Any) -> Any:
    with layouts.use_layout(layout):
        return fn(*args)


# ----------------------------------------------------------------------------- token-level API


def generate_tokens_and_scores(
    config: T5Config,
    params_list: Sequence[Params],
    encoder_input_tokens: Any,
    options: DecodeOptions = GREEDY,
    *,
    layout: layouts.Layout | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (tokens [B, L] int32, scores [B] float32) decoded by one model or an ensemble.

    Scores are summed log-probabilities of the tokens up to EOS (beam search: divided by the
    length penalty ((5 + len) / 6) ** alpha). `layout`: the `layouts.Layout` the params are laid out on.
    """
    if not isinstance(options, DecodeOptions):
        raise validate.ArgumentTypeError(f"options must be a DecodeOptions; got {type(options).__name__}")
    if not params_list:
        raise UserError("no parameters to decode with; pass at least one set of params")
    inputs = validate.token_ids(encoder_input_tokens, "encoder_input_tokens", config.vocab_size)  # [B, S]
    # The seed enters as the traced rng: one compiled function serves every seed.
    fn = _jitted(
        decode,
        _layout_key(layout),
        compiler_options=decode_compiler_options(),
        config=config,
        options=dataclasses.replace(options, seed=0),
    )
    tokens, scores = _run(fn, layout, tuple(params_list), jnp.asarray(inputs), jax.random.key(options.seed))
    return np.asarray(tokens, np.int32), np.asarray(scores, np.float32)


def generate_tokens(
    config: T5Config,
    params: Params,
    encoder_input_tokens: Any,
    options: DecodeOptions = GREEDY,
    *,
    layout: layouts.Layout | None = None,
) -> np.ndarray:
    """Returns decoded ids [B, L] int32 without the start token, PAD after EOS (top beam if beam_size > 1).

    `params` may be a list of several models' params of one config: their ensemble decodes.
    """
    params_list = params if isinstance(params, list) else [params]
    return generate_tokens_and_scores(config, params_list, encoder_input_tokens, options, layout=layout)[0]


def log_likelihood(params: Params, inputs: jax.Array, targets: jax.Array, *, config: T5Config) -> jax.Array:
    """Returns [B] summed log-probabilities of targets [B, T] up to their first EOS (else their last
    non-pad token): a PAD the model emitted mid-sequence counts, as it does in decoding's scores.

    Traceable. `params` may be a tuple of several models' params (an ensemble): each token's log-probability
    is then that of the renormalised mean of the members' log-probabilities, the distribution ensemble
    decoding (decoding.ensemble_tokens_to_logits) draws from."""
    t = targets.shape[1]
    t_pos = jnp.arange(t)[None]  # [1, T]
    is_eos = targets == config.eos_id
    after_eos = (jnp.cumsum(is_eos, axis=1) - is_eos) > 0
    t_weights = (t_pos < _length(targets, config.pad_id)[:, None]) & ~after_eos  # [B, T]
    if config.has_encoder:
        batch = {"encoder_input_tokens": inputs}
        seq, weights = targets, t_weights
    else:
        # Decoder sequence = inputs (up to their last non-pad token) then targets, per row.
        n_in = _length(inputs, config.pad_id)[:, None]  # [B, 1]
        pos = jnp.arange(inputs.shape[1] + t)[None]  # [1, S+T]
        t_idx = jnp.clip(pos - n_in, 0, t - 1)  # [B, S+T]
        in_idx = jnp.broadcast_to(jnp.clip(pos, 0, inputs.shape[1] - 1), t_idx.shape)
        in_target = (pos >= n_in) & (pos - n_in < t)
        seq = jnp.where(
            pos < n_in,
            jnp.take_along_axis(inputs, in_idx, axis=1),
            jnp.where(in_target, jnp.take_along_axis(targets, t_idx, axis=1), config.pad_id),
        )  # [B, S+T]
        weights = in_target & jnp.take_along_axis(t_weights, t_idx, axis=1)
        batch = {}
        if config.architecture == "prefix_lm":
            batch["decoder_causal_attention"] = (pos <= n_in).astype(jnp.int32)
    batch["decoder_target_tokens"] = seq
    batch["decoder_input_tokens"] = jnp.pad(seq, ((0, 0), (1, 0)))[:, :-1]  # shift right, start = PAD
    members = params if isinstance(params, tuple) else (params,)
    # [B, T, V] per member (network.forward gives the logits)
    member_lps = [jax.nn.log_softmax(network.forward(p, batch, config), axis=-1) for p in members]
    if len(member_lps) == 1:
        log_probs = member_lps[0]
    else:
        log_probs = jax.nn.log_softmax(jnp.mean(jnp.stack(member_lps), axis=0), axis=-1)  # [B, T, V]
    token_lp = jnp.take_along_axis(log_probs, seq[:, :, None], axis=-1)[:, :, 0]  # [B, T]
    return jnp.sum(jnp.where(weights, token_lp, 0.0), axis=1)


def score_tokens(
    config: T5Config,
    params: Params,
    encoder_input_tokens: Any,
    target_tokens: Any,
    *,
    layout: layouts.Layout | None = None,
) -> np.ndarray:
    """Returns [B] float32 log-likelihoods of target_tokens [B, T] (with EOS, PAD-padded) given the inputs.

    Tokens count up to the first EOS (or the last non-pad one), so decoded outputs score as decoding did.
    `params` may be a list of several models' params: their ensemble's log-likelihood (see `log_likelihood`).
    """
    inputs = validate.token_ids(encoder_input_tokens, "encoder_input_tokens", config.vocab_size)  # [B, S]
    targets = validate.token_ids(target_tokens, "target_tokens", config.vocab_size)  # [B, T]
    if inputs.shape[0] != targets.shape[0]:
        raise UserError(f"{inputs.shape[0]} inputs but {targets.shape[0]} targets; pass one target per input")
    fn = _jitted(log_likelihood, _layout_key(layout), config=config)
    if isinstance(params, list):  # an ensemble
        params = params[0] if len(params) == 1 else tuple(params)
    return np.asarray(_run(fn, layout, params, jnp.asarray(inputs), jnp.asarray(targets)), np.float32)


# ----------------------------------------------------------------------------- batches of id lists and texts


def _bucket(n: int) -> int:
    """Pads lengths to a power of two (>= 8): a handful of compiled shapes instead of one per batch."""
    return max(8, 1 << max(0, n - 1).bit_length())


def pad_ids(
    rows: Sequence[Sequence[int]], max_length: int, *, eos_id: int = 1, what: str = "inputs", rows_to: int = 0
) -> np.ndarray:
    """Returns [max(len(rows), rows_to), bucket] int32: id rows (each ending in EOS) right-padded with 0.

    Rows longer than max_length are cut to it keeping their final EOS (seqio's append_eos_after_trim),
    with one warning counting them. Extra rows (up to rows_to) hold just EOS, a valid empty input,
    so that every batch of a run has one shape.
    """
    if max_length < 1:
        raise UserError(f"max {what} length {max_length} must be >= 1")
    rows = [list(map(int, r)) for r in rows]
    cut = 0
    for i, r in enumerate(rows):
        if len(r) > max_length:
            cut += 1
            rows[i] = [*r[: max_length - 1], eos_id if r[-1] == eos_id else r[max_length - 1]]
    if cut:
        log.warning(
            "%d of %d %s longer than %d tokens (with EOS) were truncated", cut, len(rows), what, max_length
        )
    width = min(_bucket(max((len(r) for r in rows), default=1)), max_length)
    out = np.zeros((max(len(rows), rows_to), max(width, 1)), np.int32)
    out[len(rows) :, 0] = eos_id
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def tokenize(vocab: Vocabulary, texts: Sequence[str], what: str = "inputs") -> list[list[int]]:
    """Returns each text's ids followed by EOS (empty strings give just EOS)."""
    rows = []
    for text in texts:
        if not isinstance(text, str):
            raise UserError(f"{what} must be strings; got {type(text).__name__}")
        rows.append([*vocab.encode(text), vocab.eos_id])
    return rows


def _batches(n: int, batch_size: int | None) -> list[tuple[int, int]]:
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch_size={batch_size} must be >= 1")
    size = batch_size or n
    return [(i, min(i + size, n)) for i in range(0, n, max(size, 1))]


def generate_ids(
    config: T5Config,
    params_list: Sequence[Params],
    inputs: Sequence[Sequence[int]],
    options: DecodeOptions = GREEDY,
    *,
    max_input_length: int = 512,
    batch_size: int | None = 32,
    layout: layouts.Layout | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (ids [N, L] int32, scores [N]) for N input id rows (each ending in EOS), decoding
    batch_size rows at a time; the last batch is padded to the same shape and trimmed."""
    ids, scores = [], []
    batches = _batches(len(inputs), batch_size)
    if len(batches) > 1:  # unstack once for all batches, not inside each one's decode
        params_list = prepare_for_decoding(config, params_list, layout=layout)
    for lo, hi in batches:
        batch = pad_ids(inputs[lo:hi], max_input_length, eos_id=config.eos_id, rows_to=batch_size or 0)
        out, sc = generate_tokens_and_scores(config, params_list, batch, options, layout=layout)
        ids.append(out[: hi - lo])
        scores.append(sc[: hi - lo])
    if not ids:
        return np.zeros((0, options.max_decode_length), np.int32), np.zeros(0, np.float32)
    return np.concatenate(ids), np.concatenate(scores)


def score_ids(
    config: T5Config,
    params: Params,
    inputs: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    *,
    max_input_length: int = 512,
    max_target_length: int = 512,
    batch_size: int | None = 32,
    layout: layouts.Layout | None = None,
) -> np.ndarray:
    """Returns [N] float32 log-likelihoods of target id rows given input id rows (both ending in EOS)."""
    if len(inputs) != len(targets):
        raise UserError(f"{len(inputs)} inputs but {len(targets)} targets; pass one target per input")
    out = []
    for lo, hi in _batches(len(inputs), batch_size):
        rows = batch_size or 0
        enc = pad_ids(inputs[lo:hi], max_input_length, eos_id=config.eos_id, rows_to=rows)
        tgt = pad_ids(targets[lo:hi], max_target_length, eos_id=config.eos_id, what="targets", rows_to=rows)
        out.append(score_tokens(config, params, enc, tgt, layout=layout)[: hi - lo])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def generate(
    config: T5Config, params: Params, vocab: Vocabulary, texts: Sequence[str],
    options: DecodeOptions = GREEDY, *, max_input_length: int = 512, batch_size: int | None = 32,
    layout: layouts.Layout | None = None,
) -> list[str]:  # fmt: skip
    """Returns one decoded string per input text (tokenized with EOS; empty strings allowed), decoding
    batch_size texts at a time; inputs longer than max_input_length are truncated with a counted warning."""
    ids, _ = generate_ids(
        config, [params], tokenize(vocab, texts), options, max_input_length=max_input_length,
        batch_size=batch_size, layout=layout,
    )  # fmt: skip
    return vocab.decode_batch(ids.tolist())


def score(
    config: T5Config, params: Params, vocab: Vocabulary, inputs: Sequence[str], targets: Sequence[str], *,
    max_input_length: int = 512, max_target_length: int = 512, batch_size: int | None = 32,
    layout: layouts.Layout | None = None,
) -> np.ndarray:  # fmt: skip
    """Returns [B] float32 log-likelihoods of each target text (tokens + EOS) given its input text."""
    return score_ids(
        config, params, tokenize(vocab, inputs), tokenize(vocab, targets, "targets"),
        max_input_length=max_input_length, max_target_length=max_target_length, batch_size=batch_size,
        layout=layout,
    )  # fmt: skip
