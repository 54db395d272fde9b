"""`mesh-t5 cache_tasks --tasks=A,B --output=DIR [--module=M] [--runner=...] [beam options]`: runs the tasks'
deterministic preprocessing (up to tokenize) once, as an Apache Beam job, into DIR/<task>; a task reads it
with `get_dataset(..., use_cached=True)` when DIR is in $MESH_T5_CACHE_DIRS (or `data.cache.add_cache_dirs`).
"""

from __future__ import annotations

import argparse
import os

from mesh_t5.commands.c4 import import_beam_module, quiet_logs, with_default_runner
from mesh_t5.commands.tasks import import_modules
from mesh_t5.errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mesh-t5 cache_tasks", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", required=True, help="comma-separated task names")
    p.add_argument("--output", required=True, help="the cache directory; each task gets DIR/<task>")
    p.add_argument("--module", action="append", default=[], help="import this module first (repeatable)")
    p.add_argument("--num_shards", type=int, default=4, help="shards per split (default 4)")
    return p


def main(argv: list[str]) -> int:
    args, beam_args = _parser().parse_known_args(argv)
    quiet_logs()
    import_modules(args.module)
    cache_beam = import_beam_module("cache_beam", "cache_tasks")
    beam_args = with_default_runner(beam_args)
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    if not names:
        raise UserError("--tasks is empty; give task names separated by commas")
    modules = ["mesh_t5.tasks", *args.module]  # what remote Beam workers import to find the tasks by name
    infos = cache_beam.run(
        names, args.output, modules=modules, num_shards=args.num_shards, pipeline_args=beam_args
    )
    for name, info in infos.items():
        print(f"mesh-t5 cache_tasks: {os.path.join(args.output, name)}")
        for split, s in info["splits"].items():
            tokens = ", ".join(f"{k} {v}" for k, v in s["tokens"].items())
            print(
                f"  {split}: {s['num_examples']} examples (of {s['num_source_examples']}), tokens: {tokens}"
            )
    return 0
