"""Gin at the edges: the `--gin_file`, `--gin.NAME=VALUE` and `--gin_search_paths` flags, and how every
command wires them (the last section).

Library functions stay plain Python; a command names the ones it exposes in its `CONFIGURABLES`
({gin name: function}), which `configure` registers with `gin.external_configurable` before parsing.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import tokenize
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gin
from gin import config_parser

from mesh_t5 import validate
from mesh_t5.config import T5Config
from mesh_t5.errors import UserError

PACKAGE_GIN_DIR = Path(__file__).parent / "gin"

# Model files bind `T5Config.<field> = ...` and set `MODEL_CONFIG = @T5Config()`. Registered with the
# config unlocked: a command imported after another one finalized gin's config imports this module.
with gin.unlock_config():
    gin.external_configurable(T5Config, "T5Config")


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
    """Adds --gin_file (repeatable) and --gin_search_paths to an argparse parser.

    `--gin.NAME=VALUE` flags cannot be declared to argparse (NAME is free), so
    `split_gin_bindings` takes them out of argv first.
    """
    parser.add_argument(
        "--gin_file",
        action="append",
        default=[],
        help="gin file to parse (repeatable); searched in --gin_search_paths and the shipped gin/ dir",
    )
    parser.add_argument(
        "--gin_search_paths",
        default="",
        help="comma-separated directories to search for --gin_file and gin `include`s",
    )


_BINDING_FLAG = re.compile(r"^--gin\.(?P<name>[^=\s]+)(?:=(?P<value>.*))?$", re.S)


def split_gin_bindings(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separates `--gin.NAME=VALUE` (or `--gin.NAME VALUE`) flags from the rest of argv.

    Returns (remaining argv, ["NAME = VALUE", ...]). A bare value that is not valid
    gin (a path, a task name) is quoted, so `--gin.MODEL_DIR=/tmp/run` works as
    t5x users expect without shell quoting.
    """
    rest: list[str] = []
    bindings: list[str] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        match = _BINDING_FLAG.match(argv[i])
        if not match:
            rest.append(argv[i])
            i += 1
            continue
        name, value = match.group("name"), match.group("value")
        if value is None:
            if i + 1 >= len(argv):
                raise UserError(f"--gin.{name} has no value; write --gin.{name}=VALUE")
            value = argv[i + 1]
            i += 1
        bindings.append(f"{name} = {_gin_value(value)}")
        i += 1
    return rest, bindings


def _gin_value(value: str) -> str:
    """Returns the gin text of a flag value: gin literals and references (`@name`, `@name()`,
    `%MACRO`) as written, anything else (a path, a task name) quoted as a string."""
    text = value.strip()
    if not text:
        return "''"
    try:
        # skip_unknown: `@constant_schedule()` parses before the command registers constant_schedule.
        parser = config_parser.ConfigParser(text, gin.config.ParserDelegate(skip_unknown=True))
        parser.parse_value()
        whole = parser.current_token.type in (tokenize.NEWLINE, tokenize.ENDMARKER)
    except Exception:  # gin raises SyntaxError, TokenError, ValueError...
        whole = False
    if whole:
        return text
    if text[0] in "@%[{(":
        raise UserError(
            f"{value!r} is not a valid gin value; write a literal ([1, 2], {{'inputs': 8}}), "
            "a reference (@name or @name()) or a macro (%NAME)"
        )
    return repr(text)


def _search_paths(extra: str | Sequence[str]) -> list[str]:
    paths = [p for p in (extra.split(",") if isinstance(extra, str) else extra) if p]
    for p in paths:
        if not os.path.isdir(p):
            raise UserError(
                f"--gin_search_paths entry {p!r} is not a directory; "
                "pass existing directories, comma-separated"
            )
    return [*paths, str(PACKAGE_GIN_DIR), os.getcwd()]


def _resolve(gin_file: str, search_paths: Sequence[str]) -> str:
    candidates = [gin_file] if os.path.isabs(gin_file) else [os.path.join(p, gin_file) for p in search_paths]
    if not gin_file.endswith(".gin"):
        candidates += [c + ".gin" for c in candidates]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    directory = next((c for c in candidates if os.path.isdir(c)), None)
    if directory:
        raise UserError(f"gin file {gin_file!r} is a directory ({directory}); pass a .gin file")
    raise UserError(
        f"gin file {gin_file!r} not found in {', '.join(search_paths)}; "
        "pass a path or add its directory with --gin_search_paths"
    )


