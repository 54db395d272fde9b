"""In-process A/B of decoding speed: a base revision's mesh_t5 against the working tree and `generate`.

    python -m benchmarks.decode_ab [--base main] [--beams 1,4] [--repeats 5] [--model t5-small]
        [--batch 8] [--inputs 256] [--new 64] [--no-transformers]

The base revision's `mesh_t5/` is extracted with `git archive` into a temporary directory and
imported under the package's own name; its modules are then dropped from sys.modules (its
functions keep their own module globals) and the working tree's mesh_t5 is imported. Both sides
decode the same random-weight model (`network.init_params_numpy`, seed 0) on the same random
inputs with EOS masked, so every run takes all `--new` steps (benchmarks/decode_length.py's
decoder), encoder included, as `make bench` measures it, each side compiled with its revision's
`inference.decode_compiler_options()` (none before it existed) and decoding params prepared by its
`inference.prepare_for_decoding()` where it has one (as its generate_ids does). Timed calls alternate base / new /
transformers, so load drift hits all alike; the table gives medians, output tokens/s
(batch x new / time) and the ratios, and whether base and new produced the same tokens.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

if "OMP_WAIT_POLICY" not in os.environ:  # before torch loads OpenMP: see benchmarks/run.py
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _package_modules() -> dict:
    return {k: v for k, v in sys.modules.items() if k == "mesh_t5" or k.startswith("mesh_t5.")}


def load_revision(rev: str) -> SimpleNamespace:
    """Returns the network, decoding, config and inference modules of mesh_t5 as of git revision `rev`."""
    archive = subprocess.run(["git", "archive", rev, "mesh_t5"], cwd=ROOT, capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(
            f"--base {rev}: not a git revision with mesh_t5/ ({archive.stderr.decode().strip()})"
        )
    tmp = tempfile.mkdtemp(prefix="mesh_t5_base_")
    subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
    current = _package_modules()
    for name in current:
        del sys.modules[name]
    sys.path.insert(0, tmp)
    try:
        mods = {
            m: importlib.import_module(f"mesh_t5.{m}") for m in ("network", "decoding", "config", "inference")
        }
    finally:
        sys.path.remove(tmp)
        for name in _package_modules():
            del sys.modules[name]
        sys.modules.update(current)
    return SimpleNamespace(**mods)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare against")
    parser.add_argument("--model", default="t5-small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--inputs", type=int, default=256)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--beams", default="1,4")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-transformers", dest="transformers", action="store_false")
    args = parser.parse_args()
    base = load_revision(args.base)
    from benchmarks.decode_length import HFDecoder, _agreeing_prefix, _decoder
    from benchmarks.steps import alternate, load_average
    from mesh_t5 import config as new_config
    from mesh_t5 import decoding, inference, network

    new = SimpleNamespace(network=network, decoding=decoding, config=new_config, inference=inference)
    if args.transformers:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    sides, params, configs = {"base": base, "new": new}, {}, {}
    for name, mods in sides.items():
        configs[name] = mods.config.get_model_config(args.model)
        params[name] = jax.device_put(mods.network.init_params_numpy(configs[name], seed=0))
    inputs = jnp.asarray(rng.integers(2, configs["new"].vocab_size, (args.batch, args.inputs)), jnp.int32)
    hf = HFDecoder(configs["new"], jax.device_get(params["new"]), inputs) if args.transformers else None
    for name, mods in sides.items():
        prepare = getattr(mods.inference, "prepare_for_decoding", None)
        if prepare is not None:  # as that revision decodes a run of several batches
            params[name] = prepare(configs[name], [params[name]])[0]
    load_before = load_average()
    print(f"base {args.base} vs working tree; {args.model}, batch {args.batch}, {args.inputs} input tokens, "
          f"{args.new} new (EOS masked), encoder included, medians of {args.repeats}; load {load_before}")  # fmt: skip
    for beam in map(int, args.beams.split(",")):
        fns, tokens = {}, {}
        for name, mods in sides.items():
            options = getattr(mods.inference, "decode_compiler_options", lambda: None)()
            fn = jax.jit(
                lambda p, x, m=mods, c=configs[name], k=beam: _decoder(p, c, x, args.new, k, m),
                compiler_options=options,
            )
            tokens[name] = np.asarray(fn(params[name], inputs))  # compiles
            fns[name] = lambda f=fn, p=params[name]: jax.block_until_ready(f(p, inputs))
        if hf:
            theirs = hf.generate(args.new, beam).numpy()[:, 1:]
            fns["transformers"] = lambda k=beam: hf.generate(args.new, k)
        times = alternate(fns, args.repeats)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        same = bool((tokens["base"] == tokens["new"]).all())
        line = " ".join(
            f"{n} {args.batch * args.new / t:.0f} tok/s ({t * 1e3:.0f} ms)" for n, t in med.items()
        )
        line += f"; new/base {med['base'] / med['new']:.2f}x"
        if hf:
            agree = _agreeing_prefix(tokens["new"] if beam == 1 else tokens["new"][:, 0], theirs)
            line += f", new/transformers {med['transformers'] / med['new']:.2f}x"
            line += f", base/transformers {med['transformers'] / med['base']:.2f}x, agree {agree}/{args.new}"
        print(f"beam {beam}: {line}; base and new tokens {'equal' if same else 'DIFFER'}", flush=True)
    print(f"load after: {load_average()}")


if __name__ == "__main__":
    main()
