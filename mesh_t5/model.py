"""T5Model: a config, its parameters (optionally laid out on a device mesh) and a vocabulary path."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mesh_t5 import hf, inference, layouts, losses, network, validate
from mesh_t5.config import DecodeOptions, T5Config
from mesh_t5.errors import UserError
from mesh_t5.vocab import Vocabulary, load_vocabulary

FORMATS = ("hf", "mesh_t5")


def _forward_logits(params: Any, batch: dict[str, jax.Array], config: T5Config) -> jax.Array:
    return network.forward(params, batch, config)


def _mean_loss(params: Any, batch: dict[str, jax.Array], config: T5Config) -> tuple[jax.Array, jax.Array]:
    logits = network.forward(params, batch, config)
    weights = batch.get("decoder_loss_weights")
    loss_sum, aux = losses.cross_entropy(logits, batch["decoder_target_tokens"], weights)
    return loss_sum, aux["weight_sum"]


class T5Model:
    """A T5-family network with its parameters; `logits` and `loss` jit once per input shape."""

    def __init__(
        self,
        config: T5Config,
        params: Any,
        vocab_path: str | None = None,
        layout: layouts.Layout | None = None,
        vocabulary: Vocabulary | None = None,
    ) -> None:
        self.config = config
        self.vocab_path = vocab_path
        # Loaded from vocab_path on first use (see `get_vocabulary`); a ByteVocabulary needs no file.
        self.vocabulary = vocabulary
        self.layout = layout
        if layout is not None:
            params = jax.device_put(params, layout.tree_shardings(network.param_axes(config)))
        else:
            params = jax.tree.map(jnp.asarray, params)
        self.params = params
        self._logits_fn = jax.jit(functools.partial(_forward_logits, config=config))
        self._loss_fn = jax.jit(functools.partial(_mean_loss, config=config))

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, mesh_shape: str | None = None, layout_rules: Any = None
    ) -> T5Model:
        """Returns the model in a Hugging Face T5 dir or a mesh_t5 model/training dir."""
        path = validate.input_dir(path, "model path", "pass a Hugging Face T5 dir or a mesh_t5 model dir")
        if not hf.is_hf_dir(path) and not os.path.isfile(os.path.join(path, "config.json")):
            raise UserError(
                f"model path {path} holds no config.json; pass a Hugging Face T5 dir or a mesh_t5 model dir"
            )
        if hf.is_hf_dir(path):
            config, params, vocab_path = hf.load_hf(path)
        else:
            from mesh_t5 import checkpoints

            config, params, vocab_path = checkpoints.load_model(path)
        layout = layouts.layout_for(mesh_shape, layout_rules, config, all_devices_by_default=False)
        return cls(config, params, vocab_path=vocab_path, layout=layout)

    @classmethod
    def init(
        cls, config: T5Config, seed: int = 0, mesh_shape: str | None = None, layout_rules: Any = None
    ) -> T5Model:
        """Returns a model with random T5-initialised weights (born sharded when a mesh is given)."""
        if not isinstance(config, T5Config):
            raise validate.ArgumentTypeError(
                "config must be a T5Config (e.g. mesh_t5.get_model_config('t5-small')); "
                f"got {type(config).__name__}"
            )
        validate.integer(seed, "seed", minimum=0)
        layout = layouts.layout_for(mesh_shape, layout_rules, config, all_devices_by_default=False)
        init = functools.partial(network.init_params, config)
        params = layouts.init_sharded(init, network.param_axes(config), layout, jax.random.PRNGKey(seed))
        return cls(config, params, layout=layout)

    # ------------------------------------------------------------------ computation

    def _run(self, fn: Any, batch: Mapping[str, Any]) -> Any:
        arrays = {k: jnp.asarray(np.asarray(v)) for k, v in batch.items() if v is not None}
        with layouts.use_layout(self.layout):
            return fn(self.params, arrays)

    def logits(self, encoder_input_tokens: Any, decoder_input_tokens: Any) -> np.ndarray:
        """Returns float32 logits [B, T, V] (teacher forcing); encoder_input_tokens None for decoder-only."""
        vocab_size = self.config.vocab_size
        decoder = validate.token_ids(decoder_input_tokens, "decoder_input_tokens", vocab_size)  # [B, T]
        batch: dict[str, Any] = {"decoder_input_tokens": decoder}
        if self.config.has_encoder:
            if encoder_input_tokens is None:
                raise UserError(
                    f"architecture={self.config.architecture} needs encoder_input_tokens; pass them first"
                )
            encoder = validate.token_ids(encoder_input_tokens, "encoder_input_tokens", vocab_size)  # [B, S]
            if encoder.shape[0] != decoder.shape[0]:
                raise UserError(
                    f"encoder_input_tokens has {encoder.shape[0]} rows but decoder_input_tokens "
                    f"{decoder.shape[0]}; pass one row of each per example"
                )
            batch["encoder_input_tokens"] = encoder
        return np.asarray(self._run(self._logits_fn, batch), np.float32)

    def loss(self, batch: Mapping[str, Any]) -> float:
        """Returns the mean token cross entropy of a feature batch (decoder_loss_weights, else targets > 0)."""
        loss_sum, weight_sum = self._run(self._loss_fn, batch)
        return float(loss_sum) / max(float(weight_sum), 1e-9)

    # ------------------------------------------------------------------ decoding and scoring

    def get_vocabulary(self) -> Vocabulary:
        """Returns the model's vocabulary (loaded from `vocab_path` on first use)."""
        if self.vocabulary is None:
            if not self.vocab_path:
                raise UserError(
                    "this model has no vocabulary (no spiece.model / vocab file beside it); pass "
                    "vocabulary=mesh_t5.vocab.SentencePieceVocabulary(path) or ByteVocabulary() to T5Model"
                )
            vocabulary = load_vocabulary(self.vocab_path)
            validate.vocabulary_fits(vocabulary, self.config.vocab_size, f"vocabulary {self.vocab_path}")
            self.vocabulary = vocabulary
        return self.vocabulary

    def generate_tokens(
        self,
        encoder_input_tokens: Any,
        max_decode_length: int = 64,
        beam_size: int = 1,
        alpha: float = 0.6,
        **sampling: Any,
    ) -> np.ndarray:
        """Returns decoded ids [B, L] int32 without the start token, PAD after EOS (top beam).

        `sampling`: the other `DecodeOptions` fields, temperature=0.0 (greedy; > 0 samples), top_k=0,
        top_p=1.0, seed=0. For decoder-only and prefix-LM models the inputs are the prompt.
        """
        options = DecodeOptions(
            max_decode_length=max_decode_length, beam_size=beam_size, alpha=alpha, **sampling
        )
        return inference.generate_tokens(
            self.config, self.params, encoder_input_tokens, options, layout=self.layout
        )

    def generate(
        self, texts: Sequence[str], beam_size: int = 1, alpha: float = 0.6, max_decode_length: int = 64, *,
        max_input_length: int = 512, batch_size: int = 32, **sampling: Any,
    ) -> list[str]:  # fmt: skip
        """Returns one decoded string per input text, decoding batch_size texts at a time.

        Inputs longer than max_input_length tokens are truncated with a counted warning; `sampling`
        as in `generate_tokens`.
        """
        options = DecodeOptions(
            max_decode_length=max_decode_length, beam_size=beam_size, alpha=alpha, **sampling
        )
        texts = validate.strings(texts, "texts")
        return inference.generate(
            self.config, self.params, self.get_vocabulary(), texts, options,
            max_input_length=max_input_length, batch_size=batch_size, layout=self.layout,
        )  # fmt: skip

    def score(
        self, inputs: Sequence[str], targets: Sequence[str], *, max_input_length: int = 512,
        max_target_length: int = 512, batch_size: int = 32,
    ) -> np.ndarray:  # fmt: skip
        """Returns [B] float32 log-likelihoods of each target text (with EOS) given its input text."""
        inputs, targets = validate.strings(inputs, "inputs"), validate.strings(targets, "targets")
        validate.same_length(inputs, targets, "inputs", "targets")
        return inference.score(
            self.config, self.params, self.get_vocabulary(), inputs, targets,
            max_input_length=max_input_length, max_target_length=max_target_length, batch_size=batch_size,
            layout=self.layout,
        )  # fmt: skip

    def export_saved_model(
        self, path: str | os.PathLike, beam_size: int = 1, max_decode_length: int = 64, *,
        alpha: float = 0.6, max_input_length: int = 512, platforms: Sequence[str] | None = None,
        vocabulary: Vocabulary | None = None,
    ) -> str:  # fmt: skip
        """Writes a TensorFlow SavedModel (strings in, strings and scores out); returns its path.

        See `mesh_t5.export.export_saved_model`; `vocabulary` defaults to the model's own.
        """
        from mesh_t5 import export

        options = DecodeOptions(max_decode_length=max_decode_length, beam_size=beam_size, alpha=alpha)
        return export.export_saved_model(
            self, path, options, max_input_length=max_input_length, vocabulary=vocabulary, platforms=platforms
        )

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, path: str | os.PathLike, format: str = "hf") -> None:
        """Writes the model as a Hugging Face T5 dir ("hf") or a mesh_t5 model dir ("mesh_t5")."""
        path = validate.output_dir(path, "path", empty=False)
        validate.one_of(format, "format", FORMATS)
        if os.path.isdir(path) and os.listdir(path) and not _is_export(path, format):
            raise UserError(
                f"{path} is not empty and is not a previous {format} export; pick a new or empty directory"
            )
        if format == "hf":
            hf.save_hf(path, self.config, self.params, self.vocab_path)
        else:
            from mesh_t5 import checkpoints

            checkpoints.save_model(path, self.config, self.params, self.vocab_path, overwrite=True)


def _is_export(path: str, format: str) -> bool:
    if format == "hf":
        return hf.is_hf_dir(path)
    return os.path.isfile(os.path.join(path, "config.json")) and os.path.isdir(os.path.join(path, "params"))
