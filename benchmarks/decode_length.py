"""Decode time vs output length: with a KV cache each step costs about the same, so time ~ linear.

For each model (default: the `tiny` test model and a random-weight T5 1.1 small, d_model 512,
d_ff 1024, 6 heads, d_kv 64, 8+8 layers, vocab 32128), batch size and output length N, runs a
jitted greedy (or beam) decode with max_decode_length = N. Every step runs: the decoder's EOS
logit is set to -1e9 before the argmax, so no row can stop early (the script checks that no
EOS was emitted). The encoder and cache set-up (`init_decode_cache`) is timed on its own and
subtracted, so `ms/token` is (decode time - encoder time) / N: the mean cost of one
`decode_step` (all B rows) plus the loop's argmax/log-softmax. Constant ms/token = linear total.

The one per-step term that grows with N is self-attention over the M = N cache slots; `cache MB`
is what it reads per step (keys + values of every layer, 2*L*B*H*M*K*itemsize). Per model the
script fits ms/token = a + b*N and prints the slope b (ms per slot) beside the time to move one
slot's cache bytes once at this machine's copy bandwidth (measured first: an in-place pass over
64 MB, bytes read + written per second).

    python benchmarks/decode_length.py [--models tiny,t5.1.1-small] [--batch_size 8]
        [--lengths 16,32,64,128,256] [--beam_sizes 1] [--repeats 3]

Weights are random (`network.init_params_numpy`): speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

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


def _best_ms(fn: Callable[[], jax.Array], repeats: int, *, warm_up: bool = True) -> float:
    """Returns the fastest of `repeats` timed calls in ms (after one untimed compile call if warm_up)."""
    if warm_up:
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def copy_bandwidth_gbs(repeats: int) -> float:
    """GB/s of an in-place elementwise pass over 64 MB float32 (64 MB read + 64 MB written)."""
    state = [jnp.ones((16 * 1024 * 1024,), jnp.float32)]
    nbytes = state[0].nbytes
    fn = jax.jit(lambda a: a + 1.0, donate_argnums=0)  # in place: no fresh pages to fault in

    def step() -> jax.Array:
        state[0] = fn(state[0])
        return state[0]

    return 2 * nbytes / _best_ms(step, max(repeats, 5)) / 1e6


def bench_model(name: str, args: argparse.Namespace, bandwidth_gbs: float) -> None:
    """Prints one table row per (beam size, length) for model `name`."""
    config = get_model_config(name)
    params = jax.device_put(network.init_params_numpy(config, seed=0))
    inputs = jnp.asarray(
        np.random.default_rng(0).integers(2, config.vocab_size, (args.batch_size, args.input_length)),
        jnp.int32,
    )
    print(
        f"\nmodel={name} (d_model {config.d_model}, d_ff {config.d_ff}, heads {config.num_heads}, "
        f"layers {config.num_encoder_layers}+{config.num_decoder_layers}, vocab {config.vocab_size}) "
        f"batch={args.batch_size} input_length={args.input_length} devices={jax.devices()}"
    )
    print(f"{'beam':>4} {'length':>6} {'ms/batch':>10} {'encoder ms':>10} {'ms/token':>9} {'cache MB':>9}")
    itemsize = jnp.dtype(config.dtype).itemsize
    for beam in map(int, args.beam_sizes.split(",")):
        lengths, per_tokens = [], []
        slot_bytes = 2 * config.num_decoder_layers * args.batch_size * beam * config.num_heads * config.d_kv
        slot_bytes *= itemsize  # keys + values of one slot, all layers and rows
        for length in map(int, args.lengths.split(",")):
            enc_fn = jax.jit(
                lambda p, x, n=length: network.init_decode_cache(
                    p, config, encoder_input_tokens=x, max_decode_length=n
                )
            )
            enc_ms = _best_ms(lambda f=enc_fn: f(params, inputs), args.repeats)
            fn = jax.jit(lambda p, x, n=length, k=beam: _decoder(p, config, x, n, k))
            tokens = np.asarray(fn(params, inputs))  # compiles
            assert tokens.shape[-1] == length and not (tokens == config.eos_id).any(), "a row stopped early"
            total_ms = _best_ms(lambda f=fn: f(params, inputs), args.repeats, warm_up=False)
            per_token = (total_ms - enc_ms) / length
            lengths.append(length)
            per_tokens.append(per_token)
            cache_mb = slot_bytes * length / 1e6
            print(
                f"{beam:>4} {length:>6} {total_ms:>10.1f} {enc_ms:>10.1f} {per_token:>9.2f} {cache_mb:>9.1f}",
                flush=True,
            )
        if len(lengths) > 1:
            slope, intercept = np.polyfit(lengths, per_tokens, 1)
            per_slot_ms = slot_bytes / bandwidth_gbs / 1e6
            print(
                f"fit: ms/token = {intercept:.3g} + {slope * 1e3:.3g}e-3 * N; moving a slot's "
                f"{slot_bytes / 1e3:.0f} kB of cache once (read or write) at {bandwidth_gbs:.1f} GB/s: "
                f"{per_slot_ms * 1e3:.3g}e-3 ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,t5.1.1-small")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--input_length", type=int, default=32)
    parser.add_argument("--lengths", default="16,32,64,128,256")
    parser.add_argument("--beam_sizes", default="1")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bandwidth = copy_bandwidth_gbs(args.repeats)
    print(f"copy bandwidth: {bandwidth:.1f} GB/s (in place: 64 MB read + 64 MB written)")
    for name in args.models.split(","):
        bench_model(name, args, bandwidth)


if __name__ == "__main__":
    main()
