"""Original Mesh-TensorFlow T5 checkpoints (the public T5 / T5 1.1 releases) → mesh_t5 parameters.

Mesh-TF names a variable by scope: `encoder/block_003/layer_001/DenseReluDense/wi/kernel`.
Attention kernels are stored [d_model, heads*d_kv] (q, k, v) and [heads*d_kv, d_model] (o),
with heads the outer factor of the merged dimension; relative position biases are
[heads, buckets]. mesh_t5 splits the heads out and stacks a stack's layers on a leading
axis (docs/internals.md). Checkpoints are read with `tf.train.load_checkpoint`, so no TF1
graph and no Mesh-TF install is needed. Adafactor slots (`*_slot_vc`, `_slot_vr`, `_slot_v`)
are skipped and `global_step` is returned.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
from typing import Any

import jax
import numpy as np

from mesh_t5.config import T5Config
from mesh_t5.errors import UserError

# Sub-layer component names: the public release (CamelCase) and later Mesh-TF (snake_case).
_COMPONENTS = {
    "SelfAttention": "self_attention",
    "self_attention": "self_attention",
    "EncDecAttention": "cross_attention",
    "enc_dec_attention": "cross_attention",
    "DenseReluDense": "mlp",
    "dense_relu_dense": "mlp",
}
_NORMS = ("layer_norm", "rms_norm")
_FINAL_NORMS = ("final_layer_norm", "rms_norm", "final_rms_norm")
_ATTENTION_KERNELS = ("q", "k", "v", "o")
_MLP_KERNELS = ("wi", "wi_0", "wi_1", "wo")
_SKIPPED = re.compile(r"(_slot_(vc|vr|v|m)$|^global_step$|/adam_[mv]$|^(beta1|beta2)_power$)")
_BLOCK = re.compile(r"^(encoder|decoder)/block_(\d+)/(?:layer_(\d+)/)?(.+)$")


class MeshTFError(UserError):
    """A Mesh-TF checkpoint cannot be read or does not match the requested config (one line)."""


def read_checkpoint(path: str) -> tuple[dict[str, np.ndarray], int | None]:
    """Returns (variables without optimizer slots, global_step or None) of a Mesh-TF checkpoint.

    `path` is a checkpoint prefix (`model.ckpt-1000000`) or a directory holding a `checkpoint` index.
    """
    import tensorflow as tf

    prefix = path
    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            raise MeshTFError(
                f"no TF checkpoint in directory {path!r}; pass the prefix, e.g. {path}/model.ckpt-NNN"
            )
    elif not os.path.exists(prefix + ".index"):
        raise MeshTFError(
            f"Mesh-TF checkpoint {path!r} not found (no {path}.index); pass a checkpoint prefix or dir"
        )
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:
        raise MeshTFError(f"cannot read TF checkpoint {prefix!r}: {str(e).splitlines()[0]}") from None
    variables: dict[str, np.ndarray] = {}
    step = None
    for name in sorted(reader.get_variable_to_shape_map()):
        if name == "global_step":
            step = int(reader.get_tensor(name))
        elif not _SKIPPED.search(name):
            # bfloat16 checkpoints come back as ml_dtypes arrays: params are float32 (internals.md).
            variables[name] = np.asarray(reader.get_tensor(name)).astype(np.float32)
    return variables, step


@dataclasses.dataclass
class _Layer:
    """One (stack, block, layer scope) of the checkpoint: its component and its tensors."""

    component: str | None = None
    norm: np.ndarray | None = None
    tensors: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def _group(variables: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """Splits variable names into {stack: {block: {layer_scope: _Layer}}} and top-level tensors."""
    stacks: dict[str, dict[int, dict[str, _Layer]]] = {}
    top: dict[str, np.ndarray] = {}
    for name, value in variables.items():
        match = _BLOCK.match(name)
        if not match:
            top[name] = value
            continue
        stack, block, layer_index, rest = match.group(1), int(match.group(2)), match.group(3), match.group(4)
        parts = rest.split("/")
        component = next((_COMPONENTS[p] for p in parts if p in _COMPONENTS), None)
        # Without layer_NNN scopes the component names the layer; a norm then sits inside it.
        scope = layer_index if layer_index is not None else (component or parts[0])
        layer = stacks.setdefault(stack, {}).setdefault(block, {}).setdefault(scope, _Layer())
        if component is not None:
            if layer.component not in (None, component):
                raise MeshTFError(f"checkpoint scope {stack}/block_{block:03d}/{scope} mixes two sub-layers")
            layer.component = component
        leaf = parts[-1]
        if leaf == "scale" and len(parts) >= 2 and parts[-2] in _NORMS:
            layer.norm = value
        elif component is not None:
            key = parts[-2] if leaf == "kernel" else leaf  # wi/kernel → wi; q → q
            layer.tensors[key] = value
        else:
            raise MeshTFError(f"unrecognised Mesh-TF variable {name!r}; is this a T5 checkpoint?")
    return stacks, top


def _final_norm(top: dict[str, np.ndarray], stack: str) -> np.ndarray:
    for norm in _FINAL_NORMS:
        if f"{stack}/{norm}/scale" in top:
            return top.pop(f"{stack}/{norm}/scale")
    raise MeshTFError(f"checkpoint has no {stack}/final_layer_norm/scale; is this a complete T5 checkpoint?")


def infer_config_fields(variables: dict[str, np.ndarray]) -> dict[str, Any]:
    """Returns the T5Config fields that the tensor names and shapes determine."""
    stacks, top = _group(variables)
    if "shared/embedding" not in top:
        raise MeshTFError("checkpoint has no shared/embedding; is this a Mesh-TF T5 checkpoint?")
    vocab_size, d_model = top["shared/embedding"].shape
    if "decoder" not in stacks:
        raise MeshTFError("checkpoint has no decoder/block_NNN variables; is this a Mesh-TF T5 checkpoint?")
    layers = [layer for blocks in stacks.values() for block in blocks.values() for layer in block.values()]
    attention = next(layer.tensors for layer in layers if layer.component == "self_attention")
    mlp = next(layer.tensors for layer in layers if layer.component == "mlp")
    bias = next(
        (
            t["relative_attention_bias"]
            for t in (la.tensors for la in layers)
            if "relative_attention_bias" in t
        ),
        None,
    )
    if bias is None:
        raise MeshTFError("checkpoint has no relative_attention_bias; cannot infer num_heads")
    num_heads, buckets = bias.shape
    inner = attention["q"].shape[1]
    if inner % num_heads:
        raise MeshTFError(f"attention width {inner} is not a multiple of num_heads={num_heads}")
    gated = "wi_0" in mlp
    fields: dict[str, Any] = {
        "vocab_size": int(vocab_size),
        "d_model": int(d_model),
        "d_ff": int(mlp["wi_0" if gated else "wi"].shape[1]),
        "num_heads": int(num_heads),
        "d_kv": int(inner // num_heads),
        "num_decoder_layers": len(stacks["decoder"]),
        "tie_word_embeddings": "decoder/logits/kernel" not in top,
        "relative_attention_num_buckets": int(buckets),
    }
    if "encoder" in stacks:
        fields["num_encoder_layers"] = len(stacks["encoder"])
    else:
        fields["architecture"] = "decoder_only"
        fields["num_encoder_layers"] = 0
    # Whether wi is split (wi_0, wi_1) is in the names; gelu vs relu is not.
    fields["is_gated"] = gated
    return fields


def _gin_statements(text: str) -> list[tuple[str, str]]:
    """Returns (name, value text) of each top-level `name = value` binding, continuations joined."""
    text = re.sub(r"\\\n", " ", text)
    statements = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].split("#", 1)[0].rstrip()
        i += 1
        if "=" not in line or line.startswith(("import ", "include ")):
            continue
        name, value = (s.strip() for s in line.split("=", 1))
        # A bracketed value may span lines without a backslash.
        while value.count("[") + value.count("(") > value.count("]") + value.count(")") and i < len(lines):
            value += " " + lines[i].split("#", 1)[0].strip()
            i += 1
        statements.append((name, value))
    return statements


def config_fields_from_operative_gin(path: str) -> dict[str, Any]:
    """Returns the T5Config fields an original T5 `operative_config.gin` sets (sizes, activation, dropout).

    The file names Mesh-TF configurables that are not installed here, so it is read as text.
    """
    try:
        with open(path) as f:
            statements = _gin_statements(f.read())
    except OSError as e:
        raise MeshTFError(f"cannot read operative gin {path!r}: {e.strerror}") from None
    macros = {name: value for name, value in statements if "." not in name and "/" not in name}

    def value_of(text: str) -> Any:
        text = text.strip()
        if text.startswith("%"):
            return value_of(macros.get(text[1:], "None"))
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    def find(*suffixes: str) -> Any:
        for name, value in statements:
            if any(name == s or name.endswith("/" + s) or name.endswith("." + s) for s in suffixes):
                return value_of(value)
        return None

    fields: dict[str, Any] = {}
    for field, keys in {
        "d_model": ("d_model",),
        "d_ff": ("d_ff", "DenseReluDense.hidden_size"),
        "d_kv": ("d_kv", "SelfAttention.key_value_size"),
        "num_heads": ("num_heads", "SelfAttention.num_heads"),
        "dropout_rate": ("dropout_rate",),
        "relative_attention_num_buckets": ("SelfAttention.relative_attention_num_buckets",),
    }.items():
        value = find(*keys)
        if isinstance(value, int | float) and not isinstance(value, bool):
            fields[field] = value
    layers = value_of(macros["num_layers"]) if "num_layers" in macros else None
    for stack in ("encoder", "decoder"):
        value = next(
            (value_of(v) for n, v in statements if n == f"{stack}/make_layer_stack.num_layers"), layers
        )
        if isinstance(value, int):
            fields[f"num_{stack}_layers"] = value
    activation = find("DenseReluDense.activation")
    if isinstance(activation, str):
        fields["feed_forward_proj"] = activation
    elif isinstance(activation, list | tuple) and len(activation) == 2 and activation[1] == "linear":
        fields["feed_forward_proj"] = f"gated-{activation[0]}"
    tied = find("shared_embedding_and_softmax_weights")
    if isinstance(tied, bool):
        fields["tie_word_embeddings"] = tied
    return fields


def merge_config(inferred: dict[str, Any], given: dict[str, Any], given_from: str) -> T5Config:
    """Returns a T5Config from the checkpoint's shapes and a gin's fields; a conflict is one error line."""
    for name, value in given.items():
        if name in inferred and name != "is_gated" and inferred[name] != value:
            raise MeshTFError(
                f"{given_from} sets {name}={value!r} but the checkpoint's shapes say {inferred[name]!r}; "
                "fix or drop that setting"
            )
    values = {**given, **inferred}
    gated = values.pop("is_gated")
    if values.get("architecture") == "decoder_only" and given.get("architecture") == "prefix_lm":
        values["architecture"] = "prefix_lm"
    if gated and "feed_forward_proj" not in given:
        values["feed_forward_proj"] = "gated-gelu"  # T5 1.1's gated checkpoints use gelu
    if gated != values.get("feed_forward_proj", "relu").startswith("gated-"):
        raise MeshTFError(
            f"{given_from} sets feed_forward_proj={values.get('feed_forward_proj', 'relu')!r} but the checkpoint's "
            f"feed-forward is {'gated (wi_0, wi_1)' if gated else 'not gated (wi)'}; fix or drop that setting"
        )
    return T5Config.from_dict(values)


def _split_heads_in(kernel: np.ndarray, config: T5Config) -> np.ndarray:
    return kernel.reshape(config.d_model, config.num_heads, config.d_kv)  # [D, H*K] → [D, H, K]


def _split_heads_out(kernel: np.ndarray, config: T5Config) -> np.ndarray:
    return kernel.reshape(config.num_heads, config.d_kv, config.d_model)  # [H*K, D] → [H, K, D]


def _attention(tensors: dict[str, np.ndarray], config: T5Config, where: str) -> dict[str, np.ndarray]:
    missing = [k for k in _ATTENTION_KERNELS if k not in tensors]
    if missing:
        raise MeshTFError(f"{where} lacks attention kernel(s) {', '.join(missing)}")
    return {
        "query": _split_heads_in(tensors["q"], config),
        "key": _split_heads_in(tensors["k"], config),
        "value": _split_heads_in(tensors["v"], config),
        "out": _split_heads_out(tensors["o"], config),
    }


def _mlp(tensors: dict[str, np.ndarray], config: T5Config, where: str) -> dict[str, np.ndarray]:
    names = ("wi_0", "wi_1", "wo") if config.is_gated else ("wi", "wo")
    missing = [k for k in names if k not in tensors]
    if missing:
        raise MeshTFError(
            f"{where} lacks feed-forward kernel(s) {', '.join(missing)} for {config.feed_forward_proj}"
        )
    return {k: tensors[k] for k in names}  # [D, F] and [F, D], already [in, out]


_SUBLAYER_PARAMS = {
    "encoder": {"self_attention": ("attention_norm", "attention"), "mlp": ("mlp_norm", "mlp")},
    "decoder": {
        "self_attention": ("self_attention_norm", "self_attention"),
        "cross_attention": ("cross_attention_norm", "cross_attention"),
        "mlp": ("mlp_norm", "mlp"),
    },
}


def _stack_params(
    blocks: dict[int, dict[str, _Layer]], stack: str, config: T5Config
) -> tuple[dict, np.ndarray]:
    """Returns (the stack's `layers` tree stacked on a leading [L] axis, its relative bias [buckets, heads])."""
    per_layer: list[dict[str, Any]] = []
    bias = None
    names = dict(_SUBLAYER_PARAMS[stack])
    if stack == "decoder" and not config.has_encoder:
        names = {"self_attention": ("attention_norm", "attention"), "mlp": ("mlp_norm", "mlp")}
    for index in sorted(blocks):
        where = f"{stack}/block_{index:03d}"
        layer_params: dict[str, Any] = {}
        for scope, layer in blocks[index].items():
            if layer.component is None:
                raise MeshTFError(f"{where}/{scope} has a norm but no attention or feed-forward sub-layer")
            if layer.component not in names:
                raise MeshTFError(f"{where} has a {layer.component} sub-layer, unexpected in a {stack} stack")
            norm_name, name = names[layer.component]
            if layer.norm is None:
                raise MeshTFError(f"{where}/{scope} lacks its layer_norm/scale")
            layer_params[norm_name] = {"scale": layer.norm}
            if layer.component == "mlp":
                layer_params[name] = _mlp(layer.tensors, config, where)
            else:
                layer_params[name] = _attention(layer.tensors, config, where)
                # One table per stack, stored in block 0's self-attention (Mesh-TF "bias_shared").
                if layer.component == "self_attention" and "relative_attention_bias" in layer.tensors:
                    bias = layer.tensors["relative_attention_bias"].T  # [H, buckets] → [buckets, H]
        missing = sorted({n for n, _ in names.values()} - set(layer_params))
        if missing:
            raise MeshTFError(f"{where} lacks sub-layer(s) {', '.join(missing)}")
        per_layer.append(layer_params)
    if bias is None:
        raise MeshTFError(f"{stack} has no relative_attention_bias in block_000's self-attention")
    if sorted(blocks) != list(range(len(blocks))):
        raise MeshTFError(f"{stack} block numbers {sorted(blocks)} are not 0..{len(blocks) - 1}")
    return jax.tree.map(lambda *layers: np.stack(layers), *per_layer), bias  # [L, ...] per leaf


def convert_variables(variables: dict[str, np.ndarray], config: T5Config) -> dict[str, Any]:
    """Returns mesh_t5 parameters (docs/internals.md layout, numpy float32) from Mesh-TF variables."""
    if config.architecture == "shared_encoder_decoder":
        raise MeshTFError("Mesh-TF import of shared_encoder_decoder is not supported; use encoder_decoder")
    stacks, top = _group(variables)
    expected_stacks = {"encoder", "decoder"} if config.has_encoder else {"decoder"}
    if set(stacks) != expected_stacks:
        raise MeshTFError(
            f"checkpoint stacks {sorted(stacks)} do not match architecture={config.architecture}"
        )
    params: dict[str, Any] = {"token_embedder": {"embedding": top.pop("shared/embedding")}}  # [V, D]
    for stack in sorted(stacks):
        layers, bias = _stack_params(stacks[stack], stack, config)
        params[stack] = {
            "relpos_bias": bias,
            "layers": layers,
            "final_norm": {"scale": _final_norm(top, stack)},
        }
    logits = top.pop("decoder/logits/kernel", None)
    if not config.tie_word_embeddings:
        if logits is None:
            raise MeshTFError("tie_word_embeddings=False but the checkpoint has no decoder/logits/kernel")
        params["logits_dense"] = {"kernel": logits}  # [D, V]
    elif logits is not None:
        raise MeshTFError("the checkpoint has an untied decoder/logits/kernel; set tie_word_embeddings=False")
    # The decoder's cross-attention never had a bias table; some checkpoints carry an unused one.
    top = {k: v for k, v in top.items() if not k.endswith("relative_attention_bias")}
    if top:
        raise MeshTFError(
            f"unrecognised Mesh-TF variable(s) {', '.join(sorted(top))}; is this a T5 checkpoint?"
        )
    _check_shapes(params, config)
    return params


def _check_shapes(params: dict[str, Any], config: T5Config) -> None:
    D, H, K, V = config.d_model, config.num_heads, config.d_kv, config.vocab_size
    if params["token_embedder"]["embedding"].shape != (V, D):
        raise MeshTFError(
            f"shared/embedding is {params['token_embedder']['embedding'].shape}, config wants {(V, D)}"
        )
    for stack in ("encoder", "decoder"):
        if stack not in params:
            continue
        buckets = params[stack]["relpos_bias"].shape
        if buckets != (config.relative_attention_num_buckets, H):
            raise MeshTFError(
                f"{stack} relative_attention_bias is {buckets[::-1]}, config wants (heads, buckets)"
            )
        for name, tree in params[stack]["layers"].items():
            if "query" in tree and tree["query"].shape[1:] != (D, H, K):
                raise MeshTFError(f"{stack} {name} q kernel does not fit d_model={D}, heads={H}, d_kv={K}")


def load(
    path: str, config_fields: dict[str, Any] | None = None, operative_gin: str | None = None
) -> tuple[T5Config, dict[str, Any], int | None]:
    """Returns (config, mesh_t5 params, global_step) of an original Mesh-TF T5 checkpoint.

    The config comes from the tensors' shapes, completed by an original `operative_config.gin`
    (found next to the checkpoint when not given) and `config_fields` (e.g. from `--gin_file`);
    a value that contradicts the shapes is an error.
    """
    variables, step = read_checkpoint(path)
    inferred = infer_config_fields(variables)
    given: dict[str, Any] = {}
    given_from = "the config"
    if operative_gin is None:
        directory = path if os.path.isdir(path) else os.path.dirname(path)
        candidate = os.path.join(directory, "operative_config.gin")
        operative_gin = candidate if os.path.isfile(candidate) else None
    if operative_gin is not None:
        from_gin = config_fields_from_operative_gin(operative_gin)
        merge_config(inferred, from_gin, operative_gin)  # checks the file against the shapes
        given.update(from_gin)
        given_from = operative_gin
    if config_fields:
        merge_config(inferred, config_fields, "the gin config")
        given.update(config_fields)
        given_from = "the gin config"
    config = merge_config(inferred, given, given_from)
    return config, convert_variables(variables, config), step
