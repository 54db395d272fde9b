"""TensorFlow SavedModel export: strings in, strings out, servable by TF Serving without Python.

The JAX decode loop (encoder, KV-cache decoder, greedy or beam search) is converted with
`jax2tf.convert` with a polymorphic batch dimension; the parameters are captured as
`tf.Variable`s (so the graph does not carry them as constants); tokenization and
detokenization run inside the graph with tensorflow-text's SentencepieceTokenizer (the
vocabulary's model proto, sentinels included) or with byte string ops for the byte
vocabulary. Signatures:

    serving_default(inputs: tf.string [B]) -> {"outputs": tf.string [B], "scores": tf.float32 [B]}
    score(inputs: tf.string [B], targets: tf.string [B]) -> {"scores": tf.float32 [B]}

`scores` of serving_default are the decoder's summed log-probabilities of the output tokens
(divided by the length penalty under beam search); `score` gives the log-likelihood of the
targets given the inputs. Loading needs `import tensorflow_text` (it registers the
SentencePiece ops) and nothing from JAX or mesh_t5.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mesh_t5 import inference, validate
from mesh_t5.config import DecodeOptions, T5Config
from mesh_t5.errors import UserError
from mesh_t5.vocab import ByteVocabulary, SentencePieceVocabulary, Vocabulary

EOS_ID = 1
PAD_ID = 0


class ExportError(UserError):
    """The model cannot be exported as asked; one line naming what to change."""


# ----------------------------------------------------------------------------- the JAX side


ENSEMBLE_KEY = "ensemble_member_{}"


def _members(params: Any) -> tuple[Any, ...]:
    """Returns the member params of an export: {"ensemble_member_<i>": params} for an ensemble (a dict,
    because TF's tracking rewraps tuples), else the one model's params."""
    if ENSEMBLE_KEY.format(0) in params:
        return tuple(params[ENSEMBLE_KEY.format(i)] for i in range(len(params)))
    return (params,)


def make_decode_fn(config: T5Config, options: DecodeOptions = inference.GREEDY):
    """Returns fn(params, encoder_input_tokens [B, S] int32) -> (tokens [B, L] int32, scores [B] float32).

    The very function `inference.generate` runs (greedy for beam_size=1, else the best beam), so
    the SavedModel decodes as the JAX side does; pure and traceable with a symbolic B.
    """

    def decode(params: Any, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        rng = jax.random.PRNGKey(options.seed)  # unused: an export decodes greedily or by beam search
        return inference.decode(_members(params), tokens, rng, config=config, options=options)

    return decode


def make_score_fn(config: T5Config):
    """Returns fn(params, inputs [B, S], targets [B, T]) -> [B] log-likelihood of targets up to their EOS."""

    def score(params: Any, inputs: jax.Array, targets: jax.Array) -> jax.Array:
        members = _members(params)
        return inference.log_likelihood(
            members if len(members) > 1 else members[0], inputs, targets, config=config
        )

    return score


# ----------------------------------------------------------------------------- the vocabulary


class _TextOps:
    """Tokenize / detokenize with TF ops only (no tf.data, no py_function), mirroring mesh_t5.vocab."""

    def __init__(self, vocab: Vocabulary, model_vocab_size: int):
        import tensorflow as tf

        self.vocab = vocab
        self.model_vocab_size = model_vocab_size
        if isinstance(vocab, SentencePieceVocabulary):
            import tensorflow_text as tf_text

            self.sp = tf_text.SentencepieceTokenizer(model=vocab.sp_model_bytes, out_type=tf.int32)
        elif isinstance(vocab, ByteVocabulary):
            self.sp = None
            # Every id's text: bytes b+3, then sentinels rendered as vocab.decode renders them.
            pieces = [b""] * model_vocab_size
            for b in range(256):
                if b + 3 < model_vocab_size:
                    pieces[b + 3] = bytes([b])
            for i in range(vocab.extra_ids):
                if vocab.extra_id(i) < model_vocab_size:
                    pieces[vocab.extra_id(i)] = f"<extra_id_{i}>".encode()
            self.byte_pieces = tf.constant(pieces, tf.string)  # [V]
        else:
            raise ExportError(
                f"cannot export vocabulary {vocab!r}; use SentencePieceVocabulary or ByteVocabulary"
            )

    def tokenize(self, texts, length: int):
        """Returns int32 [B, length]: ids (as vocab.encode), cut to length-1, then EOS, then PAD."""
        import tensorflow as tf

        if self.sp is not None:
            ids = self.sp.tokenize(texts)  # ragged [B, (n)]
        else:
            ids = self._byte_ids(texts)
        ids = ids[:, : length - 1]
        eos = tf.ones_like(ids[:, :1].to_tensor(shape=[None, 1]))  # [B, 1]
        ids = tf.concat([ids, tf.RaggedTensor.from_tensor(eos)], axis=1)
        return ids.to_tensor(PAD_ID, shape=[None, length])

    def _byte_ids(self, texts):
        """Returns ragged [B, (n)] int32: UTF-8 bytes + 3, with `<extra_id_i>` markers as sentinel ids."""
        import tensorflow as tf
        import tensorflow_text as tf_text

        marker = r"<extra_id_[0-9]{1,6}>"
        pieces = tf_text.regex_split(texts, marker, keep_delim_regex_pattern=marker)  # [B, (P)] strings
        flat = pieces.flat_values  # [P]
        is_marker = tf.strings.regex_full_match(flat, marker)
        number = tf.strings.to_number(
            tf.where(is_marker, tf.strings.regex_replace(flat, "[^0-9]", ""), "0"), tf.int32
        )
        # As Vocabulary.encode: a marker past this vocabulary's extra ids stays plain text.
        sentinel = is_marker & (number < self.vocab.extra_ids)  # [P]
        chars = tf.strings.bytes_split(tf.where(sentinel, "\x00", flat))  # [P, (n)]: one byte per sentinel
        byte_ids = tf.cast(tf.io.decode_raw(chars.flat_values, tf.uint8)[:, 0], tf.int32) + 3  # [N]
        row = chars.value_rowids()  # [N] piece of each byte
        values = tf.where(
            tf.gather(sentinel, row), self.vocab.vocab_size - 1 - tf.gather(number, row), byte_ids
        )
        return pieces.with_flat_values(chars.with_flat_values(values)).merge_dims(1, 2)  # [B, (n)]

    def detokenize(self, ids):
        """Returns tf.string [B]: ids [B, L] up to the first EOS, PAD dropped (as vocab.decode)."""
        import tensorflow as tf

        before_eos = tf.cumsum(tf.cast(tf.equal(ids, EOS_ID), tf.int32), axis=1, exclusive=True) == 0
        is_eos = tf.equal(ids, EOS_ID)
        keep = before_eos & ~is_eos & tf.not_equal(ids, PAD_ID)
        kept = tf.ragged.boolean_mask(ids, keep)  # ragged [B, (n)]
        if self.sp is not None:
            # Ids past the proto's pieces (a model vocab padded beyond the vocabulary) read as UNK.
            safe = tf.where(kept.flat_values < self.vocab.vocab_size, kept.flat_values, self.vocab.unk_id)
            return self.sp.detokenize(kept.with_flat_values(safe))
        safe = tf.clip_by_value(kept.flat_values, 0, self.model_vocab_size - 1)
        text = tf.strings.reduce_join(kept.with_flat_values(tf.gather(self.byte_pieces, safe)), axis=1)
        # As ByteVocabulary: bytes that do not form valid UTF-8 (a cut character) are dropped.
        return tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="ignore")


# ----------------------------------------------------------------------------- the SavedModel


def _top_k_by_sort(operand: jax.Array, *, k: int, axis: int = -1) -> list[jax.Array]:
    """lax.top_k's result (values, indices; lower index first on ties) from a stable sort."""
    x = jnp.moveaxis(operand, axis, -1)  # [..., N]
    idx = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)  # [..., N]
    neg, order = jax.lax.sort((-x, idx), dimension=x.ndim - 1, num_keys=1, is_stable=True)
    return [jnp.moveaxis(-neg[..., :k], -1, axis), jnp.moveaxis(order[..., :k], -1, axis)]


