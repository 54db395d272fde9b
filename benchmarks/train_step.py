"""Training-step time on this machine: forward loss, its gradient, and the whole jitted train step.

Random weights and random token batches (nothing downloaded). The default model is the one
`mesh-t5 demo` trains (d_model 128, 2+2 layers, gated-GELU, untied, vocab 2,100) on its batch
of 32 x 128 inputs / 32 targets; `--model` takes any size name of `mesh_t5.config`.
Usage: python benchmarks/train_step.py [--model demo] [--batch_size 32] [--inputs 128]
       [--targets 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from mesh_t5 import optim, steps
from mesh_t5.config import T5Config, get_model_config

DEMO = T5Config(
    vocab_size=2100, d_model=128, d_ff=256, num_heads=4, d_kv=32, num_encoder_layers=2,
    num_decoder_layers=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
)  # fmt: skip


def best_ms(fn, *args, repeats: int) -> float:
    """Returns the best wall time of `repeats` calls in ms (after one compile-and-warm-up call)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--inputs", type=int, default=128)
    parser.add_argument("--targets", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    config = DEMO if args.model == "demo" else get_model_config(args.model)
    rng = np.random.default_rng(0)
    b, ti, tt = args.batch_size, args.inputs, args.targets
    batch = {
        "encoder_input_tokens": rng.integers(2, config.vocab_size, (b, ti)),
        "decoder_input_tokens": rng.integers(2, config.vocab_size, (b, tt)),
        "decoder_target_tokens": rng.integers(2, config.vocab_size, (b, tt)),
        "decoder_loss_weights": np.ones((b, tt)),
    }
    batch = {name: jnp.asarray(x, jnp.int32) for name, x in batch.items()}
    optimizer = optim.make_optimizer()
    state = steps.init_state(config, optimizer, jax.random.key(0))

    def loss(params):
        return steps.loss_and_stats(params, batch, config)[0]

    step = jax.jit(
        functools.partial(steps.train_step, config=config, optimizer=optimizer, settings=steps.StepSettings())
    )
    forward = best_ms(jax.jit(loss), state["params"], repeats=args.repeats)
    grad = best_ms(jax.jit(jax.grad(loss)), state["params"], repeats=args.repeats)
    whole = best_ms(step, state, batch, repeats=args.repeats)
    tokens = b * (ti + tt)
    print(
        f"model={args.model} batch={b}x({ti}+{tt}) devices={jax.device_count()} ({jax.devices()[0].platform})"
    )
    print(f"forward loss   {forward:8.1f} ms")
    print(f"gradient       {grad:8.1f} ms   ({grad / forward:.1f}x forward)")
    print(f"train step     {whole:8.1f} ms   ({tokens / whole * 1e3:,.0f} tokens/s)")


if __name__ == "__main__":
    main()
