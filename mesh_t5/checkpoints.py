"""Checkpoints with orbax: training checkpoints (state + data-pipeline state) and model dirs.

A training MODEL_DIR holds:

    config.json                T5Config of the run
    vocab/<file>               a copy of the vocabulary file (when the vocabulary has one)
    checkpoints/<step>/state   {"step", "params", "opt_state"} (orbax, sharded, atomic)
    checkpoints/<step>/meta    JSON: the data pipeline state and run facts, so a resume is exact

An exported model dir (`save_model`) holds config.json, vocab/<file> and params/ (orbax).
`load_model` reads either kind (a training dir gives its latest checkpoint's params).
Nothing here deletes or overwrites a finished checkpoint except orbax's keep-the-last-K rule; an
unreadable one is renamed aside to `<step>.corrupt` (never counted as a step again), and what a
failed or interrupted save left behind (`<step>.orbax-checkpoint-tmp*`) is removed.
"""

from __future__ import annotations

import errno
import filecmp
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mesh_t5 import network
from mesh_t5.config import T5Config
from mesh_t5.errors import CheckpointError

CONFIG_FILE = "config.json"
VOCAB_DIR = "vocab"
PARAMS_DIR = "params"
CHECKPOINTS_DIR = "checkpoints"
PARTIAL_SUFFIX = ".orbax-checkpoint-tmp"  # orbax writes <step>.orbax-checkpoint-tmp*, then renames it
CORRUPT_SUFFIX = ".corrupt"  # "<step>.corrupt" is not a step name to orbax ("<step>_corrupt" would be)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """{"encoder/layers/mlp/wo": shape, ...} for every leaf of the tree."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape) for path, leaf in flat}


def check_shapes(expected: Any, found: Any, where: str) -> None:
    """Raises CheckpointError naming the first parameter whose shape (or presence) differs."""
    want, have = _shapes(expected), _shapes(found)
    for name, shape in want.items():
        if name not in have:
            raise CheckpointError(
                f"checkpoint {where} has no parameter {name} (shape {shape}) that the model config needs; "
                "use a model config that matches the checkpoint"
            )
        if have[name] != shape:
            raise CheckpointError(
                f"checkpoint {where}: parameter {name} has shape {have[name]} but the model config needs {shape}; "
                "use a model config that matches the checkpoint"
            )


def _abstract(tree: Any, shardings: Any | None) -> Any:
    """ShapeDtypeStructs with shardings (default: the first device) for orbax restore targets."""
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def failure_reason(error: BaseException) -> str:
    """A short reason for a failed read or write: the OS error when one is named, else the innermost message."""
    while (error.__cause__ or error.__context__) is not None:
        if isinstance(error, OSError) and error.strerror:
            break
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    if isinstance(error, OSError) and error.strerror:
        return f"[Errno {error.errno}] {error.strerror}"
    text = str(error).strip()
    # tensorstore/orbax wrap the OS error in a long message: name it the way Python would.
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO, errno.ENOENT):
        if os.strerror(code) in text:
            return f"[Errno {code}] {os.strerror(code)}"
    first = text.splitlines()[0] if text else type(error).__name__
    first = re.sub(r' in OCDBT database at local file "[^"]*"', "", first)  # tensorstore's long location
    return first if len(first) <= 200 else first[:197] + "..."


class CheckpointSaveError(CheckpointError):
    """A save failed (disk full, permissions, ...); the partial checkpoint is gone, earlier ones intact."""