@contextlib.contextmanager
def _portable_top_k() -> Iterator[None]:
    """Lowers lax.top_k through a sort while exporting, restoring JAX's own rule afterwards.

    JAX 0.10 lowers top_k to a StableHLO `composite` that TensorFlow 2.21's XlaCallModule
    cannot deserialize; sort is understood by both (beam search uses top_k).
    """
    from jax._src.interpreters import mlir
    from jax._src.lax import lax as lax_internal

    prim = lax_internal.top_k_p
    saved = mlir._lowerings.get(prim)
    mlir.register_lowering(prim, mlir.lower_fun(_top_k_by_sort, multiple_results=True))
    try:
        yield
    finally:
        if saved is None:
            mlir._lowerings.pop(prim, None)
        else:
            mlir._lowerings[prim] = saved


# The platforms jax2tf can serialize for (`native_serialization_platforms`).
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def check_output_dir(path: str) -> None:
    """Raises ExportError unless `path` is a new or empty writable directory (an export never overwrites)."""
    try:
        validate.output_dir(path, "output dir")
    except UserError as e:
        raise ExportError(str(e)) from None


def check_arguments(options: DecodeOptions, max_input_length: int, platforms: Any) -> tuple[str, ...] | None:
    """Raises ExportError for settings no export can use; returns the platforms as a tuple (or None)."""
    try:
        if options.temperature > 0:
            raise UserError(
                f"temperature={options.temperature}: an export decodes greedily or by beam search"
            )
        validate.integer(max_input_length, "max_input_length", minimum=2)
        if platforms is None:
            return None
        platforms = (platforms,) if isinstance(platforms, str) else tuple(platforms)
        if not platforms:
            raise UserError("platforms is empty; give e.g. cpu,tpu or leave it unset for this platform")
        for platform in platforms:
            validate.one_of(platform, "platform", PLATFORMS)
        return platforms
    except UserError as e:
        raise ExportError(str(e)) from None


