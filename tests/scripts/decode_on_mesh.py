"""Run by tests/test_inference.py: beam search and sampling on a data:2,model:2 mesh of 4 fake devices
give the single-device tokens and scores (the beam cache is expanded and reordered on a sharded batch),
and so does generate_ids over two batches (params prepared once, under the layout).

Usage: python tests/scripts/decode_on_mesh.py (sets the fake device count itself); prints "ok".
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"  # before jax is imported

import jax
import numpy as np

from mesh_t5 import inference, layouts
from mesh_t5.config import DecodeOptions, T5Config
from mesh_t5.model import T5Model

config = T5Config(
    vocab_size=64, d_model=32, d_ff=64, num_heads=4, d_kv=8, num_encoder_layers=2, num_decoder_layers=2,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
)  # fmt: skip
single = T5Model.init(config, seed=1)
sharded = T5Model(config, jax.device_get(single.params), layout=layouts.make_layout("data:2,model:2"))
assert len(jax.devices()) == 4
x = np.random.default_rng(0).integers(2, 64, (4, 8)).astype(np.int32)
x[:, -1] = 1
with layouts.use_layout(sharded.layout):  # a sharded batch: beam search gathers, never copies rows
    assert inference.beam_reorder(4) == "gather"
for opts in ({"beam_size": 3}, {"temperature": 1.0, "top_k": 5, "top_p": 0.9}):
    options = DecodeOptions(max_decode_length=6, **opts)
    a = inference.generate_tokens_and_scores(config, [single.params], x, options)
    b = inference.generate_tokens_and_scores(config, [sharded.params], x, options, layout=sharded.layout)
    assert np.array_equal(a[0], b[0]), (opts, a[0], b[0])
    assert np.abs(a[1] - b[1]).max() < 1e-4, (opts, a[1], b[1])
# Two batches: generate_ids unstacks the sharded params once, under the layout, for both.
rows = [list(r) for r in x]
a = inference.generate_ids(config, [single.params], rows, DecodeOptions(max_decode_length=6), batch_size=2)
b = inference.generate_ids(
    config, [sharded.params], rows, DecodeOptions(max_decode_length=6), batch_size=2, layout=sharded.layout
)
assert np.array_equal(a[0], b[0]), (a[0], b[0])
assert np.abs(a[1] - b[1]).max() < 1e-4, (a[1], b[1])
print("ok")
