"""`mesh-t5`: the command line. Each subcommand lives in `mesh_t5/commands/<name>.py`
and exposes `main(argv: list[str]) -> int`; this module only dispatches and turns a
UserError into one line on stderr and a non-zero exit."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from mesh_t5.errors import UserError
from mesh_t5.stopping import Interrupted

# Commands that touch devices and so may run as one process per host (README: Multi-host).
MULTI_HOST_COMMANDS = ("train", "eval", "infer", "export")
# Commands that find tasks and mixtures by name: T5's catalogue (mesh_t5.tasks) is registered first.
CATALOGUE_COMMANDS = ("train", "eval", "infer", "tasks", "cache_tasks")

COMMANDS = {
    "train": "pre-train or fine-tune a model (run config by gin: pretrain.gin, finetune.gin)",
    "eval": "evaluate a checkpoint on a task or mixture",
    "infer": "predict outputs for inputs, or score given targets",
    "export": "write a TensorFlow SavedModel (text in, text out)",
    "convert": "convert checkpoints: Hugging Face <-> mesh_t5, Mesh-TF -> mesh_t5",
    "plan": "per-device memory of a model on a mesh, without allocating it",
    "tasks": "list the registered tasks and mixtures",
    "experiments": "the paper's Tables 1-14 as named configurations (mesh-t5 train --experiment=NAME)",
    "c4": "build a C4-style corpus from Common Crawl WET files (Apache Beam)",
    "cache_tasks": "run tasks' deterministic preprocessing once into a cache (Apache Beam)",
    "demo": "pre-train, fine-tune, evaluate, decode and export a small T5, offline",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mesh-t5 COMMAND [--gin_file=F] [--gin.NAME=VALUE] [--gin_search_paths=D] ...", ""]
    lines += [f"  {name.ljust(width)}  {text}" for name, text in COMMANDS.items()]
    lines += [
        "",
        "`mesh-t5 COMMAND --help` describes a command; `--verbose` (any command) keeps the",
        "start-up logs of TensorFlow, absl and orbax that are hidden by default.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], [a for a in argv[1:] if a != "--verbose"]
    if len(rest) == len(argv) - 1:
        from mesh_t5.logging_utils import quiet_startup

        quiet_startup()
    if name not in COMMANDS:
        print(f"mesh-t5: error: unknown command {name!r}; pick one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        # Modules that register gin configurables at import do so with the config unlocked (an earlier
        # command in this process may have finalized it): tests/test_cli.py checks each of them.
        module = importlib.import_module(f"mesh_t5.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"mesh_t5.commands.{name}":
            print(f"mesh-t5 {name}: error: this command is not available in this build", file=sys.stderr)
            return 2
        raise
    try:
        if name in MULTI_HOST_COMMANDS:
            rest = _join_multi_host_run(rest)
        if name in CATALOGUE_COMMANDS:
            from mesh_t5 import tasks  # noqa: F401
        return int(module.main(rest) or 0)
    except UserError as e:
        print(f"mesh-t5 {name}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:  # stopped on SIGTERM/SIGINT after saving: 143 / 130, as the shell would say
        lines = str(e).strip().splitlines()  # gin appends "In call to configurable ..." lines
        print(f"mesh-t5 {name}: {lines[0] if lines else 'interrupted'}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"mesh-t5 {name}: interrupted", file=sys.stderr)
        return 130
    finally:
        # A command's gin bindings end with it: in a notebook or script that runs a command and then
        # calls the library, a left-over binding (e.g. get_dataset.use_cached) would silently apply.
        if "gin" in sys.modules:
            sys.modules["gin"].clear_config()


def _join_multi_host_run(argv: list[str]) -> list[str]:
    """Takes --coordinator_address/--num_processes/--process_id out of argv and joins the run.

    Done here, before the command imports anything that touches a device, so every
    device-using command is multi-host capable; with no flags, no MESH_T5_* environment and no
    detected cluster it does nothing.
    """
    import argparse

    from mesh_t5 import distributed

    parser = argparse.ArgumentParser(add_help=False)
    distributed.add_flags(parser)
    args, rest = parser.parse_known_args(argv)
    distributed.initialize_from_args(args)
    return rest


if __name__ == "__main__":
    sys.exit(main())
