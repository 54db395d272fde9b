"""Per-device memory of a training step on a mesh, planned from shapes alone (nothing is allocated).

Parameter shapes come from the network's parameter specs (network.param_shapes), the optimizer
state's from `jax.eval_shape` of the Adafactor of optim.py; their per-device shards from the layout
rules on an AbstractMesh, so the mesh need not exist on this machine. Activations are an
analytic estimate of the tensors a training step keeps for the backward pass:

Per encoder layer (B batch, S input length, D d_model, H heads, K d_kv, F d_ff):
    4·B·S·D      layer input, normed input, residual after attention, normed input of the MLP
    4·B·S·H·K    q, k, v and the attention context
    (1+d)·B·H·S² attention probabilities (+ the dropout mask when d = dropout_rate > 0 adds one)
    n·B·S·F      MLP hidden: n = 2 for ReLU (pre-activation, activation), 4 for gated
                 (both projections, the activation, their product), +1 with dropout
Per decoder layer (T target length): the same with T for S, plus cross-attention
    2·B·T·D + 2·B·T·H·K + 2·B·S·H·K + (1+d)·B·H·T·S
Outside the layers: embeddings B·S·D + B·T·D and the logits 2·B·T·V in float32 (logits, softmax).

Under a remat policy (T5Config.remat) a layer keeps only part of these; the rest is recomputed in the
backward pass, so one layer's tensors are live again at its peak:
    full     the layer input (B·S·D or B·T·D per layer);
    minimal  the layer input and the outputs of matmuls without batch dimensions: q, k, v, the
             attention output projection, the MLP's input projections (and the adapter's);
    dots     those and the batched attention products too (scores, context).
Each tensor below is tagged with what produces it ("input", "dot", "batched_dot", "other") for that.

Each tensor is divided by the mesh axes its logical dimensions map to (batch over data,
heads/d_ff/vocab over model by default), with config.dtype bytes per element. Not counted:
XLA temporaries and fusion buffers, collective-communication buffers, the input batch, and
program code. Gradients are counted at the parameters' size (float32). How far XLA's compiled step
goes beyond this total is measured by `python -m benchmarks.plan_check` (on CPU, T5-small and
T5.1.1-small, batch 2 and 8 x 512 / 114): 1.07-1.21x with remat "minimal" (the default), 1.21-1.74x
with "none", where XLA also keeps the intermediates of each elementwise op's gradient (gated GELU's
most of all): leave that headroom.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mesh_t5 import layouts, network, optim
from mesh_t5.config import REMAT_POLICIES, T5Config
from mesh_t5.errors import UserError

GiB = 2**30
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9}
_UNITS |= {"t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str | int) -> int:
    """Parses "16GiB", "32GB", "512MiB" or a plain number of bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise UserError(f"device_memory={text!r} is not a size; use e.g. 16GiB, 32GB or 80GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_bytes(n: float) -> str:
    """1.5 GiB, 300.0 MiB, ..."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One planned tensor: a global shape, its logical axes, how many such tensors, bytes per element."""

    name: str
    shape: tuple[int, ...]
    axes: layouts.LogicalAxes
    count: int = 1
    itemsize: int = 4
    kind: str = "other"  # what produces it: "input" (of a layer), "dot", "batched_dot" or "other"

    def bytes_per_device(self, layout: layouts.Layout) -> int:
        return self.count * self.itemsize * math.prod(layout.shard_shape(self.shape, self.axes))

    def bytes_total(self) -> int:
        return self.count * self.itemsize * math.prod(self.shape)


def _layer_tensors(
    prefix: str, batch: int, length: int, config: T5Config, itemsize: int, cross_length: int | None
) -> list[Tensor]:
    """The activations one layer keeps for the backward pass (see the module docstring)."""
    B, L, D, H, K, F = batch, length, config.d_model, config.num_heads, config.d_kv, config.d_ff
    drop = 1 if config.dropout_rate > 0 else 0
    bld, blhk, bhls = (
        ("batch", "length", "embed"),
        ("batch", "length", "heads", "kv"),
        ("batch", "heads", None, None),
    )
    gated = 2 if config.is_gated else 1

    def kept(name: str, shape: tuple[int, ...], axes: layouts.LogicalAxes, **counts: int) -> list[Tensor]:
        return [Tensor(f"{prefix}.{name}", shape, axes, n, itemsize, kind) for kind, n in counts.items() if n]

    out = [
        # layer input; attention output (the residual); the two normed inputs
        *kept("hidden", (B, L, D), bld, input=1, dot=1, other=2),
        *kept("self_attention.qkv_context", (B, L, H, K), blhk, dot=3, batched_dot=1),
        # scores (probabilities without remat) and the dropout mask
        *kept("self_attention.probs", (B, H, L, L), bhls, batched_dot=1, other=drop),
        # the input projection(s), the activation (and the gated product), the dropout mask
        *kept("mlp.hidden", (B, L, F), ("batch", "length", "d_ff"), dot=gated, other=gated + drop),
    ]
    if cross_length is not None:
        S = cross_length
        out += [
            *kept("cross_attention.hidden", (B, L, D), bld, dot=1, other=1),
            *kept("cross_attention.q_context", (B, L, H, K), blhk, dot=1, batched_dot=1),
            *kept("cross_attention.kv", (B, S, H, K), blhk, dot=2),
            *kept("cross_attention.probs", (B, H, L, S), bhls, batched_dot=1, other=drop),
        ]
    if config.adapter_dim > 0:
        out += kept(
            "adapter.hidden", (B, L, config.adapter_dim), ("batch", "length", "adapter"), dot=1, other=1
        )
    return out


# Per remat policy (T5Config.remat), the kinds of layer tensors kept for every layer.
_KEPT_KINDS = {
    "none": ("input", "dot", "batched_dot", "other"),
    "full": ("input",),
    "minimal": ("input", "dot"),
    "dots": ("input", "dot", "batched_dot"),
}


def activation_tensors(
    config: T5Config, batch_size: int, input_length: int, target_length: int, remat: str
) -> list[Tensor]:
    """The activations a training step keeps for the backward pass, per the module docstring's formula."""
    itemsize = jnp.dtype(config.dtype).itemsize
    B = batch_size
    stacks: list[tuple[str, int, int, int | None]] = []  # (name, layers, length, cross-attended length)
    if config.has_encoder:
        stacks += [("encoder", config.num_encoder_layers, input_length, None)]
        stacks += [("decoder", config.num_decoder_layers, target_length, input_length)]
    else:
        length = input_length + target_length if config.architecture == "prefix_lm" else target_length
        stacks += [("decoder", config.num_decoder_layers, length, None)]
    tensors: list[Tensor] = []
    for name, num_layers, length, cross in stacks:
        tensors.append(
            Tensor(f"{name}.embedded", (B, length, config.d_model), ("batch", "length", "embed"), 1, itemsize)
        )
        layer = _layer_tensors(f"{name}.layer", B, length, config, itemsize, cross)
        kinds = _KEPT_KINDS[remat]
        tensors += [dataclasses.replace(t, count=t.count * num_layers) for t in layer if t.kind in kinds]
        if remat != "none":  # live at the peak: one layer's other tensors, recomputed
            tensors += [t for t in layer if t.kind not in kinds]
    decoder_length = stacks[-1][2]
    tensors.append(
        Tensor("logits", (B, decoder_length, config.vocab_size), ("batch", "length", "vocab"), 2, 4)
    )
    return tensors


@dataclasses.dataclass
class MemoryPlan:
    """The result of `plan_memory`: bytes in total and per device, and the biggest shards."""

    model: str
    layout: layouts.Layout
    batch: tuple[int, int, int]  # batch size, input length, target length
    dtype: str
    param_count: int
    param_bytes: int
    param_bytes_per_device: int
    optimizer_bytes: int
    optimizer_bytes_per_device: int
    activation_bytes_per_device: dict[str, int]  # remat policy -> bytes
    device_memory: int
    largest: list[tuple[str, tuple[int, ...], str, int]]  # name, shape, spec, bytes per device

    @property
    def num_devices(self) -> int:
        return math.prod(self.layout.mesh_shape.values())

    remat: str  # the config's policy, marked in the report

    def total_per_device(self, remat: str) -> int:
        """Parameters + gradients + optimizer state + activations, per device."""
        return (
            2 * self.param_bytes_per_device
            + self.optimizer_bytes_per_device
            + self.activation_bytes_per_device[remat]
        )

    def fits(self, remat: str) -> bool:
        return self.total_per_device(remat) <= self.device_memory

    def _mark(self, remat: str) -> str:
        return "   <- T5Config.remat" if remat == self.remat else ""

    def format(self) -> str:
        """The report `mesh-t5 plan` prints."""
        b, s, t = self.batch
        mesh = ",".join(f"{k}:{v}" for k, v in self.layout.mesh_shape.items())
        rules = ",".join(f"{k}:{v}" for k, v in self.layout.rules.items())
        rows = [
            ("parameters", self.param_bytes, self.param_bytes_per_device, ""),
            ("gradients", self.param_bytes, self.param_bytes_per_device, ""),
            ("optimizer (Adafactor)", self.optimizer_bytes, self.optimizer_bytes_per_device, ""),
        ]
        rows += [
            (f"activations, remat {p}", None, a, self._mark(p))
            for p, a in self.activation_bytes_per_device.items()
        ]
        lines = [
            f"model {self.model}: {self.param_count:,} parameters",
            f"mesh {mesh} ({self.num_devices} devices), layout_rules {rules}",
            f"training step: batch {b} x inputs {s} / targets {t}, activations {self.dtype}",
            "",
            f"  {'':<30}{'total':>14}{'per device':>14}",
        ]
        for name, total, per_device, mark in rows:
            lines.append(
                f"  {name:<30}{format_bytes(total) if total is not None else '':>14}"
                f"{format_bytes(per_device):>14}{mark}"
            )
        for remat in self.activation_bytes_per_device:
            used = self.total_per_device(remat)
            verdict = "fits" if self.fits(remat) else "does NOT fit"
            lines.append(
                f"  {'total, remat ' + remat:<30}{'':>14}{format_bytes(used):>14}"
                f"   {verdict} in {format_bytes(self.device_memory)} ({100 * used / self.device_memory:.0f}%)"
                + self._mark(remat)
            )
        lines += ["", "largest parameter shards per device:"]
        for name, shape, spec, nbytes in self.largest:
            lines.append(f"  {name:<40} {shape!s:<24} {spec:<28} {format_bytes(nbytes):>12}")
        return "\n".join(lines)


def plan_memory(
    config: T5Config,
    mesh_shape: str,
    layout_rules: str | None = None,
    batch_size: int = 128,
    input_length: int = 512,
    target_length: int = 114,
    device_memory: int | str = 16 * GiB,
    model_name: str = "",
) -> MemoryPlan:
    """Plans per-device memory of a training step of `config` on `mesh_shape`, from shapes only."""
    layout = layouts.make_abstract_layout(mesh_shape, layout_rules)
    layouts.validate(layout, config, batch_size)
    params, axes = network.param_shapes(config), network.param_axes(config)
    opt_state = jax.eval_shape(optim.make_optimizer().init, params)  # T5's Adafactor
    opt_axes = layouts.optimizer_state_axes(opt_state, params, axes)

    def nbytes(leaf: Any, leaf_axes: layouts.LogicalAxes, per_device: bool) -> int:
        shape = layout.shard_shape(leaf.shape, leaf_axes) if per_device else leaf.shape
        return math.prod(shape) * np.dtype(leaf.dtype).itemsize

    def tree_bytes(tree: Any, tree_axes: Any, per_device: bool) -> int:
        leaves = jax.tree.leaves(tree)
        leaf_axes = jax.tree.leaves(tree_axes, is_leaf=layouts.is_axes)
        return sum(nbytes(x, a, per_device) for x, a in zip(leaves, leaf_axes, strict=True))

    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_axes = jax.tree.leaves(axes, is_leaf=layouts.is_axes)
    shards = [
        (
            jax.tree_util.keystr(path, simple=True, separator="/"),
            tuple(leaf.shape),
            str(layout.spec(a)),
            nbytes(leaf, a, True),
        )
        for (path, leaf), a in zip(flat, flat_axes, strict=True)
    ]
    activations = {
        policy: sum(
            t.bytes_per_device(layout)
            for t in activation_tensors(config, batch_size, input_length, target_length, policy)
        )
        for policy in REMAT_POLICIES
    }
    return MemoryPlan(
        model=model_name or "custom",
        layout=layout,
        batch=(batch_size, input_length, target_length),
        dtype=config.dtype,
        param_count=sum(math.prod(x.shape) for x in jax.tree.leaves(params)),
        param_bytes=tree_bytes(params, axes, False),
        param_bytes_per_device=tree_bytes(params, axes, True),
        optimizer_bytes=tree_bytes(opt_state, opt_axes, False),
        optimizer_bytes_per_device=tree_bytes(opt_state, opt_axes, True),
        activation_bytes_per_device=activations,
        device_memory=parse_bytes(device_memory),
        remat=config.remat,
        largest=sorted(shards, key=lambda s: -s[3])[:6],
    )
