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

With --transformers (needs torch and transformers; off by default) the same run also times
Hugging Face `T5ForConditionalGeneration.generate` on the same weights (mesh_t5's params exported
with `mesh_t5.hf.config_to_hf` / `params_to_hf` and loaded with a strict `load_state_dict`) and the
same input ids: float32, eval(), torch.no_grad(), torch.set_num_threads(1), use_cache=True (its
default cache), do_sample=False, num_beams=beam, max_new_tokens=min_new_tokens=N (min_new_tokens
masks EOS to -inf, so no row stops early; the script checks the length and that no EOS appears).
For each N it times mesh_t5 then transformers, so load drift hits both. HF's encoder alone
(`model.get_encoder()`) is timed and subtracted the same way, so both `ms/token` columns are
(decode time - encoder time) / N. Each row also gives `agree`: the shortest prefix (over the B
rows; the best beam for beam > 1) on which HF's tokens equal mesh_t5's. At the end of each model
a table gives, per (beam, N), both ms/token, their ratio (transformers / mesh_t5) and each
framework's growth ms/token(N) / ms/token(smallest N), then a fit ms/token = a + b*N for each.

    python benchmarks/decode_length.py [--models tiny,t5.1.1-small] [--batch_size 8]
        [--lengths 16,32,64,128,256] [--beam_sizes 1] [--repeats 3] [--transformers]

Weights are random (`network.init_params_numpy`): speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mesh_t5 import decoding, inference, layers, native, network
from mesh_t5.config import get_model_config


def _decoder(params, config, inputs, length: int, beam_size: int, mods=None):
    """Decodes `length` tokens with EOS masked; `mods` (.network, .decoding, .inference: another
    revision's, see benchmarks/decode_ab.py) defaults to this tree's modules."""
    net, dec, inf = (
        (network, decoding, inference) if mods is None else (mods.network, mods.decoding, mods.inference)
    )
    packs = getattr(net, "packs_decoder_weights", None)  # as that revision's inference.decode
    pack = {"pack": packs(config, inputs.shape[0])} if packs is not None else {}
    params = net.unstack_decoder_layers(params, config, **pack)  # outside the loop; prepared: as is
    cache = net.init_decode_cache(params, config, encoder_input_tokens=inputs, max_decode_length=length)

    def step(last, cache):
        logits, cache = net.decode_step(params, cache, last, config)
        return logits.at[:, config.eos_id].set(-1e9), cache  # never stop early: time the full length

    common = dict(batch_size=inputs.shape[0], max_decode_length=length, cache_batch_axis=net.CACHE_BATCH_AXIS)
    if beam_size == 1:
        return dec.greedy_decode(step, cache, **common)[0]
    reorder = getattr(inf, "beam_reorder", None)  # as that revision's inference decodes
    if reorder is not None:
        common["reorder"] = reorder(inputs.shape[0])
    return dec.beam_search(step, cache, beam_size=beam_size, **common)[0]


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


def products_step_s(config, rows: int, repeats: int, steps: int = 16) -> float:
    """Seconds per step of a decode step's weight products alone, at `rows` rows, as a decode compiles them.

    One step multiplies [rows, .] by every decoder kernel (self-attention q, k, v, o; cross-attention
    q, o; the feed-forward) and the output matrix [D, V]: what no decoder of this model avoids, run
    here with nothing else, in a `fori_loop` of `steps` steps (each step's inputs depend on the last
    step, so nothing is hoisted), compiled with `inference.decode_compiler_options()`, and packed for
    the native kernel where a decode would be (`network.packs_decoder_weights`). Random float32
    kernels of the model's shapes; the best of `repeats` loops.
    """
    d, inner, f = config.d_model, config.inner_dim, config.d_ff
    per_layer = [(d, inner)] * 3 + [(inner, d)] + ([(d, inner), (inner, d)] if config.has_encoder else [])
    per_layer += [(d, f)] * (2 if config.is_gated else 1) + [(f, d)]
    shapes = per_layer * config.num_decoder_layers + [(d, config.vocab_size)]
    rng = np.random.default_rng(0)
    kernels = [jnp.asarray(rng.standard_normal(shape, np.float32) * 0.02) for shape in shapes]
    if network.packs_decoder_weights(config, rows):
        kernels = [jax.block_until_ready(jax.jit(native.pack)(w)) for w in kernels]
    inputs = {n: jnp.asarray(rng.standard_normal((rows, n), np.float32)) for n in {a for a, _ in shapes}}

    def loop(kernels, inputs):
        def body(_, carry):
            for w in kernels:
                y = layers.dense(inputs[w.shape[0]] * (1.0 + carry), w)
                carry = carry + jnp.sum(y) * 1e-30  # all of y: a slice of it would let XLA shrink the product
            return carry

        return jax.lax.fori_loop(0, steps, body, jnp.zeros((), jnp.float32))

    fn = jax.jit(loop, compiler_options=inference.decode_compiler_options())
    return _best_ms(lambda: fn(kernels, inputs), repeats) / 1e3 / steps