def export_saved_model(
    model: Any, path: str | os.PathLike, options: DecodeOptions = inference.GREEDY, *,
    max_input_length: int = 512, vocabulary: Vocabulary | None = None, platforms: Sequence[str] | None = None,
    ensemble: Sequence[Any] = (),
) -> str:  # fmt: skip
    """Writes a TF SavedModel of `model` (a T5Model) and returns its path.

    It decodes as `options` say (greedy or beam search), inputs cut to max_input_length tokens with EOS.
    `ensemble`: more models of the same config; the SavedModel then decodes and scores with the mean of
    all members' per-token log-probabilities (the paper's ensembles, Table 13).

    `platforms` (e.g. ("cpu", "cuda", "tpu")) are the ones the converted computation may run on;
    the default is the platform exporting.
    """
    path = os.fspath(path)
    check_output_dir(path)
    platforms = check_arguments(options, max_input_length, platforms)
    config: T5Config = model.config
    vocab = vocabulary or model.get_vocabulary()
    try:
        validate.vocabulary_fits(vocab, config.vocab_size, "the vocabulary")
    except UserError as e:
        raise ExportError(str(e)) from None
    import tensorflow as tf  # after the checks: importing TensorFlow takes seconds
    from jax.experimental import jax2tf

    text = _TextOps(vocab, config.vocab_size)
    for other in ensemble:
        if other.config != config:
            raise ExportError(
                "the ensemble's models have different configs; ensemble models of one architecture"
            )
    members = [
        jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), m.params)
        for m in (model, *ensemble)
    ]
    params = members[0] if len(members) == 1 else {ENSEMBLE_KEY.format(i): m for i, m in enumerate(members)}
    convert = dict(
        with_gradient=False, native_serialization_platforms=tuple(platforms) if platforms else None
    )
    decode_tf = jax2tf.convert(
        make_decode_fn(config, options),
        polymorphic_shapes=[None, "(b, _)"],
        **convert,
    )
    score_tf = jax2tf.convert(make_score_fn(config), polymorphic_shapes=[None, "(b, _)", "(b, _)"], **convert)

    module = tf.Module()
    module.params = tf.nest.map_structure(lambda x: tf.Variable(x, trainable=False), params)
    if text.sp is not None:
        module.tokenizer = text.sp  # tracked, so its SentencePiece resource is saved with the model

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")], autograph=False)
    def serve(inputs):
        tokens = text.tokenize(inputs, max_input_length)  # [B, S]
        ids, scores = decode_tf(module.params, tokens)  # [B, L], [B]
        return {"outputs": text.detokenize(ids), "scores": scores}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="inputs"),
            tf.TensorSpec([None], tf.string, name="targets"),
        ],
        autograph=False,
    )
    def score(inputs, targets):
        return {
            "scores": score_tf(
                module.params,
                text.tokenize(inputs, max_input_length),
                text.tokenize(targets, options.max_decode_length),
            )
        }

    module.serve, module.score = serve, score
    with _portable_top_k():  # tracing (and so lowering) happens when the signatures are saved
        tf.saved_model.save(module, path, signatures={"serving_default": serve, "score": score})
    return path
