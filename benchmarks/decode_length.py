"""Decode time vs output length: with a KV cache each step costs about the same, so time ~ linear.

Forces every step to run (EOS is never chosen: its logit is masked), times greedy and beam search
after a warm-up compile, and prints ms per sequence and per token for each length.

    python benchmarks/decode_length.py [--model tiny] [--batch_size 8] [--lengths 16,32,64,128]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from mesh_t5 import decoding, network
from mesh_t5.config import get_model_config


def _decoder(params, config, inputs, length: int, beam_size: int):
    cache = network.init_decode_cache(params, config, encoder_input_tokens=inputs, max_decode_length=length)

    def step(last, cache):
        logits, cache = network.decode_step(params, cache, last, config)
        return logits.at[:, config.eos_id].set(-1e9), cache  # never stop early: time the full length

    common = dict(
        batch_size=inputs.shape[0], max_decode_length=length, cache_batch_axis=network.CACHE_BATCH_AXIS
    )
    if beam_size == 1:
        return decoding.greedy_decode(step, cache, **common)[0]
    return decoding.beam_search(step, cache, beam_size=beam_size, **common)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--input_length", type=int, default=32)
    parser.add_argument("--lengths", default="16,32,64,128")
    parser.add_argument("--beam_sizes", default="1,4")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = get_model_config(args.model)
    params = jax.jit(lambda r: network.init_params(config, r))(jax.random.key(0))
    inputs = jnp.asarray(
        np.random.default_rng(0).integers(2, config.vocab_size, (args.batch_size, args.input_length))
    )
    print(
        f"model={args.model} batch={args.batch_size} input_length={args.input_length} devices={jax.devices()}"
    )
    print(f"{'beam':>4} {'length':>6} {'ms/batch':>10} {'ms/token':>9}")
    for beam in map(int, args.beam_sizes.split(",")):
        for length in map(int, args.lengths.split(",")):
            fn = jax.jit(lambda p, x, n=length, k=beam: _decoder(p, config, x, n, k))
            fn(params, inputs).block_until_ready()  # compile
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn(params, inputs).block_until_ready()
                times.append(time.perf_counter() - start)
            best = min(times) * 1e3
            print(f"{beam:>4} {length:>6} {best:>10.1f} {best / length:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