def _primary() -> bool:
    return jax.process_index() == 0


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _all_processes(ok: bool) -> bool:
    """True when `ok` holds on every process (each reads its own files: they must agree on the outcome)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray([ok], np.int32))))


def _reasons(unreadable: list[tuple[int, str]]) -> str:
    if len(unreadable) == 1:
        return unreadable[0][1]
    return "; ".join(f"{step}: {why}" for step, why in unreadable)


class CheckpointStore:
    """The training checkpoints under MODEL_DIR/checkpoints: save every N steps, keep the last K."""

    def __init__(self, model_dir: str | os.PathLike, keep: int | None = None, async_save: bool = False):
        self.directory = Path(model_dir).absolute() / CHECKPOINTS_DIR
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=async_save,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))
        self._failed = False

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def saved_shapes(self, step: int) -> Any:
        """The saved state's tree of array metadata (shapes) without reading the arrays."""
        metadata = ocp.StandardCheckpointer().metadata(self.directory / str(step) / "state")
        if metadata is None or metadata.item_metadata is None:
            raise FileNotFoundError(f"checkpoint {step} has no readable state metadata")
        return metadata.item_metadata.tree

    def remove_partial_saves(self) -> list[str]:
        """Deletes what interrupted or failed saves left (`<step>.orbax-checkpoint-tmp*`); returns the names.

        Call it only from the run that owns MODEL_DIR (a reader must not delete a live run's save).
        """
        names = sorted(p.name for p in self.directory.glob(f"*{PARTIAL_SUFFIX}*"))
        if _primary():
            for name in names:
                shutil.rmtree(self.directory / name, ignore_errors=True)
        _barrier("mesh_t5_remove_partial_saves")
        return names

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> float:
        """Saves state and JSON meta at `step`; returns the seconds it took (0: the step was already saved).

        A failure (disk full, permissions, ...) removes the partial checkpoint, so the earlier ones are
        all that is left, and raises CheckpointSaveError naming the reason and the latest intact step.
        """
        if step in self.manager.all_steps():
            return 0.0
        # Round-trip through JSON now (numpy scalars -> Python), so a bad value fails before orbax writes.
        meta = json.loads(json.dumps(meta, default=lambda x: x.item() if hasattr(x, "item") else str(x)))
        intact = self.latest_step()
        start = time.perf_counter()
        from mesh_t5.logging_utils import settle_after_failure, stderr_silenced_if_quiet

        try:
            with stderr_silenced_if_quiet():  # a failing write's siblings print tracebacks from C++ threads
                self.manager.save(
                    step,
                    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                    force=True,
                )
                self.manager.wait_until_finished()
        except Exception as e:
            self._failed = True
            settle_after_failure()
            self._remove_step(step, including_final=True)
            earlier = (
                f"checkpoint {intact} is intact" if intact is not None else "there is no earlier checkpoint"
            )
            raise CheckpointSaveError(
                f"saving checkpoint {step} in {self.directory} failed ({failure_reason(e)}); removed the partial "
                f"checkpoint, {earlier}; free space or fix the directory, then run the same command to resume"
            ) from None
        return time.perf_counter() - start

    def _remove_step(self, step: int, including_final: bool) -> None:
        if _primary():
            for path in self.directory.glob(f"{step}{PARTIAL_SUFFIX}*"):
                shutil.rmtree(path, ignore_errors=True)
            if including_final and (self.directory / str(step)).exists():
                shutil.rmtree(self.directory / str(step), ignore_errors=True)
        _barrier(f"mesh_t5_remove_step_{step}")
        self.manager.reload()

    def restore(
        self, step: int, abstract_state: Any, shardings: Any | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Returns (state, meta) of `step`, after checking every shape against `abstract_state`."""
        if step not in self.manager.all_steps():
            raise CheckpointError(
                f"no checkpoint at step {step} in {self.directory}; available steps: {self.all_steps() or 'none'}"
            )
        saved, where = self.saved_shapes(step), f"{self.directory / str(step)}"
        if isinstance(abstract_state, dict) and "params" in abstract_state and "params" in saved:
            check_shapes(abstract_state["params"], saved["params"], where)  # name parameters, not slots
        check_shapes(abstract_state, saved, where)
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(_abstract(abstract_state, shardings)),
                    meta=ocp.args.JsonRestore(),
                ),
            )
        except Exception:
            _quiet_orbax_reads_of_a_failed_restore()
            raise
        if restored["meta"] is None:
            raise FileNotFoundError(f"checkpoint {step} has no meta/metadata")
        return restored["state"], dict(restored["meta"])

    def restore_latest(
        self, abstract_state: Any, shardings: Any | None = None, warn: Callable[[str], None] = print
    ) -> tuple[int, Any, dict[str, Any]] | None:
        """Returns (step, state, meta) of the newest readable checkpoint, None when there is none.

        Reading it whole is the check. Newer unreadable ones (a truncated or missing file, no
        metadata) are renamed to `<step>.corrupt`, so retention no longer counts them, and `warn`
        gets one line naming them and the step resumed instead. When none is readable nothing is
        renamed and CheckpointError says so. A checkpoint that does not fit the model config is the
        config's fault, not the files': its CheckpointError passes through.
        """
        unreadable: list[tuple[int, str]] = []
        for step in reversed(self.all_steps()):
            try:
                state, meta = self.restore(step, abstract_state, shardings)
                error = None
            except CheckpointError:
                raise
            except MemoryError:
                raise
            except Exception as e:
                state, meta, error = None, {}, e
            if not _all_processes(error is None):
                unreadable.append(
                    (step, self._damage(step) or failure_reason(error or Exception("on another host")))
                )
                continue
            if unreadable:
                moved = [self.quarantine(bad) for bad, _ in unreadable]
                named = ", ".join(str(bad) for bad, _ in unreadable)
                reasons = _reasons(unreadable)
                warn(
                    f"checkpoint{'s' if len(unreadable) > 1 else ''} {named} in {self.directory} unreadable "
                    f"({reasons}); renamed to {', '.join(moved)} and resumed from checkpoint {step}"
                )
            return step, state, meta
        if unreadable:
            reasons = _reasons(unreadable)
            raise CheckpointError(
                f"no readable checkpoint in {self.directory} ({reasons}); move them aside to start over, "
                "or restore the files"
            )
        return None

    def _damage(self, step: int) -> str | None:
        """Names the first missing piece of a checkpoint (for the message; reading it is the real check)."""
        root = self.directory / str(step)
        for part in ("state", "meta/metadata", "state/_METADATA", "state/manifest.ocdbt"):
            if not (root / part).exists():
                return f"{part} missing"
        return None

    def quarantine(self, step: int) -> str:
        """Renames checkpoint `step` to `<step>.corrupt` (or .corrupt.N); returns the new name."""
        name = f"{step}{CORRUPT_SUFFIX}"
        index = 1
        while (self.directory / name).exists():
            name, index = f"{step}{CORRUPT_SUFFIX}.{index}", index + 1
        if _primary():
            os.replace(self.directory / str(step), self.directory / name)
        _barrier(f"mesh_t5_quarantine_{step}")
        self.manager.reload()
        return name

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.manager.wait_until_finished()
            self.manager.close()
        except Exception:
            if not self._failed:  # a failed save was already reported in one line
                raise


def _is_orbax_read_after_failed_restore(unraisable: Any) -> bool:
    """Whether an unraisable exception is the noise of orbax's array reads outliving a failed restore:
    the read coroutines finalized with their read error, or their TensorStore callbacks calling into
    the restore's event loop after it closed (orbax 0.12, `_read_array_index_and_device_put`)."""
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and code.co_name == "_read_array_index_and_device_put":
        return True
    exc = unraisable.exc_value
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _quiet_orbax_reads_of_a_failed_restore() -> None:
    """Filters the hook Python prints unraisable exceptions with, for the rest of the process (once).

    When a restore fails on a damaged checkpoint, orbax's other array reads still finish on
    TensorStore threads; each then reports its own failure into the restore's event loop, already
    closed, and Python printed each as a traceback (~3,900 lines for t5-small's state, during the
    steps after the one-line fallback message, in 3 of 5 runs of the fault test). Every other unraisable
    exception still reaches the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "mesh_t5_orbax_filter", False):
        return

    def hook(unraisable: Any) -> None:
        if not _is_orbax_read_after_failed_restore(unraisable):
            previous(unraisable)

    hook.mesh_t5_orbax_filter = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def resume(
    store: CheckpointStore,
    restore_mode: str,
    step: int,
    abstract_state: Any,
    shardings: Any | None,
    say: Callable[[str], None],
) -> tuple[Any, dict[str, Any], int]:
    """Returns (state, meta, step) of `step` ("specific") or of the newest readable checkpoint ("latest").

    Says in one line what was restored and how long it took (and, through restore_latest, what was
    renamed aside). An unreadable "specific" step is one CheckpointError line: the user asked for it.
    """
    start = time.perf_counter()
    if restore_mode == "specific":
        try:
            state, meta = store.restore(step, abstract_state, shardings)
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {step} in {store.directory} is unreadable ({failure_reason(e)}); pick another "
                "restore_step, or restore_mode='latest' to fall back to the newest readable checkpoint"
            ) from None
    else:
        found = store.restore_latest(abstract_state, shardings, warn=say)
        if found is None:
            raise CheckpointError(
                f"{store.directory} holds step directories that are not checkpoints; move them aside"
            )
        step, state, meta = found
    say(f"restored checkpoint {step} in {time.perf_counter() - start:.1f}s (data position included)")
    return state, meta, step


def checkpoint_steps(directory: str | os.PathLike, complete: bool = True) -> list[int]:
    """Returns the sorted steps of the `<step>` dirs in `directory` (a run's checkpoints/ dir).

    complete=True counts only those holding a `state` dir (what can be read); False counts every
    step dir, as orbax does, so a run never saves over a step dir a damaged save left behind.
    """
    found = (p for p in Path(directory).glob("*") if p.name.isdigit())
    return sorted(int(p.name) for p in found if (p / "state" if complete else p).is_dir())


def _find_state_dir(path: Path) -> Path:
    """The orbax `state` (or exported `params`) directory for a checkpoint path of any kind."""
    if (path / PARAMS_DIR).is_dir():
        return path / PARAMS_DIR
    if (path / "state").is_dir():
        return path / "state"
    steps_dir = path / CHECKPOINTS_DIR if (path / CHECKPOINTS_DIR).is_dir() else path
    steps = checkpoint_steps(steps_dir)
    if steps:
        return steps_dir / str(steps[-1]) / "state"
    raise CheckpointError(
        f"{path} is not a mesh_t5 checkpoint (no params/, state/ or checkpoints/<step>/state); "
        "pass a model dir, a MODEL_DIR of a training run, or one of its checkpoints/<step> dirs"
    )


def load_params(
    path: str | os.PathLike, abstract_params: Any, shardings: Any | None = None, new_adapters: Any = None
) -> tuple[Any, int, Path]:
    """Returns (params, step, state dir) from any mesh_t5 checkpoint path; shapes are checked first.

    The step is 0 for an exported model dir. Only the parameters are read (a partial
    restore), so initialising a fine-tuning run does not load the pre-training optimizer state.
    `new_adapters` (a function returning fresh params): adapter layers the checkpoint lacks are taken
    from it, as when fine-tuning a model pre-trained without them (paper Table 10).
    """
    path = Path(path).absolute()
    if not path.exists():
        raise CheckpointError(f"checkpoint path {path} does not exist")
    state_dir = _find_state_dir(path)
    tree = ocp.StandardCheckpointer().metadata(state_dir).item_metadata.tree
    exported = state_dir.name == PARAMS_DIR
    saved_params = tree if exported else tree.get("params", {})
    missing = set(_shapes(abstract_params)) - set(_shapes(saved_params))
    if new_adapters is not None and missing and all("adapter" in n.split("/") for n in missing):
        without = _drop_key(abstract_params, "adapter")
        params, step, state_dir = load_params(path, without, _drop_key(shardings, "adapter"))
        return _merged(new_adapters(), params), step, state_dir
    check_shapes(abstract_params, saved_params, str(state_dir.parent))
    target = _abstract(abstract_params, shardings)
    item = target if exported else {"params": target}
    restored = ocp.PyTreeCheckpointer().restore(
        state_dir,
        args=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
        ),
    )
    params = restored if exported else restored["params"]
    step = 0
    if not exported and "step" in tree:
        step_value = ocp.PyTreeCheckpointer().restore(
            state_dir,
            args=ocp.args.PyTreeRestore(
                item={"step": np.zeros((), np.int32)},
                restore_args={"step": ocp.RestoreArgs(restore_type=np.ndarray)},
                partial_restore=True,
            ),
        )
        step = int(step_value["step"])
    return params, step, state_dir


def _drop_key(tree: Any, key: str) -> Any:
    """Returns nested dicts `tree` without the entries named `key`, at any depth."""
    if not isinstance(tree, dict):
        return tree
    return {k: _drop_key(v, key) for k, v in tree.items() if k != key}


def _merged(base: Any, over: Any) -> Any:
    """Returns nested dicts `base` with every leaf that `over` has replaced by `over`'s."""
    if not isinstance(over, dict):
        return over
    return {k: _merged(v, over[k]) if k in over else v for k, v in base.items()}


def load_state_subtree(state_dir: Path, key: str, abstract: Any, shardings: Any | None = None) -> Any:
    """Restores one top-level entry (e.g. "opt_state") of a training checkpoint's state."""
    tree = ocp.StandardCheckpointer().metadata(state_dir).item_metadata.tree
    if key not in tree:
        raise CheckpointError(f"checkpoint {state_dir.parent} has no {key}; it cannot initialise {key}")
    check_shapes(abstract, tree[key], str(state_dir.parent))
    item = {key: _abstract(abstract, shardings)}
    restored = ocp.PyTreeCheckpointer().restore(
        state_dir,
        args=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
        ),
    )
    return restored[key]


def write_config(model_dir: str | os.PathLike, config: T5Config, vocab_path: str | None) -> str | None:
    """Writes config.json and copies the vocabulary file into model_dir; returns the copy's path.

    Files already holding the same bytes are left alone, so a restart on a full disk gets as far as
    its first save; an OSError is one CheckpointError line.
    """
    model_dir = Path(model_dir)
    if vocab_path and not Path(vocab_path).is_file():
        raise CheckpointError(f"vocabulary file {vocab_path} does not exist")
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    target = model_dir / CONFIG_FILE
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        if not (target.is_file() and target.read_text() == text):
            tmp = model_dir / (CONFIG_FILE + ".tmp")
            try:
                tmp.write_text(text)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        if not vocab_path:
            return None
        source = Path(vocab_path)
        target = model_dir / VOCAB_DIR / source.name
        if target.exists() and (
            target.resolve() == source.resolve() or filecmp.cmp(source, target, shallow=False)
        ):
            return str(target)
        target.parent.mkdir(exist_ok=True)
        partial = target.with_name(target.name + ".tmp")
        try:
            shutil.copyfile(source, partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return str(target)
    except OSError as e:
        raise CheckpointError(
            f"cannot write {target} ({failure_reason(e)}); free space or pick a writable MODEL_DIR"
        ) from None


def read_config(model_dir: str | os.PathLike) -> T5Config:
    """Returns the T5Config stored in model_dir/config.json."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{model_dir} has no {CONFIG_FILE}; it is not a mesh_t5 model dir")
    try:
        return T5Config.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def vocab_file(model_dir: str | os.PathLike) -> str | None:
    """Returns the vocabulary file copied into model_dir/vocab, if any."""
    files = sorted(p for p in (Path(model_dir) / VOCAB_DIR).glob("*") if p.is_file())
    return str(files[0]) if files else None


def save_model(
    path: str | os.PathLike, config: T5Config, params: Any, vocab_path: str | None, overwrite: bool = False
) -> None:
    """Writes an exported model dir: config.json, params/ (orbax) and vocab/<file>.

    An existing params/ is replaced only with overwrite=True (the new one is written first).
    """
    path = Path(path).absolute()
    params_dir = path / PARAMS_DIR
    if params_dir.exists() and not overwrite:
        raise CheckpointError(
            f"{path} already holds a model (params/); pick a new directory or pass overwrite=True"
        )
    path.mkdir(parents=True, exist_ok=True)
    staging = path / (PARAMS_DIR + ".saving")
    if staging.exists():
        shutil.rmtree(staging)  # our own leftover from an interrupted save, never a finished model
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(staging, params)
    checkpointer.wait_until_finished()
    if params_dir.exists():
        shutil.rmtree(params_dir)
    os.replace(staging, params_dir)
    write_config(path, config, vocab_path)


def load_model(path: str | os.PathLike) -> tuple[T5Config, Any, str | None]:
    """Returns (config, params, vocab_path) of a model dir or a training MODEL_DIR (latest step)."""
    path = Path(path).absolute()
    config = read_config(path)
    params, _, _ = load_params(path, network.param_shapes(config))
    return config, params, vocab_file(path)
