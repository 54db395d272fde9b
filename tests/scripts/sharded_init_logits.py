"""Run by tests/test_network.py: a born-sharded T5Model on 8 fake devices gives the single-device logits.

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/scripts/sharded_init_logits.py
Prints OK on success; any mismatch raises.
"""

import jax
import numpy as np

from mesh_t5.config import T5Config
from mesh_t5.model import T5Model

config = T5Config(
    vocab_size=64, d_model=32, d_ff=64, num_heads=4, d_kv=8, num_encoder_layers=1, num_decoder_layers=1,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
)  # fmt: skip
sharded = T5Model.init(config, seed=0, mesh_shape="data:2,model:4")
q = sharded.params["encoder"]["layers"]["attention"]["query"]
assert q.sharding.spec == jax.sharding.PartitionSpec(None, None, "model", None), q.sharding.spec
assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (1, 32, 1, 8)
plain = T5Model(config, jax.device_get(sharded.params))
enc = np.arange(2, 18, dtype=np.int32).reshape(2, 8)
dec = enc[:, :4]
np.testing.assert_allclose(sharded.logits(enc, dec), plain.logits(enc, dec), atol=1e-5)
print("OK")