def hf_model(config, params):
    """Returns transformers' T5ForConditionalGeneration holding mesh_t5's (numpy) params, strictly loaded."""
    import torch
    import transformers

    from mesh_t5 import hf

    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**hf.config_to_hf(config)))
    tensors = {k: torch.from_numpy(v) for k, v in hf.params_to_hf(params, config).items()}
    if "lm_head.weight" in tensors:
        # T5 1.1: transformers 5 builds lm_head tied to shared.weight whatever the config says
        # (tie_word_embeddings=false only turns off the d_model**-0.5 output scale): untie it,
        # or loading lm_head.weight would overwrite the embedding (or be overwritten by it).
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.shared.weight))
    for key in model.state_dict():  # the stacks' embed_tokens (and a tied lm_head) view shared
        if key not in tensors and (key.endswith("embed_tokens.weight") or key == "lm_head.weight"):
            tensors[key] = tensors["shared.weight"]
    model.load_state_dict(tensors, strict=True)
    tied = model.lm_head.weight is model.shared.weight
    assert tied == config.tie_word_embeddings == model.config.scale_decoder_outputs, "head mismatch"
    return model


class HFDecoder:
    """transformers' T5ForConditionalGeneration holding mesh_t5's params, fed the same input ids."""

    def __init__(self, config, params, inputs: jax.Array):
        import torch

        self._torch = torch
        self.model = hf_model(config, params).eval()
        self.cache_type = "?"
        self._ids = torch.from_numpy(np.asarray(inputs, np.int64))
        self._mask = torch.ones_like(self._ids)

    def encode(self):
        with self._torch.no_grad():
            return self.model.get_encoder()(input_ids=self._ids, attention_mask=self._mask).last_hidden_state

    def generate(self, length: int, beam_size: int):
        """Returns [B, 1 + length] ids (decoder start first); EOS is masked until `length` new tokens."""
        with self._torch.no_grad():
            out = self.model.generate(
                input_ids=self._ids,
                attention_mask=self._mask,
                max_new_tokens=length,
                min_new_tokens=length,
                do_sample=False,
                num_beams=beam_size,
                use_cache=True,
                return_dict_in_generate=True,
            )
        self.cache_type = _describe_cache(out.past_key_values)
        return out.sequences


def _describe_cache(cache) -> str:
    """E.g. "EncoderDecoderCache, self-attention DynamicCache of DynamicLayer" (how HF grows keys)."""
    self_cache = getattr(cache, "self_attention_cache", None)
    if self_cache is None:
        return type(cache).__name__
    layers = {type(layer).__name__ for layer in getattr(self_cache, "layers", [])}
    return f"{type(cache).__name__}, self-attention {type(self_cache).__name__} of {'/'.join(sorted(layers))}"


def _fit_text(lengths: list[int], per_tokens: list[float]) -> str:
    slope, intercept = np.polyfit(lengths, per_tokens, 1)
    return f"{intercept:.3g} + {slope * 1e3:.3g}e-3 * N"


def _agreeing_prefix(ours: np.ndarray, theirs: np.ndarray) -> int:
    """The shortest prefix, over rows, on which ours [B, N] and theirs [B, N] are equal."""
    differ = ours != theirs
    return int(np.where(differ.any(axis=1), differ.argmax(axis=1), ours.shape[1]).min())


