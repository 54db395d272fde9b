"""T5Config: the hyper-parameters of one T5-family network, and the paper's named sizes; DecodeOptions."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from mesh_t5.errors import UserError

ARCHITECTURES = ("encoder_decoder", "shared_encoder_decoder", "decoder_only", "prefix_lm")
FEED_FORWARD_PROJ = ("relu", "gated-gelu", "gelu", "gated-relu")
REMAT_POLICIES = ("none", "full", "minimal", "dots")


class ConfigError(UserError):
    """A configuration value is invalid; the message is one line naming what to change."""


# Annotation (a string: `from __future__ import annotations`) -> (accepted types, what to say).
_FIELD_KINDS = {
    "int": (numbers.Integral, "an integer"),
    "float": (numbers.Real, "a number"),
    "bool": (bool, "True or False"),
    "str": (str, "a string"),
}


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyper-parameters of a T5 network (names follow Hugging Face's T5Config where one exists).

    Defaults are T5 1.0 small. `architecture` selects the paper's Table 2 variants:
    encoder_decoder, shared_encoder_decoder (encoder and decoder share self-attention,
    feed-forward and norm parameters), decoder_only (causal language model) and prefix_lm
    (decoder-only with a fully visible mask over the inputs).
    """

    vocab_size: int = 32128
    d_model: int = 512
    d_ff: int = 2048
    num_heads: int = 8
    d_kv: int = 64
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    feed_forward_proj: str = "relu"
    tie_word_embeddings: bool = True
    dropout_rate: float = 0.1
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    architecture: str = "encoder_decoder"
    # Activation dtype ("float32" or "bfloat16"); parameters and the loss stay float32.
    dtype: str = "float32"
    # Inner dimension of adapter layers after each feed-forward block (paper Table 10); 0 = none.
    adapter_dim: int = 0
    # What the backward pass of the layer scan recomputes instead of keeping (REMAT_POLICIES):
    # "none" keeps every activation, "full" only each layer's input, "minimal" the matmul outputs
    # without batch dimensions (projections, feed-forward) but not the attention scores and
    # probabilities [B, H, T, S]. "minimal" is the default: T5-small at batch 8 x 512 / 114 needs 2 GB
    # less for the step and runs as fast as "none" on CPU (BENCHMARKS.md). True / False (the former
    # boolean) mean "full" / "none".
    remat: str = "minimal"
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_token_id: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.remat, bool):  # configs and gin bindings from before the policies
            object.__setattr__(self, "remat", "full" if self.remat else "none")
        for field in dataclasses.fields(self):
            value, kind = getattr(self, field.name), _FIELD_KINDS[field.type]
            if not isinstance(value, kind[0]) or (kind[0] is not bool and isinstance(value, bool)):
                raise ConfigError(f"T5Config.{field.name}={value!r} must be {kind[1]}")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"architecture={self.architecture!r} is unknown; pick one of {', '.join(ARCHITECTURES)}"
            )
        if self.feed_forward_proj not in FEED_FORWARD_PROJ:
            raise ConfigError(
                f"feed_forward_proj={self.feed_forward_proj!r} is unknown; "
                f"pick one of {', '.join(FEED_FORWARD_PROJ)}"
            )
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"remat={self.remat!r} is unknown; pick one of {', '.join(REMAT_POLICIES)}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"dtype={self.dtype!r} is unsupported; use float32 or bfloat16")
        for name in ("vocab_size", "d_model", "d_ff", "num_heads", "d_kv"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.architecture in ("encoder_decoder", "shared_encoder_decoder") and self.num_encoder_layers < 1:
            raise ConfigError("num_encoder_layers must be >= 1 for an encoder-decoder architecture")
        if self.num_decoder_layers < 1:
            raise ConfigError("num_decoder_layers must be >= 1")
        if (
            self.architecture == "shared_encoder_decoder"
            and self.num_encoder_layers != self.num_decoder_layers
        ):
            raise ConfigError(
                "shared_encoder_decoder needs num_encoder_layers == num_decoder_layers "
                f"(got {self.num_encoder_layers} and {self.num_decoder_layers})"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ConfigError(f"dropout_rate={self.dropout_rate} must be in [0, 1)")
        for name in ("relative_attention_num_buckets", "relative_attention_max_distance"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.adapter_dim < 0 or not self.layer_norm_epsilon > 0:
            raise ConfigError(
                f"adapter_dim={self.adapter_dim} must be >= 0 and "
                f"layer_norm_epsilon={self.layer_norm_epsilon} > 0"
            )
        for name in ("pad_id", "eos_id", "decoder_start_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ConfigError(
                    f"{name}={getattr(self, name)} must be in [0, vocab_size={self.vocab_size})"
                )

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        return self.feed_forward_proj.removeprefix("gated-")

    @property
    def has_encoder(self) -> bool:
        return self.architecture in ("encoder_decoder", "shared_encoder_decoder")

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv

    def replace(self, **changes: Any) -> T5Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> T5Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown T5Config field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}"
            )
        return cls(**values)


def _t5_v1_0(d_model: int, d_ff: int, heads: int, d_kv: int, layers: int) -> T5Config:
    return T5Config(
        d_model=d_model, d_ff=d_ff, num_heads=heads, d_kv=d_kv,
        num_encoder_layers=layers, num_decoder_layers=layers,
        feed_forward_proj="relu", tie_word_embeddings=True, dropout_rate=0.1,
    )  # fmt: skip


def _t5_v1_1(d_model: int, d_ff: int, heads: int, d_kv: int, layers: int) -> T5Config:
    return T5Config(
        d_model=d_model, d_ff=d_ff, num_heads=heads, d_kv=d_kv,
        num_encoder_layers=layers, num_decoder_layers=layers,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
    )  # fmt: skip


# The sizes of the paper (T5 1.0) and of the T5 1.1 release: d_model/d_ff/heads/d_kv/layers.
MODEL_SIZES: dict[str, T5Config] = {
    "t5-small": _t5_v1_0(512, 2048, 8, 64, 6),
    "t5-base": _t5_v1_0(768, 3072, 12, 64, 12),
    "t5-large": _t5_v1_0(1024, 4096, 16, 64, 24),
    "t5-3b": _t5_v1_0(1024, 16384, 32, 128, 24),
    "t5-11b": _t5_v1_0(1024, 65536, 128, 128, 24),
    "t5.1.1-small": _t5_v1_1(512, 1024, 6, 64, 8),
    "t5.1.1-base": _t5_v1_1(768, 2048, 12, 64, 12),
    "t5.1.1-large": _t5_v1_1(1024, 2816, 16, 64, 24),
    "t5.1.1-xl": _t5_v1_1(2048, 5120, 32, 64, 24),
    "t5.1.1-xxl": _t5_v1_1(4096, 10240, 64, 64, 24),
    # For tests and the demo: seconds to compile and train on a CPU.
    "tiny": T5Config(
        vocab_size=512,
        d_model=64,
        d_ff=128,
        num_heads=4,
        d_kv=16,
        num_encoder_layers=2,
        num_decoder_layers=2,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
    ),
}


def get_model_config(name: str) -> T5Config:
    """Returns the named size's config (see MODEL_SIZES)."""
    try:
        return MODEL_SIZES[name]
    except KeyError:
        raise ConfigError(f"unknown model size {name!r}; pick one of {', '.join(MODEL_SIZES)}") from None


def option(default: Any, help: str, **flag: Any) -> Any:
    """A dataclass field carrying its command-line help (and argparse keywords, `flag`): a settings type
    declares each option once and a command derives its flags from the fields (gin_utils.add_field_flags)."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag})


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """How to decode: greedy (the default), beam search (beam_size > 1) or sampling (temperature > 0).

    Taken by `T5Model.generate*`, `mesh_t5.inference`, the SavedModel export and `mesh-t5 infer` (whose
    flags these fields are). Constructing one checks every field: a bad one is a one-line UserError.
    """

    max_decode_length: int = option(64, "tokens to decode at most (default 64)")
    beam_size: int = option(1, "beam search with this many beams; 1 = no beam search (default 1)")
    alpha: float = option(0.6, "beam search length penalty exponent, ((5 + len) / 6) ** alpha (default 0.6)")
    temperature: float = option(0.0, "sample at this temperature; 0 = greedy (default 0)")
    top_k: int = option(0, "sample from the k most likely tokens only (default 0: all)")
    top_p: float = option(1.0, "sample from the smallest set of probability >= p (default 1: all)")
    seed: int = option(0, "sampling seed (default 0)")

    def __post_init__(self) -> None:
        from mesh_t5 import validate  # imports numpy: not on `import mesh_t5`

        validate.integer(self.max_decode_length, "max_decode_length")
        validate.integer(self.beam_size, "beam_size")
        validate.number(self.alpha, "alpha", minimum=0)
        validate.number(self.temperature, "temperature", minimum=0)
        validate.integer(self.top_k, "top_k", minimum=0)
        validate.number(self.top_p, "top_p", 0, 1, open_min=True)
        validate.integer(self.seed, "seed", minimum=0)
        if self.beam_size > 1 and self.temperature > 0:
            raise UserError(
                f"temperature={self.temperature} samples, beam_size={self.beam_size} searches; "
                "set one of them aside"
            )
