"""Model FLOPs of a T5 training step, counted analytically from the config and the batch shape.

Only matrix products count (2 FLOPs per multiply-add), as in the MFU convention and in
`torch.utils.flop_counter`: norms, softmax, the loss and the optimizer are a few percent of a
step's arithmetic and run at memory speed anyway. A training step is 3x the forward: the backward
of every product computes two products of the same size (the gradient of each operand).
"""

from __future__ import annotations

from mesh_t5.config import T5Config


def _attention(b: int, tq: int, tk: int, config: T5Config) -> int:
    """Forward FLOPs of one attention block: q/o projections over tq rows, k/v over tk, two products."""
    d, inner, h, k = config.d_model, config.inner_dim, config.num_heads, config.d_kv
    projections = 2 * 2 * b * tq * d * inner + 2 * 2 * b * tk * d * inner  # q, o | k, v
    products = 2 * 2 * b * h * tq * tk * k  # q.k^T [B,H,T,S] and weights.v [B,H,T,K]
    return projections + products


def _mlp(b: int, t: int, config: T5Config) -> int:
    """Forward FLOPs of one feed-forward block: wi (or wi_0 and wi_1) and wo."""
    kernels = 3 if config.is_gated else 2
    return kernels * 2 * b * t * config.d_model * config.d_ff


def forward_flops(config: T5Config, batch: int, inputs: int, targets: int) -> int:
    """Returns the matmul FLOPs of one teacher-forced forward pass (encoder-decoder, no packing)."""
    b = batch
    encoder_layer = _attention(b, inputs, inputs, config) + _mlp(b, inputs, config)
    decoder_layer = (
        _attention(b, targets, targets, config)
        + _attention(b, targets, inputs, config)
        + _mlp(b, targets, config)
    )
    logits = 2 * b * targets * config.d_model * config.vocab_size
    return config.num_encoder_layers * encoder_layer + config.num_decoder_layers * decoder_layer + logits


def train_step_flops(config: T5Config, batch: int, inputs: int, targets: int) -> int:
    """Returns the matmul FLOPs of one training step: forward + backward = 3x forward."""
    return 3 * forward_flops(config, batch, inputs, targets)
