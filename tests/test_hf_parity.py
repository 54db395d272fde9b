"""Parity with Hugging Face transformers' T5ForConditionalGeneration: import, logits, loss, export."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import tiny_config, tiny_params

from mesh_t5 import hf, losses
from mesh_t5.errors import UserError
from mesh_t5.model import T5Model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# T5 1.0 (relu, tied, scaled logits), T5 1.1 (gated-gelu, untied), unequal depths, d_kv != d_model / heads.
HF_CONFIGS = {
    "t5_1_0": dict(feed_forward_proj="relu", tie_word_embeddings=True, num_layers=2, num_decoder_layers=2),
    "t5_1_1_unequal": dict(
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_layers=3, num_decoder_layers=1
    ),
    "odd_d_kv": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, d_kv=12, num_heads=3),
}


def _hf_model(name: str, path: str) -> tuple[object, str]:
    torch.manual_seed(0)
    kwargs = dict(vocab_size=96, d_model=32, d_ff=48, d_kv=8, num_heads=4, num_layers=2, dropout_rate=0.1)
    kwargs.update(HF_CONFIGS[name])
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**kwargs)).eval()
    with torch.no_grad():  # HF's init leaves relative biases and norms trivial; make every weight matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    return model, path


def open_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _batch(rng: np.random.RandomState) -> dict[str, np.ndarray]:
    enc = rng.randint(2, 96, size=(3, 11)).astype(np.int32)
    enc[1, 7:] = 0  # padded encoder rows
    enc[2, 4:] = 0
    targets = rng.randint(2, 96, size=(3, 6)).astype(np.int32)
    dec = np.concatenate([np.zeros((3, 1), np.int32), targets[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "decoder_target_tokens": targets}


def _hf_logits(model: object, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    enc = torch.tensor(batch["encoder_input_tokens"], dtype=torch.long)
    with torch.no_grad():
        out = model(
            input_ids=enc,
            attention_mask=(enc != 0).long(),
            decoder_input_ids=torch.tensor(batch["decoder_input_tokens"], dtype=torch.long),
            labels=torch.tensor(batch["decoder_target_tokens"], dtype=torch.long),
        )
    return out.logits.numpy(), float(out.loss)


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_import_matches_hf_logits_and_loss(name: str, tmp_path: object) -> None:
    hf_model, path = _hf_model(name, str(tmp_path / "hf"))
    batch = _batch(np.random.RandomState(1))
    model = T5Model.from_pretrained(path)
    assert model.config.num_decoder_layers == hf_model.config.num_decoder_layers
    ours = model.logits(batch["encoder_input_tokens"], batch["decoder_input_tokens"])
    theirs, hf_loss = _hf_logits(hf_model, batch)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    loss_sum, aux = losses.cross_entropy(ours, batch["decoder_target_tokens"], np.ones((3, 6), np.float32))
    np.testing.assert_allclose(float(loss_sum) / float(aux["weight_sum"]), hf_loss, rtol=1e-5)
    np.testing.assert_allclose(
        model.loss({**batch, "decoder_loss_weights": np.ones((3, 6))}), hf_loss, rtol=1e-5
    )


@pytest.mark.parametrize("tied", [True, False])
def test_export_round_trip_loads_in_transformers(tied: bool, tmp_path: object) -> None:
    config = tiny_config(
        vocab_size=96, tie_word_embeddings=tied, feed_forward_proj="relu" if tied else "gated-gelu",
        num_encoder_layers=2, num_decoder_layers=3, d_kv=12, num_heads=3,
    )  # fmt: skip
    model = T5Model(config, tiny_params(config, seed=3))
    out = str(tmp_path / "export")
    model.save_pretrained(out, format="hf")
    assert json.loads((tmp_path / "export" / "config.json").read_text())["architectures"] == [
        "T5ForConditionalGeneration"
    ]
    model.save_pretrained(out, format="hf")  # overwriting a previous hf export is allowed
    batch = _batch(np.random.RandomState(2))
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    theirs, _ = _hf_logits(hf_model, batch)
    ours = model.logits(batch["encoder_input_tokens"], batch["decoder_input_tokens"])
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    again = T5Model.from_pretrained(out)
    assert again.config == config.replace(dropout_rate=again.config.dropout_rate)
    np.testing.assert_array_equal(
        again.logits(batch["encoder_input_tokens"], batch["decoder_input_tokens"]), ours
    )


def test_mismatched_config_fails_with_one_line_naming_both_values(tmp_path: object) -> None:
    _, path = _hf_model("t5_1_0", str(tmp_path / "hf"))
    cfg_path = os.path.join(path, "config.json")
    original = json.loads(open_text(cfg_path))
    for change, expected in (
        ({"d_kv": 16}, ["num_heads × d_kv = 4 × 16 = 64", "[32, 32]"]),
        ({"vocab_size": 100}, ["vocab_size = 100", "[96, 32]", "[100, 32]"]),
        ({"num_layers": 1}, ["2 encoder blocks", "num_layers=1"]),
    ):
        write_text(cfg_path, json.dumps({**original, **change}))
        with pytest.raises(UserError) as err:
            T5Model.from_pretrained(path)
        message = str(err.value)
        assert "\n" not in message
        for part in expected:
            assert part in message, (part, message)


def test_missing_or_unreadable_files_name_the_path(tmp_path: object) -> None:
    with pytest.raises(UserError, match="nowhere"):
        T5Model.from_pretrained(str(tmp_path / "nowhere"))
    d = tmp_path / "broken"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "t5", "vocab_size": 8}))
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="model.safetensors"):
        hf.load_hf(str(d))


def test_save_refuses_a_foreign_non_empty_dir(tmp_path: object) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        T5Model(tiny_config(), tiny_params(tiny_config())).save_pretrained(str(target), format="hf")
    assert os.listdir(target) == ["notes.txt"]


def test_bfloat16_safetensors_are_read(tmp_path: object) -> None:
    from safetensors.torch import save_file

    hf_model, path = _hf_model("t5_1_0", str(tmp_path / "hf"))
    tensors = {
        k: v.to(torch.bfloat16).contiguous()
        for k, v in hf_model.state_dict().items()
        if "embed_tokens" not in k
    }
    tensors.pop("lm_head.weight", None)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    _, params, _ = hf.load_hf(path)
    expected = tensors["shared.weight"].to(torch.float32).numpy()
    np.testing.assert_array_equal(params["token_embedder"]["embedding"], expected)
