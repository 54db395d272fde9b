"""`make bench`: mesh_t5 against Hugging Face transformers on this machine, one table.

    python -m benchmarks.run [--quick] [--no-write]      (make bench [QUICK=1])

Sections (all on random weights and random tokens; nothing is downloaded):
  ceiling    float32 matmul GFLOP/s of this machine (JAX and torch, n x n x n), the MFU denominator;
  train      training step tokens/s, T5-small (1.0) and T5.1.1-small, batch 8 x 512 / 114, float32
             (and mesh_t5 with bfloat16 activations, and with remat "none" beside the default "minimal"),
             Adafactor both sides (benchmarks/steps.py);
             mesh_t5 and transformers steps alternate in this one process, medians of the repeats;
             model FLOPs per step counted analytically (benchmarks/flops.py) and checked against
             torch.utils.flop_counter on transformers' forward; MFU = FLOPs / step time / ceiling;
  one_core   the same training steps (T5-small, both sides alternating) in a subprocess pinned to one
             core, torch on one thread: the single-threaded comparison;
  memory     peak resident memory of a training process of each framework alone (a subprocess each);
  compile    mesh_t5's train-step compile time for T5-small at several depths and T5-base (subprocess);
  lengths    step time at 256 / 512 / 1024 input tokens (targets from random_spans_helper);
  decode     greedy and beam-4 output tokens/s, batch 8, 256 input tokens, 64 new, vs `generate`
             (benchmarks/decode_length.py's decoders; encoder included on both sides), and the floor: the
             encoder as measured + each step reading what it needs once at the measured memory bandwidth;
  data       span-corruption + packing pipeline tokens/s (benchmarks/data_throughput.py) against the
             tokens/s a T5-small train step consumes.
Threads: both frameworks use every core (torch.set_num_threads(os.cpu_count()); XLA's CPU client
defaults to all cores). In the alternating process OMP_WAIT_POLICY=PASSIVE (unless set): torch's
OpenMP workers otherwise spin after each parallel region and take cores from the JAX step that
runs next; the memory workers, one framework each, keep torch's default. `--quick` shrinks every section to run in a few minutes.
Without --no-write the full run replaces the marked section of BENCHMARKS.md with its table
(a --quick run writes only with --write).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import flops, steps

_OWN_WAIT_POLICY = "OMP_WAIT_POLICY" not in os.environ
if "--worker" not in sys.argv:  # before torch loads OpenMP; see the module docstring
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

BEGIN, END = "<!-- make bench: begin -->", "<!-- make bench: end -->"


def _worker(spec: dict) -> dict:
    """Runs a benchmarks.steps worker in a fresh Python process; returns its JSON result."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    if _OWN_WAIT_POLICY:  # a framework alone runs with torch's default OpenMP waiting
        env.pop("OMP_WAIT_POLICY", None)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--worker", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def matmul_ceiling(n: int, repeats: int) -> dict[str, float]:
    """Returns float32 GFLOP/s of an n x n x n matmul in JAX and in torch (best of the repeats)."""
    import jax
    import jax.numpy as jnp
    import torch

    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(matmul(a))
    t = torch.from_numpy(np.array(a))  # a writable copy
    torch.mm(t, t)
    timed = steps.alternate(
        {"jax": lambda: jax.block_until_ready(matmul(a)), "torch": lambda: torch.mm(t, t)}, repeats
    )
    return {name: 2 * n**3 / min(ts) / 1e9 for name, ts in timed.items()}


