"""`mesh-t5 tasks`: lists the registered tasks and mixtures (name, source, splits, rates)."""

from __future__ import annotations

import argparse
import importlib
import re

from mesh_t5 import validate
from mesh_t5.errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = validate.ArgumentParser(prog="mesh-t5 tasks", description=__doc__)
    p.add_argument("pattern", nargs="?", default="", help="regular expression the names must match")
    p.add_argument(
        "--module",
        action="append",
        default=[],
        help="import this Python module first (repeatable): it registers your own tasks",
    )
    p.add_argument("--mixtures", action="store_true", help="show each mixture's tasks and normalised rates")
    return p


def import_modules(modules: list[str]) -> None:
    """Imports user modules that register tasks; a missing one is a one-line error."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            raise UserError(f"--module {name!r} cannot be imported ({e}); check PYTHONPATH") from None
        except Exception as e:  # the user's module is broken: name it and its error, not our traceback
            raise UserError(
                f"--module {name!r} raised {type(e).__name__}: {(str(e).splitlines() or [''])[0]} while "
                f"importing; fix the module "
                f"(python -c 'import {name}' shows where)"
            ) from None


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    import_modules(args.module)
    from mesh_t5 import data

    try:
        pattern = re.compile(args.pattern)
    except re.error as e:
        raise UserError(
            f"pattern {args.pattern!r} is not a regular expression ({e}); pass a Python regex such as ^glue_"
        ) from None
    tasks = [n for n in data.list_tasks() if pattern.search(n)]
    mixtures = [n for n in data.list_mixtures() if pattern.search(n)]
    width = max(map(len, tasks + mixtures), default=4)
    print(f"{len(tasks)} tasks")
    for name in tasks:
        task = data.get_task(name)
        source = type(task.source).__name__
        if isinstance(task.source, data.TfdsSource):  # the TFDS dataset and version it reads
            source += f" {task.source.name}"
        print(f"  {name.ljust(width)}  {source}  splits: {', '.join(task.splits) or '-'}")
    print(f"{len(mixtures)} mixtures")
    for name in mixtures:
        mixture = data.get_mixture(name)
        names = [t.name for t in mixture.tasks]
        print(f"  {name.ljust(width)}  {len(names)} tasks")
        if args.mixtures:
            try:
                rates = mixture.rates()
            except UserError as e:  # rates by example count need the data present
                print(f"    (rates unavailable: {e})")
                continue
            for task_name, rate in rates.items():
                print(f"    {task_name.ljust(width)}  {rate:.4f}")
    return 0