def parse_gin(
    gin_files: Sequence[str],
    bindings: Sequence[str],
    search_paths: str | Sequence[str] = "",
    finalize: bool = True,
) -> None:
    """Parses gin files and bindings into a fresh gin config; a gin error becomes a one-line UserError.

    The config is cleared first: one command is one configuration, also when several commands
    run in one process (the demo, tests).
    """
    gin.clear_config()
    paths = _search_paths(search_paths)
    for p in paths:
        gin.add_config_file_search_path(p)
    files = [_resolve(f, paths) for f in gin_files]
    quiet = _IncludeProbeFilter()
    logging.getLogger().addFilter(quiet)
    try:
        gin.parse_config_files_and_bindings(files, bindings, finalize_config=finalize)
    except OSError as e:
        raise UserError(f"gin: cannot read {e.filename or e}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        bad = next((f for f in files if not _is_utf8(f)), "included by the --gin_file files")
        raise UserError(f"a gin file ({bad}) is not UTF-8 text; pass .gin files") from None
    except Exception as e:  # gin raises ValueError, KeyError, SyntaxError, ParseError...
        raise UserError(f"gin: {_first_line(e)}") from None
    finally:
        logging.getLogger().removeFilter(quiet)


class _IncludeProbeFilter(logging.Filter):
    """Drops gin's "Path not found" errors: gin probes every search path for an `include`d file and
    logs each miss, though the file is then found on a later path (a missing one still fails)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Path not found: %s"


def _is_utf8(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            f.read()
    except UnicodeDecodeError:
        return False
    return True


def _first_line(error: BaseException) -> str:
    unset_macro = re.search(r"No bindings specified for '([\w.]+)/gin\.macro'", str(error))
    if unset_macro:
        return f"gin macro {unset_macro.group(1)} is not set; pass --gin.{unset_macro.group(1)}=VALUE"
    text = str(error).strip().splitlines()
    message = text[0] if text else type(error).__name__
    advice = "" if "; " in message else "; fix the gin file or --gin flag named here"
    unknown = re.search(r"No configurable matching reference '@?([^'()]+)", message)
    if unknown:
        message, advice = f"no configurable named {unknown.group(1)!r}", "; check its spelling"
    # gin appends "In file ..., line ..." on a later line: keep where it came from.
    where = next(
        (line.strip() for line in text[1:] if line.strip().startswith(("In file", "In bindings"))), ""
    )
    return f"{message} ({where}){advice}" if where else message + advice


def query_macro(name: str, required: bool = True) -> object:
    """The value bound to a gin macro; a missing required one is reported by name."""
    try:
        return gin.query_parameter(f"%{name}")
    except ValueError:
        if required:
            raise UserError(f"required gin macro {name} is not set; pass --gin.{name}=VALUE") from None
        return None


# ------------------------------------------------------------------------------------------ commands
# `args, bindings = parse_flags(parser, argv)`; `wrapped = configure(args, bindings, CONFIGURABLES)`;
# `call(wrapped[name], **flags)`: flags win over gin bindings, which win over defaults.

_REGISTERED: dict[str, Any] = {}


def register(configurables: Mapping[str, Any]) -> dict[str, Any]:
    """Returns {name: gin-wrapped fn} for {name: fn}, registering each with gin once per process."""
    with gin.unlock_config():  # an earlier command in this process may have finalized (locked) the config
        for name, fn in configurables.items():
            if name not in _REGISTERED:
                _REGISTERED[name] = gin.external_configurable(fn, name)
    return {name: _REGISTERED[name] for name in configurables}


def add_field_flags(parser: argparse.ArgumentParser, cls: Any, names: Sequence[str] | None = None) -> None:
    """Adds --NAME per field of dataclass `cls` (those in `names`, if given) declared with `config.option`:
    its help, the type of its default (a bool default is a switch) and any argparse keywords it names.
    Flags default to None, so one left out leaves the gin binding or the field's default in force."""
    for field in dataclasses.fields(cls):
        if names is None or field.name in names:
            kind = type(field.default)
            flag = (
                {"action": "store_true"} if kind is bool else {"type": str if field.default is None else kind}
            )
            flag.update(field.metadata["flag"])
            parser.add_argument(f"--{field.name}", default=None, help=field.metadata["help"], **flag)


def flag_values(args: argparse.Namespace, cls: Any) -> dict[str, Any]:
    """Returns {field: value} of the flags `add_field_flags` added for `cls` that the command line set."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if getattr(args, f.name, None) is not None
    }


def parse_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Returns (the parsed flags, ["NAME = VALUE", ...]); `--gin.NAME=VALUE` flags are taken out first."""
    rest, bindings = split_gin_bindings(argv)
    return parser.parse_args(rest), bindings


def parse_gin_flags(
    prog: str, help_text: str, argv: Sequence[str], gin_file_required: bool = True
) -> tuple[argparse.Namespace, list[str]]:
    """As `parse_flags`, for a command configured by gin alone (train, eval): a flag other than
    --gin_file, --gin_search_paths and --gin.NAME=VALUE is refused by name."""
    rest, bindings = split_gin_bindings(argv)
    parser = validate.ArgumentParser(
        prog=prog, description=help_text, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_gin_flags(parser)
    args, unknown = parser.parse_known_args(rest)
    if unknown:
        raise UserError(
            f"unknown flag {unknown[0]!r}; use --gin_file, --gin_search_paths or --gin.NAME=VALUE"
        )
    if gin_file_required and not args.gin_file:
        raise UserError(
            "no --gin_file given; pass a model and a run file, e.g. "
            "--gin_file=models/tiny.gin --gin_file=runs/pretrain.gin"
        )
    return args, bindings


def configure(
    args: argparse.Namespace,
    bindings: Sequence[str],
    configurables: Mapping[str, Any] | None = None,
    required: Sequence[str] = (),
    finalize: bool = True,
) -> dict[str, Any]:
    """Registers a command's configurables, parses its --gin_file and --gin.* flags into a fresh config,
    reports a missing required macro by name, then finalizes; returns {name: gin-wrapped fn}."""
    wrapped = register(configurables or {})
    # Required macros are checked before finalizing: gin's own finalize error names "NAME/gin.macro".
    parse_gin(args.gin_file, bindings, args.gin_search_paths, finalize=False)
    for name in required:
        query_macro(name)
    if finalize:
        try:
            gin.finalize()
        except Exception as e:
            raise UserError(f"gin: {_first_line(e)}") from None
    return wrapped


def call(configurable: Any, **kwargs: Any) -> Any:
    """Calls a gin-wrapped function; a UserError keeps only its first line (gin appends "In call to...")."""
    try:
        return configurable(**kwargs)
    except UserError as e:
        lines = str(e).strip().splitlines()
        raise UserError(lines[0] if lines else type(e).__name__) from None
