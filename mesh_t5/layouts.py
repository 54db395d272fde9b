"""Mesh-TF style layouts: `mesh_shape` and `layout_rules` strings → jax.sharding objects.

This is the only module that names mesh axes. Everything else speaks logical axes:
batch, length, embed, heads, kv, d_ff, vocab, layers, relpos_buckets, experts (and
`None` for a dimension that is never split).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec

from mesh_t5.errors import UserError

LOGICAL_AXES = (
    "batch", "length", "embed", "heads", "kv", "d_ff", "vocab", "layers", "relpos_buckets",
    "experts", "adapter", "beam",
)  # fmt: skip
DEFAULT_LAYOUT_RULES = "batch:data,vocab:model,heads:model,d_ff:model,experts:data"

LogicalAxes = tuple[str | None, ...]


class LayoutError(UserError):
    """A mesh or layout is invalid; the message is one line naming what to change."""


def parse_mesh_shape(mesh_shape: str) -> dict[str, int]:
    """Parses "data:2,model:4" into {"data": 2, "model": 4} (order kept)."""
    result: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in mesh_shape.split(","))):
        name, sep, size = part.partition(":")
        if not sep or not name.strip() or not size.strip().isdigit() or int(size) < 1:
            raise LayoutError(
                f"mesh_shape entry {part!r} is not NAME:SIZE with SIZE >= 1 (e.g. data:2,model:4)"
            )
        if name.strip() in result:
            raise LayoutError(f"mesh_shape names axis {name.strip()!r} twice; name each axis once")
        result[name.strip()] = int(size)
    if not result:
        raise LayoutError("mesh_shape is empty; give e.g. data:2,model:4")
    return result


def parse_layout_rules(layout_rules: str | Sequence[tuple[str, str]]) -> dict[str, str]:
    """Parses "batch:data,heads:model" into {"batch": "data", "heads": "model"}."""
    if not isinstance(layout_rules, str):
        return dict(layout_rules)
    rules: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in layout_rules.split(","))):
        logical, sep, mesh_axis = part.partition(":")
        logical, mesh_axis = logical.strip(), mesh_axis.strip()
        if not sep or not logical or not mesh_axis:
            raise LayoutError(f"layout_rules entry {part!r} is not LOGICAL:MESH_AXIS (e.g. heads:model)")
        if logical not in LOGICAL_AXES:
            raise LayoutError(
                f"layout_rules names unknown logical axis {logical!r}; known axes: {', '.join(LOGICAL_AXES)}"
            )
        if logical in rules:
            raise LayoutError(f"layout_rules maps {logical!r} twice; give one rule per logical axis")
        rules[logical] = mesh_axis
    return rules


@dataclasses.dataclass(frozen=True)
class Layout:
    """A device mesh plus the logical-axis → mesh-axis rules that lay tensors out on it."""

    mesh: Mesh | AbstractMesh
    rules: dict[str, str]

    def spec(self, logical_axes: LogicalAxes) -> PartitionSpec:
        """The PartitionSpec for a tensor whose dimensions carry these logical names.

        A mesh axis is used at most once per tensor: a later dimension that maps to an
        axis already used stays unsplit (as Mesh-TF did).
        """
        used: set[str] = set()
        out: list[str | None] = []
        for name in logical_axes:
            mesh_axis = self.rules.get(name) if name is not None else None
            if mesh_axis is None or mesh_axis in used or self.mesh.shape[mesh_axis] == 1:
                out.append(None)
            else:
                used.add(mesh_axis)
                out.append(mesh_axis)
        return PartitionSpec(*out)

    def __hash__(self) -> int:  # usable as a jit static argument or a cache key
        return hash((self.mesh, tuple(self.rules.items())))

    def sharding(self, logical_axes: LogicalAxes) -> NamedSharding:
        return NamedSharding(self.mesh, self.spec(logical_axes))

    def tree_shardings(self, axes_tree: Any) -> Any:
        """Maps a pytree of logical-axes tuples to a pytree of NamedShardings."""
        return jax.tree.map(self.sharding, axes_tree, is_leaf=is_axes)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def mesh_shape(self) -> dict[str, int]:
        """{"data": 2, "model": 4}: the mesh axis sizes, in order."""
        return dict(self.mesh.shape)

    def axis_size(self, logical: str) -> int:
        """How many ways a dimension named `logical` is split (1 when no rule maps it)."""
        mesh_axis = self.rules.get(logical)
        return int(self.mesh.shape[mesh_axis]) if mesh_axis is not None else 1

    def shard_shape(self, shape: Sequence[int], logical_axes: LogicalAxes) -> tuple[int, ...]:
        """The per-device shape of a tensor laid out by these logical axes (ceil on uneven splits)."""
        sizes = dict(self.mesh.shape)
        spec = self.spec(logical_axes)
        return tuple(
            -(-int(d) // sizes[a]) if a is not None else int(d) for d, a in zip(shape, spec, strict=True)
        )

    def describe(self) -> str:
        """ "data:2,model:4 with batch:data,..." for logs."""
        rules = ",".join(f"{k}:{v}" for k, v in self.rules.items())
        return f"mesh {_format_mesh(self.mesh_shape)} with rules {rules}"


def is_axes(x: Any) -> bool:
    """Whether `x` is one leaf of an axes tree: a tuple of logical axis names (or None)."""
    # Exactly a tuple: optax states are NamedTuples (EmptyState() is an empty one) and stay nodes.
    return type(x) is tuple and all(a is None or isinstance(a, str) for a in x)


def _format_mesh(shape: dict[str, int]) -> str:
    return ",".join(f"{k}:{v}" for k, v in shape.items())


def _resolve_rules(
    shape: dict[str, int], layout_rules: str | Sequence[tuple[str, str]] | None
) -> dict[str, str]:
    """Parses the rules; a given rule naming a mesh axis the mesh lacks is an error.

    The default rules (None) name both `data` and `model`; on a mesh without one of them
    (e.g. "data:8") the rules onto the missing axis are dropped: those dimensions stay whole.
    """
    if layout_rules is None:
        rules = parse_layout_rules(DEFAULT_LAYOUT_RULES)
        return {logical: axis for logical, axis in rules.items() if axis in shape}
    rules = parse_layout_rules(layout_rules)
    for logical, mesh_axis in rules.items():
        if mesh_axis not in shape:
            raise LayoutError(
                f"layout rule {logical}:{mesh_axis} names mesh axis {mesh_axis!r}, which mesh_shape "
                f"({_format_mesh(shape)}) does not have; map {logical} to one of {', '.join(shape)}"
            )
    return rules


def make_layout(
    mesh_shape: str | None = None,
    layout_rules: str | Sequence[tuple[str, str]] | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> Layout:
    """Builds a Layout; mesh_shape None means all devices on a "data" axis."""
    devices = list(devices if devices is not None else jax.devices())
    shape = parse_mesh_shape(mesh_shape) if mesh_shape else {"data": len(devices)}
    total = int(np.prod(list(shape.values())))
    if total != len(devices):
        raise LayoutError(
            f"mesh_shape {_format_mesh(shape)} has {total} devices but {len(devices)} are available; "
            f"make the product of the axis sizes {len(devices)}"
        )
    rules = _resolve_rules(shape, layout_rules)
    try:
        device_array = jax.experimental.mesh_utils.create_device_mesh(tuple(shape.values()), devices)
    except Exception:
        # jax.devices() lists process 0's devices first, so the first (data) axis spans hosts
        # and the last (model) axis stays within a host, where the interconnect is fastest.
        device_array = np.asarray(devices, dtype=object).reshape(tuple(shape.values()))
    return Layout(Mesh(device_array, tuple(shape.keys())), rules)


def make_abstract_layout(
    mesh_shape: str, layout_rules: str | Sequence[tuple[str, str]] | None = None
) -> Layout:
    """Builds a Layout over an AbstractMesh: shardings for planning a mesh that need not exist here."""
    shape = parse_mesh_shape(mesh_shape)
    rules = _resolve_rules(shape, layout_rules)
    return Layout(AbstractMesh(tuple(shape.values()), tuple(shape.keys())), rules)


def layout_for(
    mesh_shape: str | None,
    layout_rules: str | Sequence[tuple[str, str]] | None,
    config: Any,
    *,
    batch_size: int | None = None,
    all_devices_by_default: bool = True,
) -> Layout | None:
    """The layout a run uses, checked against the model `config` (and the global batch, when given).

    With no mesh_shape and no layout_rules: None on one device; on several, a data-parallel
    layout over all of them if `all_devices_by_default` (training and evaluation), else None (the
    Python model API stays on one device unless a mesh is asked for). A mesh that does not fit the
    devices, or whose axes do not divide a dimension they split, is one LayoutError line.
    """
    if not mesh_shape and not layout_rules and not (all_devices_by_default and jax.device_count() > 1):
        return None
    layout = make_layout(mesh_shape or None, layout_rules or None)
    validate(layout, config, batch_size)
    return layout


# The layout in force while tracing (set by `use_layout`); None means single-device, no constraints.
_STATE = threading.local()


def current_layout() -> Layout | None:
    return getattr(_STATE, "layout", None)


def one_cpu_device(batch_size: Any) -> bool:
    """Whether a computation traced now runs on one CPU device with a known batch: the CPU backend, no
    layout in force (nothing laid out over a mesh) and a static batch size (an exported model's is
    symbolic). The decode-only CPU paths (network.cross_attention_grouped, inference.beam_reorder,
    network.packs_decoder_weights) apply only then."""
    return jax.default_backend() == "cpu" and current_layout() is None and isinstance(batch_size, int)


@contextlib.contextmanager
def use_layout(layout: Layout | None) -> Iterator[Layout | None]:
    """Makes `constrain` lay activations out by this layout while tracing inside the block."""
    previous = current_layout()
    _STATE.layout = layout
    try:
        yield layout
    finally:
        _STATE.layout = previous


def constrain(x: jax.Array, logical_axes: LogicalAxes) -> jax.Array:
    """Annotates an activation with its logical axes; a no-op without a layout in force."""
    layout = current_layout()
    if layout is None:
        return x
    if len(logical_axes) != x.ndim:
        raise ValueError(f"constrain: {len(logical_axes)} axis names for a rank-{x.ndim} array")
    return jax.lax.with_sharding_constraint(x, layout.sharding(logical_axes))


# --- checks --------------------------------------------------------------------------------------


def validate(layout: Layout, config: Any, batch_size: int | None = None) -> None:
    """Raises LayoutError (one line) if a mesh axis does not divide a dimension its rule splits.

    `config` is a T5Config. Every logical axis with a rule onto a mesh axis of size > 1 is
    checked against the model dimension it names (heads, d_ff, vocab, embed, kv, layers,
    relpos_buckets, adapter) and, when given, the global batch size.
    """
    sizes: dict[str, list[int]] = {
        "heads": [config.num_heads],
        "d_ff": [config.d_ff],
        "vocab": [config.vocab_size],
        "embed": [config.d_model],
        "kv": [config.d_kv],
        "relpos_buckets": [config.relative_attention_num_buckets],
        "layers": [config.num_decoder_layers] + ([config.num_encoder_layers] if config.has_encoder else []),
        "adapter": [config.adapter_dim] if config.adapter_dim > 0 else [],
        "batch": [batch_size] if batch_size is not None else [],
    }
    mesh = layout.mesh_shape
    for logical, mesh_axis in layout.rules.items():
        ways = mesh.get(mesh_axis, 1)
        for size in sizes.get(logical, []):
            if ways > 1 and size % ways:
                name = "batch_size" if logical == "batch" else logical
                raise LayoutError(
                    f"mesh {mesh_axis}:{ways} does not divide {name}={size}; "
                    f"pick a {mesh_axis} axis that divides {size} or drop the rule {logical}:{mesh_axis}"
                )


# --- parameters and optimizer state -----------------------------------------------------------


def init_sharded(init_fn: Callable[..., Any], axes_tree: Any, layout: Layout | None, *args: Any) -> Any:
    """Runs `init_fn(*args)` under jit so each device creates only its shards of the result.

    The output shardings come from `axes_tree` (the same tree as the result, a tuple of logical axis
    names per leaf), so nothing is ever whole on one device. Without a layout: plain jit, one device.
    """
    if layout is None:
        return jax.jit(init_fn)(*args)
    return jax.jit(init_fn, out_shardings=layout.tree_shardings(axes_tree))(*args)


def _factored_dims(shape: Sequence[int], min_dim_size_to_factor: int = 128) -> tuple[int, int] | None:
    # optax's rule (factorized._factored_dims): factor over the two largest dimensions.
    if len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _slot_axes(path: tuple[Any, ...], shape: tuple[int, ...], p_shape: tuple[int, ...], p_axes: LogicalAxes):
    """Logical axes of one optimizer slot of a parameter, from the slot's and parameter's shapes."""
    if shape == p_shape:
        return tuple(p_axes)
    if len(shape) == len(p_shape) - 1:
        # A factored second moment: the parameter's axes minus the one averaged away. optax
        # Adafactor keeps v_row (drops the largest dim) and v_col (drops the second largest);
        # the rule only matters to break ties between equal-sized dims.
        dropped = [i for i in range(len(p_shape)) if p_shape[:i] + p_shape[i + 1 :] == shape]
        factored = _factored_dims(p_shape, 1)
        names = {getattr(k, "name", None) for k in path}
        if factored is not None and "v_row" in names and factored[1] in dropped:
            dropped = [factored[1]]
        elif factored is not None and "v_col" in names and factored[0] in dropped:
            dropped = [factored[0]]
        if dropped:
            return tuple(a for i, a in enumerate(p_axes) if i != dropped[0])
    return (None,) * len(shape)  # scalars, (1,)-shaped placeholders: replicated


def optimizer_state_axes(opt_state: Any, params: Any, param_axes: Any) -> Any:
    """Returns the optimizer state's tree with logical axes per leaf, derived from the parameters'.

    Each state leaf is matched to the parameter whose path ends its own path (optax states hold
    trees shaped like the parameters, e.g. FactoredState.v_row/v_col/v, ScaleByAdamState.mu/nu);
    a slot shaped like its parameter takes its axes, a factored slot the axes minus the reduced
    dimension, anything else (step counts, (1,) placeholders) is replicated. Works on abstract
    (jax.eval_shape) trees.
    """
    flat_params = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_axes = jax.tree.leaves(param_axes, is_leaf=is_axes)
    if len(flat_params) != len(flat_axes):
        raise ValueError("optimizer_state_axes: params and param_axes have different trees")
    index = {
        tuple(path): (tuple(leaf.shape), axes)
        for (path, leaf), axes in zip(flat_params, flat_axes, strict=True)
    }
    depths = sorted({len(p) for p in index}, reverse=True)

    def leaf_axes(path: tuple[Any, ...], leaf: Any) -> LogicalAxes:
        shape = tuple(np.shape(leaf))
        for depth in depths:
            if depth <= len(path) and tuple(path[-depth:]) in index:
                p_shape, p_axes = index[tuple(path[-depth:])]
                return _slot_axes(tuple(path), shape, p_shape, p_axes)
        return (None,) * len(shape)

    return jax.tree_util.tree_map_with_path(leaf_axes, opt_state)


# --- batches ------------------------------------------------------------------------------------


# Feature rank → logical axes: [B] ids, [B, L] tokens, [B, L, ...] anything wider.
def feature_axes(ndim: int) -> LogicalAxes:
    """("batch", "length", None, ...) for a feature of this rank."""
    return (("batch", "length") + (None,) * max(0, ndim - 2))[:ndim]


def process_batch_shard(layout: Layout) -> tuple[int, int]:
    """(shard_index, num_shards): which slice of the global batch this process feeds.

    Processes whose devices hold the same rows of the batch (the `batch` mesh axis does not
    span them, e.g. a model axis across hosts) get the same index and must feed the same
    examples. Pass the pair to the data pipeline's shard_index/num_shards.
    """
    mesh_axis = layout.rules.get("batch")
    if mesh_axis is None or not isinstance(layout.mesh, Mesh) or layout.mesh.shape[mesh_axis] == 1:
        return 0, 1
    axis = layout.mesh.axis_names.index(mesh_axis)
    devices = np.moveaxis(layout.mesh.devices, axis, 0)  # [batch ways, ...]
    rows_by_process: dict[int, set[int]] = {}
    for row, block in enumerate(devices):
        for device in np.ravel(block):
            rows_by_process.setdefault(device.process_index, set()).add(row)
    slices = sorted({tuple(sorted(rows)) for rows in rows_by_process.values()})
    for rows in slices:
        if rows != tuple(range(rows[0], rows[0] + len(rows))) or len(rows) != len(slices[0]):
            raise LayoutError(
                f"{layout.describe()} gives processes uneven or non-contiguous batch rows; "
                f"order the mesh so the {mesh_axis} axis splits evenly across hosts"
            )
    mine = tuple(sorted(rows_by_process[jax.process_index()]))
    return slices.index(mine), len(slices)


def host_batch_to_global(batch: Mapping[str, np.ndarray], layout: Layout) -> dict[str, jax.Array]:
    """Assembles each process's numpy batch into global arrays sharded on `batch` over the mesh.

    Each process passes its own slice (from the pipeline sharded by `process_batch_shard`);
    the global batch size is the local one times the number of distinct slices.
    """
    _, num_shards = process_batch_shard(layout)
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        sharding = layout.sharding(feature_axes(value.ndim))
        global_shape = (value.shape[0] * num_shards, *value.shape[1:])
        ways = layout.axis_size("batch") if sharding.spec and sharding.spec[0] is not None else 1
        if global_shape[0] % ways:
            raise LayoutError(
                f"global batch size {global_shape[0]} is not divisible by the batch axis "
                f"({layout.rules['batch']}:{ways}); pick a batch size that is a multiple of {ways}"
            )
        out[name] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out


import jax.experimental.mesh_utils  # noqa: E402  (registers jax.experimental.mesh_utils)