def bench_training(args: argparse.Namespace, ceiling: float) -> list[dict]:
    """One row per (model, side): median step seconds, tokens/s, FLOPs, MFU; sides alternate."""
    from mesh_t5 import network
    from mesh_t5.config import get_model_config

    b, ti, tt = args.batch, 512, 114
    rows = []
    for model in args.models:
        config = get_model_config(model)
        params = network.init_params_numpy(config, seed=0)
        batch = steps.random_batch(config, b, ti, tt)
        sides: dict[str, Callable[[], None]] = {"mesh_t5 float32": steps.MeshStep(config, params, batch)}
        if not args.quick:  # the A/Bs of the defaults: bfloat16 activations, no remat
            sides["mesh_t5 bfloat16"] = steps.MeshStep(config.replace(dtype="bfloat16"), params, batch)
            sides["mesh_t5 float32 remat=none"] = steps.MeshStep(config.replace(remat="none"), params, batch)
        hf_step = steps.HFStep(config, params, batch)
        sides["transformers float32"] = hf_step
        # torch's counter misses products of transformers' T5 when dropout is 0 (T5.1.1's setting);
        # FLOPs do not depend on the rate, so it counts a copy with dropout on.
        counter = (
            hf_step if config.dropout_rate else steps.HFStep(config.replace(dropout_rate=0.1), params, batch)
        )
        torch_forward = counter.forward_flops()
        del params, counter
        counted = flops.train_step_flops(config, b, ti, tt)
        first = {}
        for name, fn in sides.items():  # first step: mesh_t5 compiles here
            start = time.perf_counter()
            fn()
            first[name] = time.perf_counter() - start
        times = steps.alternate(sides, args.repeats)
        for name, ts in times.items():
            median = statistics.median(ts)
            rows.append({
                "model": model, "side": name, "step_s": median, "min_s": min(ts), "max_s": max(ts),
                "first_step_s": first[name], "tokens_per_s": b * (ti + tt) / median,
                "flops": counted, "torch_forward_flops": torch_forward, "analytic_forward_flops": counted // 3,
                "mfu": counted / median / (ceiling * 1e9), "loss": sides[name].loss,
            })  # fmt: skip
            print(
                f"  {model:14} {name:22} {median:7.2f} s/step (min {min(ts):.2f}, max {max(ts):.2f})",
                flush=True,
            )
    return rows


def bench_lengths(args: argparse.Namespace) -> list[dict]:
    """Median step seconds of both frameworks at each input length (alternating), T5-small."""
    from mesh_t5 import network
    from mesh_t5.config import get_model_config
    from mesh_t5.data import random_spans_helper

    config = get_model_config("t5-small")
    params = network.init_params_numpy(config, seed=0)
    rows = []
    for inputs in args.lengths:
        targets = random_spans_helper(inputs)[1]
        batch = steps.random_batch(config, args.batch, inputs, targets)
        sides = {
            "mesh_t5": steps.MeshStep(config, params, batch),
            "transformers": steps.HFStep(config, params, batch),
        }
        for fn in sides.values():
            fn()  # compile / warm up
        times = steps.alternate(sides, args.length_repeats)
        row = {"inputs": inputs, "targets": targets}
        row.update({name: statistics.median(ts) for name, ts in times.items()})
        print(f"  inputs {inputs:5} targets {targets:4}: mesh_t5 {row['mesh_t5']:.2f} s, "
              f"transformers {row['transformers']:.2f} s", flush=True)  # fmt: skip
        rows.append(row)
    return rows


