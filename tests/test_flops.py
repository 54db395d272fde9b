"""benchmarks/flops.py (the MFU numerator of `make bench`) against FLOPs counted by hand."""

from __future__ import annotations

from benchmarks import flops
from mesh_t5.config import T5Config

# d_model 4, 2 heads of d_kv 3 (inner 6), d_ff 8, vocab 10, one layer per stack; batch 1,
# 5 input tokens, 2 target tokens. A product [m, k] @ [k, n] costs 2*m*k*n FLOPs.
TINY = T5Config(
    vocab_size=10, d_model=4, d_ff=8, num_heads=2, d_kv=3, num_encoder_layers=1, num_decoder_layers=1,
    feed_forward_proj="relu",
)  # fmt: skip

ENCODER = (
    4 * (2 * 5 * 4 * 6)  # q, k, v, o projections of 5 rows: [5, 4] @ [4, 6] (o: [5, 6] @ [6, 4])
    + 2 * (2 * 2 * 5 * 3 * 5)  # per head q.k^T [5, 3] @ [3, 5] and w.v [5, 5] @ [5, 3], 2 heads
    + 2 * (2 * 5 * 4 * 8)  # wi [5, 4] @ [4, 8] and wo [5, 8] @ [8, 4]
)
DECODER_SELF = 4 * (2 * 2 * 4 * 6) + 2 * (2 * 2 * 2 * 3 * 2)  # 384 + 96
DECODER_CROSS = 2 * (2 * 2 * 4 * 6) + 2 * (2 * 5 * 4 * 6) + 2 * (2 * 2 * 2 * 3 * 5)  # q, o | k, v | products
DECODER_MLP = 2 * (2 * 2 * 4 * 8)
LOGITS = 2 * 2 * 4 * 10


def test_hand_counted_parts():
    assert ENCODER == 960 + 600 + 640
    assert (DECODER_SELF, DECODER_CROSS, DECODER_MLP, LOGITS) == (480, 912, 256, 160)


def test_forward_and_train_step_flops_of_a_tiny_model():
    forward = ENCODER + DECODER_SELF + DECODER_CROSS + DECODER_MLP + LOGITS
    assert forward == 4008
    assert flops.forward_flops(TINY, batch=1, inputs=5, targets=2) == forward
    assert flops.train_step_flops(TINY, batch=1, inputs=5, targets=2) == 3 * forward


def test_scaling_with_batch_depth_and_gating():
    base = flops.forward_flops(TINY, batch=1, inputs=5, targets=2)
    assert (
        flops.forward_flops(TINY, batch=3, inputs=5, targets=2) == 3 * base
    )  # every product has a batch row
    deeper = TINY.replace(num_encoder_layers=2)
    assert flops.forward_flops(deeper, batch=1, inputs=5, targets=2) == base + ENCODER
    gated = TINY.replace(feed_forward_proj="gated-gelu")  # a third [T, D] @ [D, F] kernel (wi_1)
    assert flops.forward_flops(gated, batch=1, inputs=5, targets=2) == base + 2 * 5 * 4 * 8 + 2 * 2 * 4 * 8