def bench_model(name: str, args: argparse.Namespace, bandwidth_gbs: float) -> None:
    """Prints one table row per (beam size, length) for model `name` (and a comparison table with HF)."""
    config = get_model_config(name)
    params_np = network.init_params_numpy(config, seed=0)
    params = jax.device_put(params_np)
    inputs = jnp.asarray(
        np.random.default_rng(0).integers(2, config.vocab_size, (args.batch_size, args.input_length)),
        jnp.int32,
    )
    hf = HFDecoder(config, params_np, inputs) if args.transformers else None
    print(
        f"\nmodel={name} (d_model {config.d_model}, d_ff {config.d_ff}, heads {config.num_heads}, "
        f"layers {config.num_encoder_layers}+{config.num_decoder_layers}, vocab {config.vocab_size}) "
        f"batch={args.batch_size} input_length={args.input_length} devices={jax.devices()}"
    )
    header = f"{'beam':>4} {'length':>6} {'ms/batch':>10} {'encoder ms':>10} {'ms/token':>9} {'cache MB':>9}"
    if hf:
        header += f" | transformers: {'ms/batch':>10} {'encoder ms':>10} {'ms/token':>9} {'agree':>5}"
    print(header)
    itemsize = jnp.dtype(config.dtype).itemsize
    compared = []  # (beam, lengths, mesh_t5 ms/token, transformers ms/token)
    for beam in map(int, args.beam_sizes.split(",")):
        lengths, per_tokens, hf_per_tokens = [], [], []
        slot_bytes = 2 * config.num_decoder_layers * args.batch_size * beam * config.num_heads * config.d_kv
        slot_bytes *= itemsize  # keys + values of one slot, all layers and rows
        for length in map(int, args.lengths.split(",")):
            enc_fn = jax.jit(
                lambda p, x, n=length: network.init_decode_cache(
                    p, config, encoder_input_tokens=x, max_decode_length=n
                ),
                compiler_options=inference.decode_compiler_options(),
            )
            enc_ms = _best_ms(lambda f=enc_fn: f(params, inputs), args.repeats)
            fn = jax.jit(
                lambda p, x, n=length, k=beam: _decoder(p, config, x, n, k),
                compiler_options=inference.decode_compiler_options(),
            )
            tokens = np.asarray(fn(params, inputs))  # compiles
            assert tokens.shape[-1] == length and not (tokens == config.eos_id).any(), "a row stopped early"
            total_ms = _best_ms(lambda f=fn: f(params, inputs), args.repeats, warm_up=False)
            per_token = (total_ms - enc_ms) / length
            lengths.append(length)
            per_tokens.append(per_token)
            cache_mb = slot_bytes * length / 1e6
            row = (
                f"{beam:>4} {length:>6} {total_ms:>10.1f} {enc_ms:>10.1f} {per_token:>9.2f} {cache_mb:>9.1f}"
            )
            if hf:
                hf_enc_ms = _best_ms(hf.encode, args.repeats)
                hf_tokens = hf.generate(length, beam).numpy()  # untimed warm-up, and the check
                assert hf_tokens.shape == (args.batch_size, 1 + length), f"transformers: {hf_tokens.shape}"
                assert not (hf_tokens[:, 1:] == config.eos_id).any(), "transformers: a row stopped early"
                agree = _agreeing_prefix(tokens if beam == 1 else tokens[:, 0], hf_tokens[:, 1:])
                hf_total_ms = _best_ms(
                    lambda n=length, k=beam: hf.generate(n, k), args.repeats, warm_up=False
                )
                hf_per_tokens.append((hf_total_ms - hf_enc_ms) / length)
                row += f" | {'':>13} {hf_total_ms:>10.1f} {hf_enc_ms:>10.1f} {hf_per_tokens[-1]:>9.2f} {agree:>5}"
            print(row, flush=True)
        if len(lengths) > 1:
            per_slot_ms = slot_bytes / bandwidth_gbs / 1e6
            print(
                f"fit: ms/token = {_fit_text(lengths, per_tokens)}; moving a slot's "
                f"{slot_bytes / 1e3:.0f} kB of cache once (read or write) at {bandwidth_gbs:.1f} GB/s: "
                f"{per_slot_ms * 1e3:.3g}e-3 ms"
            )
        compared.append((beam, lengths, per_tokens, hf_per_tokens))
    if hf:
        _print_comparison(name, compared, hf.cache_type)


def _print_comparison(name: str, compared: list, cache_type: str) -> None:
    print(
        f"\n{name}: mesh_t5 jitted decode vs transformers generate ({cache_type}); ms/token = "
        "(decode ms - encoder ms) / N for both; growth = ms/token(N) / ms/token(smallest N)"
    )
    print(
        f"{'beam':>4} {'N':>6} {'mesh_t5 ms/tok':>14} {'transformers ms/tok':>19} {'ratio tf/mt':>11} "
        f"{'mesh_t5 growth':>14} {'transformers growth':>19}"
    )
    for beam, lengths, ours, theirs in compared:
        ours_ref, theirs_ref = ours[int(np.argmin(lengths))], theirs[int(np.argmin(lengths))]
        for n, a, b in zip(lengths, ours, theirs, strict=True):
            print(
                f"{beam:>4} {n:>6} {a:>14.2f} {b:>19.2f} {b / a:>11.2f} {a / ours_ref:>14.2f} {b / theirs_ref:>19.2f}"
            )
        if len(lengths) > 1:
            print(
                f"fit beam={beam}: mesh_t5 ms/token = {_fit_text(lengths, ours)}; "
                f"transformers ms/token = {_fit_text(lengths, theirs)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,t5.1.1-small")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--input_length", type=int, default=32)
    parser.add_argument("--lengths", default="16,32,64,128,256")
    parser.add_argument("--beam_sizes", default="1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--transformers",
        action="store_true",
        help="also time Hugging Face transformers' generate on the same weights and inputs (needs torch)",
    )
    args = parser.parse_args()
    if args.transformers:
        import torch

        torch.set_num_threads(1)  # like XLA's single-threaded CPU run (see the module docstring)
    bandwidth = copy_bandwidth_gbs(args.repeats)
    print(f"copy bandwidth: {bandwidth:.1f} GB/s (in place: 64 MB read + 64 MB written)")
    for name in args.models.split(","):
        bench_model(name, args, bandwidth)


if __name__ == "__main__":
    main()