def bench_decode(args: argparse.Namespace) -> list[dict]:
    """Output tokens/s (encoder included) of greedy and beam-4 decoding, mesh_t5 vs generate."""
    import jax
    import jax.numpy as jnp

    from benchmarks.decode_length import (
        HFDecoder,
        _agreeing_prefix,
        _decoder,
        copy_bandwidth_gbs,
        products_step_s,
    )
    from mesh_t5 import inference, network
    from mesh_t5.config import get_model_config

    config = get_model_config(args.decode_model)
    options = inference.decode_compiler_options()  # as mesh-t5 infer compiles a decode
    params_np = network.init_params_numpy(config, seed=0)
    params = jax.device_put(params_np)
    rng = np.random.default_rng(0)
    inputs = jnp.asarray(rng.integers(2, config.vocab_size, (args.batch, args.decode_inputs)), jnp.int32)
    hf = HFDecoder(config, params_np, inputs)
    n = args.decode_new
    encode = jax.jit(lambda p, x: network.encode(p, x, config), compiler_options=options)
    encoder_s = steps.alternate(
        {"mesh_t5": lambda: jax.block_until_ready(encode(params, inputs)), "transformers": hf.encode},
        args.repeats + 1,
    )  # the first call of each compiles / warms up: dropped below
    encoder_s = {name: statistics.median(ts[1:]) for name, ts in encoder_s.items()}
    bandwidth = copy_bandwidth_gbs(5) * 1e9
    # Each timed call decodes params prepared once (decoder layers unstacked, their weights packed for
    # the native kernel), as inference.generate_ids and evaluation prepare them for several batches.
    prepare_s = []
    for _ in range(args.repeats + 1):  # the first call compiles: dropped below
        start = time.perf_counter()
        prepared = jax.block_until_ready(inference.prepare_for_decoding(config, [params])[0])
        prepare_s.append(time.perf_counter() - start)
    prepare_s = statistics.median(prepare_s[1:])
    rows = []
    for beam in (1, 4):
        fn = jax.jit(lambda p, x, k=beam: _decoder(p, config, x, n, k), compiler_options=options)
        ours = np.asarray(fn(prepared, inputs))  # compiles
        theirs = hf.generate(n, beam).numpy()[:, 1:]
        agree = _agreeing_prefix(ours if beam == 1 else ours[:, 0], theirs)
        times = steps.alternate(
            {"mesh_t5": lambda f=fn: jax.block_until_ready(f(prepared, inputs)), "transformers": lambda k=beam: hf.generate(n, k)},
            args.repeats,
        )  # fmt: skip
        row = {"beam": beam, "agree": agree, "encoder_s": encoder_s, "prepare_s": prepare_s}
        row.update({name: args.batch * n / statistics.median(ts) for name, ts in times.items()})
        # The floor: every step reads the decoder's weights, the cross-attention keys and values and
        # the self-attention cache once; at this machine's memory bandwidth, plus the encoder as
        # measured, that is the fastest a decoder of this model can be on this machine.
        step_bytes = decode_step_bytes(config, params_np, args.batch, beam, args.decode_inputs, n)
        row["step_floor_s"] = step_bytes / bandwidth
        row["floor_tokens_per_s"] = args.batch * n / (encoder_s["mesh_t5"] + n * row["step_floor_s"])
        row["step_mb"], row["bandwidth_gbs"] = step_bytes / 1e6, bandwidth / 1e9
        # The products floor: the step's weight products alone, as XLA's CPU dots run them at this
        # step's row count, plus the encoder as measured.
        row["products_step_s"] = products_step_s(config, args.batch * beam, args.repeats)
        row["products_tokens_per_s"] = args.batch * n / (encoder_s["mesh_t5"] + n * row["products_step_s"])
        print(f"  beam {beam}: mesh_t5 {row['mesh_t5']:.0f} tokens/s, transformers {row['transformers']:.0f}, "
              f"same tokens for the first {agree} of {n}", flush=True)  # fmt: skip
        rows.append(row)
    return rows


def decode_step_bytes(config: Any, params: dict, batch: int, beams: int, inputs: int, slots: int) -> int:
    """Bytes one cached decode step must read: decoder weights, the output matrix, K/V of both attentions.

    float32; the embedding lookup reads batch x beams rows only; the self-attention cache has
    `slots` slots per row, the cross-attention keys and values one copy per input (the beams of an
    input share it).
    """
    import jax

    rows = batch * beams
    weights = sum(x.size for x in jax.tree.leaves(params["decoder"]))
    weights += params["token_embedder"]["embedding"].size if config.tie_word_embeddings else 0
    weights += params["logits_dense"]["kernel"].size if not config.tie_word_embeddings else 0
    kv = 2 * config.num_decoder_layers * config.inner_dim * (batch * inputs + rows * slots)
    return 4 * (weights + kv + rows * config.d_model)


def bench_data(args: argparse.Namespace) -> dict:
    """Tokens/s (inputs + targets, non-padding) of the span-corruption pipeline, batch 8 x 512/114."""
    from benchmarks.data_throughput import synthetic_corpus
    from mesh_t5.data import Feature, FunctionSource, Task, get_dataset, unsupervised_preprocessors
    from mesh_t5.vocab import SentencePieceVocabulary

    docs = synthetic_corpus(2000)
    vocab = SentencePieceVocabulary.train(docs[:1000], vocab_size=1000)
    source = FunctionSource(lambda split: ({"text": d} for d in docs), splits=("train",))
    feats = {"inputs": Feature(vocab), "targets": Feature(vocab)}
    task = Task("bench_run_span_corruption", source, unsupervised_preprocessors("span_corruption"), feats)
    it = get_dataset(
        task, {"inputs": 512, "targets": 114}, batch_size=args.batch, shuffle=True, seed=0, pack=True
    )
    next(it)
    tokens, start = 0, time.perf_counter()
    for _ in range(args.data_batches):
        batch = next(it)
        tokens += int(
            (batch["encoder_input_tokens"] != 0).sum() + (batch["decoder_target_tokens"] != 0).sum()
        )
    seconds = time.perf_counter() - start
    print(f"  {tokens / seconds:,.0f} tokens/s over {args.data_batches} batches", flush=True)
    return {"tokens_per_s": tokens / seconds, "batches": args.data_batches}


