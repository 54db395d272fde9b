"""Hugging Face T5 checkpoints (config.json + model.safetensors) ⇄ T5Config and mesh_t5 parameters.

torch `Linear.weight` is [out, in]; mesh_t5 kernels are [in, out] with heads split out and
layers stacked, so conversion transposes, reshapes and stacks. HF keeps the relative
position bias in block 0 of each stack. The work is numpy and safetensors (jax only maps over trees).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from typing import Any

import jax
import numpy as np

from mesh_t5.config import T5Config
from mesh_t5.errors import CheckpointError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "spiece.model"


def is_hf_dir(path: str | os.PathLike) -> bool:
    """Returns whether path holds a Hugging Face checkpoint (config.json and model.safetensors)."""
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isfile(
        os.path.join(path, WEIGHTS_FILE)
    )


# ----------------------------------------------------------------------------- config


def config_from_hf(hf: dict[str, Any]) -> T5Config:
    """Returns the T5Config for a Hugging Face T5 config.json dict."""
    num_layers = hf.get("num_layers", 6)
    # transformers >= 5 always writes tie_word_embeddings=true and records T5 1.1's missing
    # output scaling in scale_decoder_outputs; older files say tie_word_embeddings=false.
    scaled = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True))
    return T5Config(
        vocab_size=hf.get("vocab_size", 32128),
        d_model=hf.get("d_model", 512),
        d_ff=hf.get("d_ff", 2048),
        num_heads=hf.get("num_heads", 8),
        d_kv=hf.get("d_kv", 64),
        num_encoder_layers=num_layers,
        num_decoder_layers=hf.get("num_decoder_layers") or num_layers,
        feed_forward_proj=hf.get("feed_forward_proj", "relu"),
        tie_word_embeddings=bool(scaled),
        dropout_rate=float(hf.get("dropout_rate", 0.1)),
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
        pad_id=hf.get("pad_token_id", 0) if hf.get("pad_token_id") is not None else 0,
        eos_id=hf.get("eos_token_id", 1) if isinstance(hf.get("eos_token_id", 1), int) else 1,
        decoder_start_token_id=hf.get("decoder_start_token_id") or 0,
    )


def config_to_hf(config: T5Config) -> dict[str, Any]:
    """Returns a config.json dict that transformers loads as T5ForConditionalGeneration."""
    _check_exportable(config)
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_ff": config.d_ff,
        "d_kv": config.d_kv,
        "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "feed_forward_proj": config.feed_forward_proj,
        "tie_word_embeddings": config.tie_word_embeddings,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "dropout_rate": config.dropout_rate,
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "pad_token_id": config.pad_id,
        "eos_token_id": config.eos_id,
        "decoder_start_token_id": config.decoder_start_token_id,
        "use_cache": True,
    }


def _check_exportable(config: T5Config) -> None:
    if config.architecture != "encoder_decoder":
        raise CheckpointError(
            f"architecture={config.architecture} has no Hugging Face T5 equivalent; "
            'save it with format="mesh_t5"'
        )
    if config.adapter_dim:
        raise CheckpointError(
            f'adapter_dim={config.adapter_dim}: Hugging Face T5 has no adapters; save with format="mesh_t5"'
        )


# ----------------------------------------------------------------------------- tensors


def _layer_map(config: T5Config, stack: str) -> list[tuple[str, int, str]]:
    """Returns (mesh_t5 layer entry, HF sub-layer index, HF module name) for one stack."""
    if stack == "encoder":
        entries = [("attention_norm", 0, "layer_norm"), ("attention", 0, "SelfAttention")]
        ffn = 1
    else:
        entries = [
            ("self_attention_norm", 0, "layer_norm"),
            ("self_attention", 0, "SelfAttention"),
            ("cross_attention_norm", 1, "layer_norm"),
            ("cross_attention", 1, "EncDecAttention"),
        ]
        ffn = 2
    return [*entries, ("mlp_norm", ffn, "layer_norm"), ("mlp", ffn, "DenseReluDense")]


def _explain(config: T5Config, kind: str) -> str:
    c = config
    hk = f"num_heads × d_kv = {c.num_heads} × {c.d_kv} = {c.inner_dim}, d_model = {c.d_model}"
    return {
        "attention": hk,
        "norm": f"d_model = {c.d_model}",
        "mlp": f"d_ff = {c.d_ff}, d_model = {c.d_model}",
        "embedding": f"vocab_size = {c.vocab_size}, d_model = {c.d_model}",
        "relpos": f"relative_attention_num_buckets = {c.relative_attention_num_buckets}, num_heads = {c.num_heads}",
    }[kind]


def params_from_hf(
    tensors: dict[str, np.ndarray], config: T5Config, source: str = "checkpoint"
) -> dict[str, Any]:
    """Returns mesh_t5 params (numpy float32) from HF tensors, checking every shape against config."""
    c = config

    def get(name: str, shape: tuple[int, ...], kind: str) -> np.ndarray:
        if name not in tensors:
            raise CheckpointError(
                f"{source} lacks tensor {name} that config.json implies ({_explain(c, kind)})"
            )
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {list(t.shape)} but config.json implies {list(shape)} "
                f"({_explain(c, kind)}); the config does not match the checkpoint"
            )
        return np.asarray(t, dtype=np.float32)

    d, h, k = c.d_model, c.num_heads, c.d_kv

    def module(prefix: str, entry: str) -> dict[str, np.ndarray]:
        if entry.endswith("norm"):
            return {"scale": get(f"{prefix}.weight", (d,), "norm")}
        if entry == "mlp":
            names = ["wi_0", "wi_1"] if c.is_gated else ["wi"]
            out = {n: get(f"{prefix}.{n}.weight", (c.d_ff, d), "mlp").T for n in names}
            out["wo"] = get(f"{prefix}.wo.weight", (d, c.d_ff), "mlp").T
            return out
        out = {
            ours: get(f"{prefix}.{theirs}.weight", (h * k, d), "attention").T.reshape(d, h, k)
            for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"))
        }
        out["out"] = get(f"{prefix}.o.weight", (d, h * k), "attention").T.reshape(h, k, d)
        return out

    def stack(name: str, n: int) -> dict[str, Any]:
        per_layer = [
            {
                entry: module(f"{name}.block.{i}.layer.{sub}.{mod}", entry)
                for entry, sub, mod in _layer_map(c, name)
            }
            for i in range(n)
        ]
        stacked = jax.tree.map(lambda *layers: np.stack(layers), *per_layer)  # [L, ...] per leaf
        relpos = f"{name}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        return {
            "relpos_bias": get(relpos, (c.relative_attention_num_buckets, h), "relpos"),
            "layers": stacked,
            "final_norm": {"scale": get(f"{name}.final_layer_norm.weight", (d,), "norm")},
        }

    embedding_name = "shared.weight" if "shared.weight" in tensors else "encoder.embed_tokens.weight"
    params: dict[str, Any] = {
        "token_embedder": {"embedding": get(embedding_name, (c.vocab_size, d), "embedding")},
        "encoder": stack("encoder", c.num_encoder_layers),
        "decoder": stack("decoder", c.num_decoder_layers),
    }
    if not c.tie_word_embeddings:
        # transformers >= 5 ties lm_head to shared and may omit it from the file.
        head = "lm_head.weight" if "lm_head.weight" in tensors else embedding_name
        params["logits_dense"] = {"kernel": get(head, (c.vocab_size, d), "embedding").T}
    _check_layer_count(tensors, c, source)
    return params


def _check_layer_count(tensors: dict[str, np.ndarray], c: T5Config, source: str) -> None:
    for stack, n, field in (
        ("encoder", c.num_encoder_layers, "num_layers"),
        ("decoder", c.num_decoder_layers, "num_decoder_layers"),
    ):
        if f"{stack}.block.{n}.layer.0.layer_norm.weight" in tensors:
            found = 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith(f"{stack}.block."))
            raise CheckpointError(f"{source} has {found} {stack} blocks but config.json says {field}={n}")


def params_to_hf(params: dict[str, Any], config: T5Config) -> dict[str, np.ndarray]:
    """Returns HF T5ForConditionalGeneration tensors (float32, torch layout) for mesh_t5 params."""
    _check_exportable(config)
    c = config
    d, hk = c.d_model, c.inner_dim
    p = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    out: dict[str, np.ndarray] = {}
    for stack_name, n in (("encoder", c.num_encoder_layers), ("decoder", c.num_decoder_layers)):
        stack = p[stack_name]
        for i in range(n):
            for entry, sub, mod in _layer_map(c, stack_name):
                prefix = f"{stack_name}.block.{i}.layer.{sub}.{mod}"
                lp = stack["layers"][entry]
                if entry.endswith("norm"):
                    out[f"{prefix}.weight"] = lp["scale"][i]
                elif entry == "mlp":
                    for name, w in lp.items():
                        out[f"{prefix}.{name}.weight"] = w[i].T
                else:
                    for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v")):
                        out[f"{prefix}.{theirs}.weight"] = lp[ours][i].reshape(d, hk).T
                    out[f"{prefix}.o.weight"] = lp["out"][i].reshape(hk, d).T
        out[f"{stack_name}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = stack[
            "relpos_bias"
        ]
        out[f"{stack_name}.final_layer_norm.weight"] = stack["final_norm"]["scale"]
    out["shared.weight"] = p["token_embedder"]["embedding"]
    if not c.tie_word_embeddings:
        out["lm_head.weight"] = p["logits_dense"]["kernel"].T
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


# ----------------------------------------------------------------------------- files


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except TypeError:
        # numpy has no bfloat16; bf16 checkpoints (common for released T5s) are decoded by hand.
        return _read_safetensors_raw(path)


def _read_safetensors_raw(path: str) -> dict[str, np.ndarray]:
    import ml_dtypes

    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64}
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in dtypes:
            raise CheckpointError(f"{path}: tensor {name} has dtype {info['dtype']}; expected a float type")
        start, end = info["data_offsets"]
        raw = np.frombuffer(data[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        out[name] = raw.astype(np.float32)
    return out


def load_hf(path: str | os.PathLike) -> tuple[T5Config, dict[str, Any], str | None]:
    """Returns (config, numpy params, spiece.model path or None) read from a Hugging Face T5 dir."""
    path = os.fspath(path)
    config_path, weights_path = os.path.join(path, CONFIG_FILE), os.path.join(path, WEIGHTS_FILE)
    for p in (config_path, weights_path):
        if not os.path.isfile(p):
            raise CheckpointError(
                f"{p} does not exist; a Hugging Face T5 dir needs {CONFIG_FILE} and {WEIGHTS_FILE}"
            )
    try:
        with open(config_path) as f:
            hf_config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {config_path}: {e}") from None
    model_type = hf_config.get("model_type", "t5")
    if model_type not in ("t5", "mt5"):
        raise CheckpointError(
            f"{config_path} has model_type={model_type!r}; only T5 checkpoints are supported"
        )
    config = config_from_hf(hf_config)
    try:
        tensors = _read_safetensors(weights_path)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"cannot read {weights_path}: {type(e).__name__}: {e}") from None
    params = params_from_hf(tensors, config, source=weights_path)
    vocab = os.path.join(path, VOCAB_FILE)
    return config, params, vocab if os.path.isfile(vocab) else None


def save_hf(
    path: str | os.PathLike, config: T5Config, params: dict[str, Any], vocab_path: str | None = None
) -> None:
    """Writes config.json, model.safetensors (and spiece.model) that transformers can from_pretrained."""
    from safetensors.numpy import save_file

    path = os.fspath(path)
    tensors = params_to_hf(params, config)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(config_to_hf(config), f, indent=2)
    save_file(tensors, os.path.join(path, WEIGHTS_FILE), metadata={"format": "pt"})
    if vocab_path:
        target = os.path.join(path, VOCAB_FILE)
        if os.path.abspath(vocab_path) != os.path.abspath(target):
            shutil.copyfile(vocab_path, target)
