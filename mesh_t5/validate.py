"""Checks of user-given numbers, paths and texts, shared by the commands and the Python API.

Each check returns the cleaned value or raises a one-line `UserError` naming the value and what
to do instead. Checks never create anything: commands run them all before writing a file, so a
refused run leaves the disk as it found it.
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import numpy as np

from mesh_t5.errors import UserError


class ArgumentTypeError(UserError, TypeError):
    """An argument of the wrong type (a str where a list of str is expected, ...): still one line,
    and caught by `except TypeError` as Python users expect."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one-line UserErrors (argparse prints the usage block, then exits)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message}; `{self.prog} --help` lists the flags")


# ------------------------------------------------------------------------------------------ numbers


def _describe(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def integer(value: Any, name: str, minimum: int | None = 1, maximum: int | None = None) -> int:
    """Returns `value` as an int in [minimum, maximum]; a bool, float or string is refused."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    low = "" if minimum is None else f" >= {minimum}"
    high = "" if maximum is None else f" <= {maximum}"
    if not ok:
        raise UserError(
            f"{name}={_describe(value)} must be an integer{low}{' and' if low and high else ''}{high}"
        )
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise UserError(f"{name}={value} must be{low}{' and' if low and high else ''}{high}")
    return value


def optional_integer(value: Any, name: str, minimum: int | None = 1) -> int | None:
    """As `integer`, with None allowed (meaning "no limit" or "not set")."""
    return None if value is None else integer(value, name, minimum)


def number(
    value: Any,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    open_min: bool = False,
    open_max: bool = False,
) -> float:
    """Returns a finite float in the interval given (open at an end when open_min/open_max)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise UserError(
            f"{name}={_describe(value)} must be a finite number"
            + _interval(minimum, maximum, open_min, open_max)
        )
    given, value = value, float(value)
    too_low = minimum is not None and (value <= minimum if open_min else value < minimum)
    too_high = maximum is not None and (value >= maximum if open_max else value > maximum)
    if too_low or too_high:
        raise UserError(f"{name}={given} must be{_interval(minimum, maximum, open_min, open_max)}")
    return value


def _interval(minimum: float | None, maximum: float | None, open_min: bool, open_max: bool) -> str:
    if minimum is not None and maximum is not None:
        return f" in {'(' if open_min else '['}{minimum:g}, {maximum:g}{')' if open_max else ']'}"
    if minimum is not None:
        return f" {'>' if open_min else '>='} {minimum:g}"
    if maximum is not None:
        return f" {'<' if open_max else '<='} {maximum:g}"
    return ""


def boolean(value: Any, name: str) -> bool:
    """Returns value if it is True or False (gin's `1` or `'yes'` are refused, not guessed at)."""
    if not isinstance(value, bool | np.bool_):
        raise UserError(f"{name}={_describe(value)} must be True or False")
    return bool(value)


def one_of(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """Returns value if it is one of choices."""
    choices = tuple(choices)
    if not isinstance(value, str | int | float | type(None)) or value not in choices:
        raise UserError(f"{name}={_describe(value)} is unknown; use one of {', '.join(map(str, choices))}")
    return value


def text(value: Any, name: str) -> str:
    """Returns a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{name}={_describe(value)} must be a non-empty string")
    return value


def feature_lengths(lengths: Any, name: str = "TASK_FEATURE_LENGTHS") -> dict[str, int]:
    """Returns {feature: length >= 1}, e.g. {"inputs": 512, "targets": 114}."""
    example = "{'inputs': 512, 'targets': 114}"
    if not isinstance(lengths, Mapping) or not lengths:
        raise UserError(f'{name}={_describe(lengths)} must be a dict of feature lengths like "{example}"')
    out = {}
    for feature, length in lengths.items():
        if not isinstance(feature, str):
            raise UserError(f"{name} key {feature!r} must be a feature name like 'inputs'")
        out[feature] = integer(length, f"{name}[{feature!r}]", minimum=1)
    return out


# ------------------------------------------------------------------------------------------ paths


def _nearest_existing(path: str) -> str:
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return parent


def input_file(path: Any, name: str, hint: str = "pass the path of an existing file") -> str:
    """Returns path if it names a readable regular file (a directory or a missing path is refused)."""
    return _existing(path, name, hint, directory=False)


def input_dir(path: Any, name: str, hint: str = "pass the path of an existing directory") -> str:
    """Returns path if it names a readable directory (a file or a missing path is refused)."""
    return _existing(path, name, hint, directory=True)


def _existing(path: Any, name: str, hint: str, directory: bool) -> str:
    path = _path(path, name)
    what = f"{name} {path}"
    if not os.path.exists(path):
        raise UserError(f"{what} does not exist{_hint(hint)}")
    if os.path.isdir(path) != directory:
        kinds = ("a file", "a directory") if directory else ("a directory", "a file")
        raise UserError(f"{what} is {kinds[0]}, not {kinds[1]}{_hint(hint)}")
    if not os.access(path, os.R_OK | (os.X_OK if directory else 0)):
        raise UserError(f"{what} cannot be read (permission denied); check its permissions")
    return path


def output_dir(path: Any, name: str, *, empty: bool = True) -> str:
    """Returns path if a directory can be written there: new, or existing (and empty when `empty`).

    Creates nothing: a missing directory's nearest existing ancestor must be a writable directory.
    """
    path = _path(path, name)
    what = f"{name} {path}"
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UserError(f"{what} is a file, not a directory; pick a directory path")
        if empty and os.listdir(path):
            raise UserError(f"{what} exists and is not empty; pick a new or empty directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{what} is not writable; pick a directory you can write to")
        return path
    _check_creatable(path, what)
    return path


def output_file(path: Any, name: str, *, overwrite: bool = False) -> str:
    """Returns path if a file can be written there (an existing one only with overwrite)."""
    path = _path(path, name)
    what = f"{name} {path}"
    if os.path.isdir(path):
        raise UserError(f"{what} is a directory; pass a file path")
    if os.path.exists(path):
        if not overwrite:
            raise UserError(f"{what} exists; pass --overwrite to replace it or pick another path")
        if not os.access(path, os.W_OK):
            raise UserError(f"{what} is not writable; pick another path")
        return path
    _check_creatable(path, what)
    return path


def _check_creatable(path: str, what: str) -> None:
    ancestor = _nearest_existing(path)
    if not os.path.isdir(ancestor):
        raise UserError(f"cannot create {what}: {ancestor} is a file, not a directory; pick another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"cannot create {what}: {ancestor} is not writable; pick a path you can write to")


def _path(path: Any, name: str) -> str:
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise ArgumentTypeError(f"{name}={_describe(path)} must be a path")
    return os.fspath(path)


def _hint(hint: str) -> str:
    return f"; {hint}" if hint else ""


def read_text(path: str, name: str) -> str:
    """Returns the UTF-8 text of a file; bytes that are not UTF-8 are reported with their line."""
    input_file(path, name)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(
            f"{name} {path}:{line} is not UTF-8 (byte 0x{raw[e.start]:02x}); convert the file to UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8"
        ) from None


# ------------------------------------------------------------------------------------------ texts and tokens


def strings(texts: Any, name: str) -> list[str]:
    """Returns texts as a list of str; a lone str (which would be read character by character) is refused."""
    if isinstance(texts, str | bytes):
        raise ArgumentTypeError(
            f"{name} must be a list of strings, not a single {type(texts).__name__}; wrap it: [text]"
        )
    if not isinstance(texts, Iterable):
        raise ArgumentTypeError(f"{name} must be a list of strings; got {type(texts).__name__}")
    out = list(texts)
    for i, item in enumerate(out):
        if not isinstance(item, str):
            raise ArgumentTypeError(f"{name}[{i}] is a {type(item).__name__}; pass strings")
    return out


def token_ids(tokens: Any, name: str, vocab_size: int) -> np.ndarray:
    """Returns tokens as an int32 [batch, length] array of ids in [0, vocab_size)."""
    try:
        array = np.asarray(tokens)
    except ValueError:  # ragged rows
        raise UserError(f"{name} rows have different lengths; pad them with 0 to one length") from None
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise ArgumentTypeError(
            f"{name} must be a 2-D integer array [batch, length]; got shape {array.shape} {array.dtype}"
        )
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        bad = array.min() if array.min() < 0 else array.max()
        raise UserError(
            f"{name} holds token id {bad}, outside the model's vocabulary [0, {vocab_size}); "
            "pass ids of the model's own vocabulary"
        )
    return array.astype(np.int32)


def vocabulary_fits(vocab: Any, model_vocab_size: int, what: str) -> None:
    """Refuses a vocabulary with more ids than the model's embedding has rows (it would index past it)."""
    size = int(vocab.vocab_size)
    if size > model_vocab_size:
        raise UserError(
            f"{what} has {size} ids but the model's vocab_size is {model_vocab_size}; use the model's own "
            f"vocabulary or a model with vocab_size >= {size} (T5Config.vocab_size)"
        )


def task_vocabularies_fit(tasks: Iterable[Any], model_vocab_size: int) -> None:
    """Refuses a task whose output features' vocabularies have more ids than the model."""
    for task in tasks:
        for name, feature in task.output_features.items():
            vocabulary_fits(feature.vocabulary, model_vocab_size, f"task {task.name!r} {name} vocabulary")


def feature_lengths_fit(lengths: Mapping[str, int], tasks: Iterable[Any], name: str = "TASK_FEATURE_LENGTHS"):
    """Refuses a feature length no task has (a typo such as 'target' would leave 'targets' unset)."""
    known = {"inputs", "targets"}.union(*(task.output_features for task in tasks))
    unknown = sorted(set(lengths) - known)
    if unknown:
        raise UserError(
            f"{name} names feature(s) {', '.join(map(repr, unknown))} that no task has; "
            f"use the task features: {', '.join(sorted(known))}"
        )


def same_length(a: Sequence[Any], b: Sequence[Any], what_a: str, what_b: str) -> None:
    if len(a) != len(b):
        raise UserError(f"{len(a)} {what_a} but {len(b)} {what_b}; pass one of each per example")
