"""Checkpoints with orbax: training checkpoints (state + data-pipeline state) and model dirs.

A training MODEL_DIR holds:

    config.json                T5Config of the run
    vocab/<file>               a copy of the vocabulary file (when the vocabulary has one)
    checkpoints/<step>/state   {"step", "params", "opt_state"} (orbax, sharded, atomic)
    checkpoints/<step>/meta    JSON: the data pipeline state and run facts, so a resume is exact

An exported model dir (`save_model`) holds config.json, vocab/<file> and params/ (orbax).
`load_model` reads either kind (a training dir gives its latest checkpoint's params).
Nothing here deletes or overwrites a checkpoint except orbax's keep-the-last-K rule.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mesh_t5.config import T5Config
from mesh_t5.errors import UserError

CONFIG_FILE = "config.json"
VOCAB_DIR = "vocab"
PARAMS_DIR = "params"
CHECKPOINTS_DIR = "checkpoints"


class CheckpointError(UserError):
    """A checkpoint cannot be used as asked; one line naming the checkpoint and what to do."""


def _path_name(path: tuple[Any, ...]) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_name(path): tuple(leaf.shape) for path, leaf in flat}


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

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def saved_shapes(self, step: int) -> Any:
        """The saved state's tree of array metadata (shapes) without reading the arrays."""
        metadata = ocp.StandardCheckpointer().metadata(self.directory / str(step) / "state")
        return metadata.item_metadata.tree

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Saves state and JSON meta at `step` (a step already saved is left alone)."""
        if step in self.manager.all_steps():
            return
        # Round-trip through JSON now (numpy scalars -> Python), so a bad value fails before orbax writes.
        meta = json.loads(json.dumps(meta, default=lambda x: x.item() if hasattr(x, "item") else str(x)))
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

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
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(abstract_state, shardings)),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], dict(restored["meta"] or {})

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _find_state_dir(path: Path) -> Path:
    """The orbax `state` (or exported `params`) directory for a checkpoint path of any kind."""
    if (path / PARAMS_DIR).is_dir():
        return path / PARAMS_DIR
    if (path / "state").is_dir():
        return path / "state"
    steps_dir = path / CHECKPOINTS_DIR if (path / CHECKPOINTS_DIR).is_dir() else path
    steps = sorted(int(p.name) for p in steps_dir.glob("*") if p.name.isdigit() and (p / "state").is_dir())
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
    """Writes config.json and copies the vocabulary file into model_dir; returns the copy's path."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, model_dir / CONFIG_FILE)
    if not vocab_path:
        return None
    source = Path(vocab_path)
    if not source.is_file():
        raise CheckpointError(f"vocabulary file {vocab_path} does not exist")
    target = model_dir / VOCAB_DIR / source.name
    if target.exists() and target.resolve() == source.resolve():
        return str(target)
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(source, target)
    return str(target)


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
    from mesh_t5 import network  # the parameter shapes come from the network's own init

    path = Path(path).absolute()
    config = read_config(path)
    abstract = jax.eval_shape(lambda: network.init_params(config, jax.random.key(0)))
    params, _, _ = load_params(path, abstract)
    return config, params, vocab_file(path)
