"""T5Config: the paper's sizes, validation, and the gin model files."""

import dataclasses

import gin
import pytest

from mesh_t5 import gin_utils
from mesh_t5.config import MODEL_SIZES, ConfigError, T5Config, get_model_config

# d_model / d_ff / heads / d_kv / layers, from the paper (T5 1.0) and the T5 1.1 release.
PAPER_SIZES = {
    "t5-small": (512, 2048, 8, 64, 6),
    "t5-base": (768, 3072, 12, 64, 12),
    "t5-large": (1024, 4096, 16, 64, 24),
    "t5-3b": (1024, 16384, 32, 128, 24),
    "t5-11b": (1024, 65536, 128, 128, 24),
    "t5.1.1-small": (512, 1024, 6, 64, 8),
    "t5.1.1-base": (768, 2048, 12, 64, 12),
    "t5.1.1-large": (1024, 2816, 16, 64, 24),
    "t5.1.1-xl": (2048, 5120, 32, 64, 24),
    "t5.1.1-xxl": (4096, 10240, 64, 64, 24),
}
GIN_FILES = {
    "t5-small": "t5_small", "t5-base": "t5_base", "t5-large": "t5_large", "t5-3b": "t5_3B",
    "t5-11b": "t5_11B", "t5.1.1-small": "t5_1_1_small", "t5.1.1-base": "t5_1_1_base",
    "t5.1.1-large": "t5_1_1_large", "t5.1.1-xl": "t5_1_1_xl", "t5.1.1-xxl": "t5_1_1_xxl",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PAPER_SIZES))
def test_paper_sizes(name):
    c = get_model_config(name)
    assert (c.d_model, c.d_ff, c.num_heads, c.d_kv, c.num_encoder_layers) == PAPER_SIZES[name]
    assert c.num_decoder_layers == c.num_encoder_layers
    assert c.vocab_size == 32128
    v11 = name.startswith("t5.1.1")
    assert c.feed_forward_proj == ("gated-gelu" if v11 else "relu")
    assert c.tie_word_embeddings is not v11
    assert c.dropout_rate == (0.0 if v11 else 0.1)


@pytest.mark.parametrize("name", sorted(GIN_FILES))
def test_gin_model_files_match_sizes(name):
    gin.clear_config()
    try:
        gin_utils.parse_gin([f"models/{GIN_FILES[name]}.gin"], [], finalize=False)
        config = gin.query_parameter("%MODEL_CONFIG").scoped_configurable_fn()
    finally:
        gin.clear_config()
    assert config == MODEL_SIZES[name]


def test_relative_attention_defaults():
    c = T5Config()
    assert (c.relative_attention_num_buckets, c.relative_attention_max_distance) == (32, 128)
    assert c.layer_norm_epsilon == 1e-6


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"architecture": "encoder_only"}, "architecture='encoder_only' is unknown"),
        ({"feed_forward_proj": "swish"}, "feed_forward_proj='swish' is unknown"),
        ({"num_heads": 0}, "num_heads=0 must be a positive integer"),
        ({"architecture": "shared_encoder_decoder", "num_decoder_layers": 3}, "6 and 3"),
        ({"dtype": "float16"}, "dtype='float16' is unsupported"),
        (
            {"remat": "dots_saveable"},
            "remat='dots_saveable' is unknown; pick one of none, full, minimal, dots",
        ),
    ],
)
def test_invalid_configs_say_what_to_change(changes, fragment):
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(T5Config(), **changes)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_remat_booleans_of_older_configs_name_a_policy():
    assert T5Config().remat == "minimal"
    assert T5Config(remat=True).remat == "full" and T5Config.from_dict({"remat": False}).remat == "none"


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ConfigError, match="unknown T5Config field"):
        T5Config.from_dict({"d_model": 8, "hidden_size": 8})
    assert T5Config.from_dict(T5Config(d_model=8).to_dict()).d_model == 8
