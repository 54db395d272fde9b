"""Mesh-TF style layouts: `mesh_shape` and `layout_rules` strings → jax.sharding objects.

This is the only module that names mesh axes. Everything else speaks logical axes:
batch, length, embed, heads, kv, d_ff, vocab, layers, relpos_buckets, experts (and
`None` for a dimension that is never split).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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
            raise LayoutError(f"mesh_shape entry {part!r} is not NAME:SIZE with SIZE >= 1 (e.g. data:2,model:4)")
        if name.strip() in result:
            raise LayoutError(f"mesh_shape names axis {name.strip()!r} twice")
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
            raise LayoutError(f"layout_rules maps {logical!r} twice")
        rules[logical] = mesh_axis
    return rules


@dataclasses.dataclass(frozen=True)
class Layout:
    """A device mesh plus the logical-axis → mesh-axis rules that lay tensors out on it."""

    mesh: Mesh
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

    def sharding(self, logical_axes: LogicalAxes) -> NamedSharding:
        return NamedSharding(self.mesh, self.spec(logical_axes))

    def tree_shardings(self, axes_tree: Any) -> Any:
        """Maps a pytree of logical-axes tuples to a pytree of NamedShardings."""
        return jax.tree.map(self.sharding, axes_tree, is_leaf=_is_axes)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())


def _is_axes(x: Any) -> bool:
    return isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)


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
            f"mesh_shape {mesh_shape or shape} has {total} devices but {len(devices)} are available; "
            f"make the product of the axis sizes {len(devices)}"
        )
    rules = parse_layout_rules(DEFAULT_LAYOUT_RULES if layout_rules is None else layout_rules)
    for logical, mesh_axis in rules.items():
        if mesh_axis not in shape:
            raise LayoutError(
                f"layout rule {logical}:{mesh_axis} names mesh axis {mesh_axis!r}, which mesh_shape "
                f"({','.join(f'{k}:{v}' for k, v in shape.items())}) does not have"
            )
    try:
        device_array = jax.experimental.mesh_utils.create_device_mesh(tuple(shape.values()), devices)
    except Exception:  # noqa: BLE001 - non-TPU topologies: a plain reshape is the right order
        device_array = np.asarray(devices, dtype=object).reshape(tuple(shape.values()))
    return Layout(Mesh(device_array, tuple(shape.keys())), rules)


# The layout in force while tracing (set by `use_layout`); None means single-device, no constraints.
_STATE = threading.local()


def current_layout() -> Layout | None:
    return getattr(_STATE, "layout", None)


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


import jax.experimental.mesh_utils  # noqa: E402  (registers jax.experimental.mesh_utils)