def _machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import jax
    import torch
    import transformers

    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GB RAM, Python {platform.python_version()}, "
        f"jax {jax.__version__}, torch {torch.__version__}, transformers {transformers.__version__}"
    )


def _training_table(results: dict) -> list[str]:
    a = results["args"]
    lines = [
        "",
        f"### Training step, batch {a['batch']} × 512 / 114, Adafactor, medians of {a['repeats']} alternating steps",
        "",
        "| model | side | s/step | tokens/s | × transformers | GFLOP/step | MFU | first step s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ref = {r["model"]: r["step_s"] for r in results["train"] if r["side"].startswith("transformers")}
    for r in results["train"]:
        lines.append(
            f"| {r['model']} | {r['side']} | {r['step_s']:.2f} | {r['tokens_per_s']:,.0f} | "
            f"{ref[r['model']] / r['step_s']:.2f} | {r['flops'] / 1e9:.0f} | {r['mfu']:.0%} | {r['first_step_s']:.1f} |"
        )
    checks = {r["model"]: (r["analytic_forward_flops"], r["torch_forward_flops"]) for r in results["train"]}
    lines += ["", "FLOPs = 3 × forward matmul FLOPs (benchmarks/flops.py); forward counted analytically vs "
              "torch.utils.flop_counter on transformers' forward: " + "; ".join(
                  f"{m} {a_ / 1e9:.2f} vs {t / 1e9:.2f} GFLOP" for m, (a_, t) in checks.items())]  # fmt: skip
    return lines


def render(results: dict) -> str:
    """Returns the markdown of one run: conditions, then one table per section."""
    a = results["args"]
    lines = [
        f"Run {results['date']} UTC, `{results['command']}`{' (reduced: --quick)' if a['quick'] else ''}.",
        f"Machine: {results['machine']}. Threads: torch {results['torch_threads']} "
        f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}), XLA all cores.",
        f"Load average (1/5/15 min) before: {results['load_before']}, after: {results['load_after']}"
        f" (the machine is shared: read ratios, which come from alternating runs in one process).",
        "",
        f"Float32 matmul ceiling ({a['ceiling_n']}³): JAX {results['ceiling']['jax']:.1f} GFLOP/s, "
        f"torch {results['ceiling']['torch']:.1f} GFLOP/s; MFU below is over the larger.",
    ]
    if "train" in results:
        lines += _training_table(results)
    if "one_core" in results:
        r = results["one_core"]
        ours, theirs = r["mesh_t5"], r["transformers"]
        lines += [
            "", f"### Training step on one core, {r['model']}, batch {a['batch']} × 512 / 114, float32, medians of "
            f"{a['one_core_repeats']} alternating steps", "",
            "The process pinned to one core (`sched_setaffinity`), torch on one thread.", "",
            "| side | s/step (min, max) | × transformers |", "| --- | ---: | ---: |",
            f"| mesh_t5 | {ours['step_s']:.2f} ({ours['min_s']:.2f}, {ours['max_s']:.2f}) | "
            f"{theirs['step_s'] / ours['step_s']:.2f} |",
            f"| transformers | {theirs['step_s']:.2f} ({theirs['min_s']:.2f}, {theirs['max_s']:.2f}) | 1.00 |",
        ]  # fmt: skip
    if "memory" in results:
        m = results["memory"]
        lines += [
            "", f"### Peak resident memory of a training process, {m['model']}, batch {a['batch']} × 512 / 114",
            "", "| side | peak RSS MB | RSS before the first step MB | step s (alone) |", "| --- | ---: | ---: | ---: |",
        ]  # fmt: skip
        for side in ("mesh_t5", "transformers"):
            r = m[side]
            lines.append(
                f"| {side} | {r['peak_rss_mb']:,.0f} | {r['rss_before_steps_mb']:,.0f} | "
                f"{', '.join(f'{t:.2f}' for t in r['step_s'])} |"
            )
    if "compile" in results:
        lines += ["", "### mesh_t5 train-step compile time (lower + compile, fresh process)", "",
                  "| model | layers (each stack) | trace s | total s |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
        for r in results["compile"]:
            lines.append(f"| {r['model']} | {r['layers']} | {r['trace_s']:.1f} | {r['compile_s']:.1f} |")
    if "lengths" in results:
        lines += ["", f"### Step time vs input length, t5-small, batch {a['batch']}", "",
                  "| inputs / targets | mesh_t5 s | transformers s | × transformers |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
        for r in results["lengths"]:
            lines.append(f"| {r['inputs']} / {r['targets']} | {r['mesh_t5']:.2f} | {r['transformers']:.2f} | "
                         f"{r['transformers'] / r['mesh_t5']:.2f} |")  # fmt: skip
    if "decode" in results:
        lines += ["", f"### Decoding, {a['decode_model']}, batch {a['batch']}, {a['decode_inputs']} input tokens, "
                  f"{a['decode_new']} new (EOS masked), encoder included, medians of {a['repeats']}", "",
                  "| search | mesh_t5 tokens/s | generate tokens/s | × generate | same tokens "
                  "| MB read per step | floor tokens/s | floor × generate | products ms/step "
                  "| products floor tokens/s | products floor × generate |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for r in results["decode"]:
            search = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
            lines.append(f"| {search} | {r['mesh_t5']:,.0f} | "
                         f"{r['transformers']:,.0f} | {r['mesh_t5'] / r['transformers']:.2f} | "
                         f"{r['agree']} / {a['decode_new']} | {r['step_mb']:,.0f} | {r['floor_tokens_per_s']:,.0f} | "
                         f"{r['floor_tokens_per_s'] / r['transformers']:.2f} | {r['products_step_s'] * 1e3:.1f} | "
                         f"{r['products_tokens_per_s']:,.0f} | {r['products_tokens_per_s'] / r['transformers']:.2f} |")  # fmt: skip
        r = results["decode"][0]
        lines += ["", f"Encoder alone (batch {a['batch']} × {a['decode_inputs']}, median): mesh_t5 "
                  f"{r['encoder_s']['mesh_t5']:.3f} s, transformers {r['encoder_s']['transformers']:.3f} s. "
                  f"Floor = the encoder as measured + {a['decode_new']} steps each reading the MB above once at "
                  f"the measured memory bandwidth ({r['bandwidth_gbs']:.1f} GB/s: an in-place pass over 64 MB, "
                  "read + written): what mesh_t5 would reach with its encoder as it is and every decode step as fast as "
                  "this machine can read what the step needs. Products floor = the encoder as measured + "
                  f"{a['decode_new']} times the step's weight products alone (every decoder kernel and the output "
                  "matrix at the step's rows, in a jitted loop compiled as a decode is): what mesh_t5 would reach if "
                  "nothing but those products cost time, as a decode runs them (the native kernel where it is "
                  "available, else XLA's dots). mesh_t5 decodes params "
                  f"prepared once ({r['prepare_s'] * 1e3:.0f} ms: decoder layers unstacked, their weights and the "
                  "output matrix packed for the native kernel), "
                  "as `inference.generate_ids` and evaluation do for a run of several batches; a single-batch "
                  "call does that work inside its decode."]  # fmt: skip
    if "data" in results:
        consume = results["data"]["step_tokens_per_s"]
        lines += ["", f"Data pipeline (span corruption + packing, 512 / 114, one process): "
                  f"{results['data']['tokens_per_s']:,.0f} tokens/s, {results['data']['tokens_per_s'] / consume:.0f}× "
                  f"the {consume:,.0f} tokens/s a t5-small float32 step consumes."]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replaces the text between the BEGIN and END markers of path (appends the section if absent)."""
    doc = path.read_text()
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in doc and END in doc:
        doc = doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END) :]
    else:
        doc = doc.rstrip("\n") + "\n\n## `make bench`: latest run\n\n" + block + "\n"
    path.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced run: a few minutes")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                        help="replace BENCHMARKS.md's marked section (default: on, off with --quick)")  # fmt: skip
    parser.add_argument("--sections", default="ceiling,train,one_core,memory,compile,lengths,decode,data")
    parser.add_argument("--repeats", type=int, help="timed steps per side (default 5, quick 2)")
    parser.add_argument("--models", help="comma-separated training models (default t5-small,t5.1.1-small)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        workers = {
            "memory": steps.memory_worker,
            "compile": steps.compile_worker,
            "one_core": steps.one_core_worker,
        }
        worker = workers[spec["kind"]]
        print(json.dumps(worker(spec)))
        return
    quick = args.quick
    args.batch = 2 if quick else 8
    args.repeats = args.repeats or (2 if quick else 5)
    args.models = (
        args.models.split(",") if args.models else ["t5-small"] if quick else ["t5-small", "t5.1.1-small"]
    )
    args.ceiling_n = 2048 if quick else 4096
    args.lengths = [256, 512] if quick else [256, 512, 1024]
    args.length_repeats = 1 if quick else 2
    args.one_core_repeats = 1 if quick else 3
    args.decode_model, args.decode_inputs = "t5-small", 256
    args.decode_new = 16 if quick else 64
    args.data_batches = 5 if quick else 20
    compile_configs = [("t5-small", 2), ("t5-small", 6)] if quick else [
        ("t5-small", 2), ("t5-small", 6), ("t5-small", 12), ("t5-small", 24), ("t5-base", 12)]  # fmt: skip
    sections = set(args.sections.split(","))

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    command = " ".join(["python -m benchmarks.run", *sys.argv[1:]])
    results: dict = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "command": command, "machine": _machine(), "torch_threads": torch.get_num_threads(),
        "load_before": steps.load_average(),
    }  # fmt: skip
    print(results["machine"], f"load {results['load_before']}", flush=True)
    print("ceiling", flush=True)
    results["ceiling"] = matmul_ceiling(args.ceiling_n, 3)
    ceiling = max(results["ceiling"].values())
    results["args"] = {k: v for k, v in vars(args).items() if k != "worker"}
    write = args.write if args.write is not None else not quick
    target = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"

    def save() -> None:  # after every section, so an interrupted run leaves what it measured
        results["load_after"] = steps.load_average()
        if write:
            write_section(target, render(results))

    if "train" in sections:
        print("training step", flush=True)
        results["train"] = bench_training(args, ceiling)
        save()
    shape = {"batch": args.batch, "inputs": 512, "targets": 114}
    if "one_core" in sections:
        print("training step on one core (a subprocess)", flush=True)
        spec = {"kind": "one_core", "model": "t5-small", "repeats": args.one_core_repeats, **shape}
        results["one_core"] = {"model": "t5-small", **_worker(spec)}
        for side in ("mesh_t5", "transformers"):
            print(f"  {side}: {results['one_core'][side]['step_s']:.2f} s/step", flush=True)
        save()
    if "memory" in sections:
        print("peak memory (a subprocess per framework)", flush=True)
        spec = {
            "kind": "memory",
            "model": "t5-small",
            "steps": 2,
            "threads": torch.get_num_threads(),
            **shape,
        }
        results["memory"] = {"model": "t5-small"}
        for side in ("mesh_t5", "transformers"):
            results["memory"][side] = _worker({**spec, "framework": side})
            print(f"  {side}: peak {results['memory'][side]['peak_rss_mb']:,.0f} MB", flush=True)
        save()
    if "compile" in sections:
        print("compile time (a subprocess)", flush=True)
        results["compile"] = _worker({"kind": "compile", "configs": compile_configs, **shape})["compile"]
        for r in results["compile"]:
            print(f"  {r['model']} {r['layers']} layers: {r['compile_s']:.1f} s", flush=True)
        save()
    if "decode" in sections:
        print("decoding", flush=True)
        results["decode"] = bench_decode(args)
        save()
    if "data" in sections and "train" in sections:
        print("data pipeline", flush=True)
        results["data"] = bench_data(args)
        step = next(r for r in results["train"] if r["side"] == "mesh_t5 float32")
        results["data"]["step_tokens_per_s"] = step["tokens_per_s"]
        save()
    if "lengths" in sections:
        print("step time vs input length", flush=True)
        results["lengths"] = bench_lengths(args)
        save()
    save()
    print("\n" + render(results))
    if write:
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
