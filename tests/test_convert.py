"""Mesh-TF T5 checkpoint import: names as the public releases, parity with Hugging Face's T5."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from mesh_t5 import meshtf
from mesh_t5.errors import UserError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tf = pytest.importorskip("tensorflow")

TINY = dict(vocab_size=96, d_model=16, d_ff=24, num_heads=2, d_kv=6, num_layers=2, num_decoder_layers=3)


def _hf_model(gated: bool) -> transformers.T5ForConditionalGeneration:
    torch.manual_seed(0 if gated else 1)
    config = transformers.T5Config(
        **TINY,
        feed_forward_proj="gated-gelu" if gated else "relu",
        tie_word_embeddings=not gated,
        dropout_rate=0.0,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=128,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    model = transformers.T5ForConditionalGeneration(config).eval()
    model.untied = gated
    # Random init leaves norms at 1: perturb them so a misplaced scale shows in the logits.
    with torch.no_grad():
        if gated:
            # transformers 5 always ties lm_head to shared (T5 1.1 only drops the d_model^-0.5 scale): untie it.
            model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


def _meshtf_name(hf_name: str) -> str | None:
    """The public Mesh-TF release's name of a Hugging Face T5 parameter (HF's own loader, inverted)."""
    if hf_name == "shared.weight":
        return "shared/embedding"
    if hf_name == "lm_head.weight":
        return "decoder/logits/kernel"
    if hf_name.endswith("embed_tokens.weight"):
        return None  # the stacks' views of shared.weight
    name = re.sub(r"block\.(\d+)", lambda m: f"block_{int(m.group(1)):03d}", hf_name)
    name = re.sub(r"layer\.(\d+)", lambda m: f"layer_{int(m.group(1)):03d}", name)
    name = name.replace(".", "/")
    if name.endswith(("layer_norm/weight", "final_layer_norm/weight")):
        return name.removesuffix("weight") + "scale"
    if re.search(r"DenseReluDense/(wi|wi_0|wi_1|wo)/weight$", name):
        return name.removesuffix("weight") + "kernel"
    return name.removesuffix("/weight")  # q, k, v, o, relative_attention_bias


def _write_meshtf_checkpoint(model, directory: str, step: int = 1000) -> dict[str, np.ndarray]:
    """Writes the model's weights as a Mesh-TF checkpoint (plus Adafactor slots); returns the arrays."""
    arrays = {}
    for hf_name, tensor in model.state_dict().items():
        name = _meshtf_name(hf_name)
        if name is None or (name == "decoder/logits/kernel" and not model.untied):
            continue
        value = tensor.detach().numpy().astype(np.float32)
        arrays[name] = value if name == "shared/embedding" else value.T  # torch Linear is [out, in]
    variables = {name: tf.Variable(value) for name, value in arrays.items()}
    for name, value in list(arrays.items())[:3]:
        variables[name + "_slot_vr"] = tf.Variable(np.zeros(value.shape[:1], np.float32))
        variables[name + "_slot_v"] = tf.Variable(np.zeros(value.shape, np.float32))
    variables["global_step"] = tf.Variable(np.int64(step))
    saver = tf.compat.v1.train.Saver(var_list=variables)
    saver.save(None, os.path.join(directory, "model.ckpt"), global_step=step)
    return arrays


@pytest.mark.parametrize("gated", [False, True], ids=["t5_1_0", "t5_1_1"])
def test_meshtf_names_shapes_and_config(tmp_path, gated):
    model = _hf_model(gated)
    arrays = _write_meshtf_checkpoint(model, str(tmp_path))
    assert "encoder/block_000/layer_000/SelfAttention/relative_attention_bias" in arrays
    assert ("encoder/block_001/layer_001/DenseReluDense/wi_0/kernel" in arrays) == gated
    config, params, step = meshtf.load(str(tmp_path))
    assert step == 1000
    assert (config.vocab_size, config.d_model, config.d_ff, config.num_heads, config.d_kv) == (
        96,
        16,
        24,
        2,
        6,
    )
    assert (config.num_encoder_layers, config.num_decoder_layers) == (2, 3)
    assert config.relative_attention_num_buckets == 8
    assert config.feed_forward_proj == ("gated-gelu" if gated else "relu")
    assert config.tie_word_embeddings == (not gated)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    # Heads are the outer factor of HF's merged [H*K] dimension.
    q = sd["decoder.block.2.layer.1.EncDecAttention.q.weight"].reshape(2, 6, 16)  # [H, K, D]
    np.testing.assert_array_equal(
        params["decoder"]["layers"]["cross_attention"]["query"][2], q.transpose(2, 0, 1)
    )
    o = sd["encoder.block.1.layer.0.SelfAttention.o.weight"].reshape(16, 2, 6)  # [D, H, K]
    np.testing.assert_array_equal(params["encoder"]["layers"]["attention"]["out"][1], o.transpose(1, 2, 0))
    np.testing.assert_array_equal(
        params["decoder"]["relpos_bias"],
        sd["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
    )
    np.testing.assert_array_equal(
        params["decoder"]["layers"]["mlp_norm"]["scale"][1], sd["decoder.block.1.layer.2.layer_norm.weight"]
    )
    assert ("logits_dense" in params) == gated
    assert params["encoder"]["layers"]["mlp"]["wo"].shape == (2, 24, 16)


def test_meshtf_logits_match_hugging_face(tmp_path):
    network = pytest.importorskip("mesh_t5.network")
    for gated in (False, True):
        model = _hf_model(gated)
        directory = tmp_path / str(gated)
        directory.mkdir()
        _write_meshtf_checkpoint(model, str(directory))
        config, params, _ = meshtf.load(str(directory))
        rng = np.random.default_rng(0)
        inputs = rng.integers(2, 96, size=(2, 7)).astype(np.int32)
        targets = rng.integers(2, 96, size=(2, 5)).astype(np.int32)
        decoder_inputs = np.concatenate([np.zeros((2, 1), np.int32), targets[:, :-1]], axis=1)
        batch = {
            "encoder_input_tokens": inputs,
            "decoder_input_tokens": decoder_inputs,
            "decoder_target_tokens": targets,
        }
        ours = np.asarray(network.forward(params, batch, config))
        with torch.no_grad():
            theirs = model(
                input_ids=torch.tensor(inputs).long(), decoder_input_ids=torch.tensor(decoder_inputs).long()
            )
        np.testing.assert_allclose(ours, theirs.logits.numpy(), atol=2e-4, rtol=2e-4)


def test_conflicting_config_is_one_line(tmp_path):
    _write_meshtf_checkpoint(_hf_model(gated=True), str(tmp_path))
    with pytest.raises(UserError, match=r"d_model=32 but the checkpoint's shapes say 16"):
        meshtf.load(str(tmp_path), config_fields={"d_model": 32})
    with pytest.raises(UserError, match=r"feed_forward_proj='relu'.*gated"):
        meshtf.load(str(tmp_path), config_fields={"feed_forward_proj": "relu"})
    config, _, _ = meshtf.load(
        str(tmp_path), config_fields={"feed_forward_proj": "gated-relu", "dropout_rate": 0.0}
    )
    assert config.feed_forward_proj == "gated-relu"


OPERATIVE_GIN = """\
import mesh_tensorflow.transformer.transformer_layers

# Macros:
# ==============================================================================
d_ff = 24
d_kv = 6
d_model = 16
dropout_rate = 0.1
num_heads = 2
num_layers = 3

# Parameters for decoder/DenseReluDense:
decoder/DenseReluDense.activation = 'relu'
decoder/DenseReluDense.hidden_size = %d_ff
encoder/make_layer_stack.layers = \\
    [@mesh_tensorflow.transformer.transformer_layers.SelfAttention,
     @mesh_tensorflow.transformer.transformer_layers.DenseReluDense]
encoder/make_layer_stack.num_layers = 2
encoder/SelfAttention.relative_attention_num_buckets = 8
"""


def test_operative_gin_next_to_checkpoint(tmp_path):
    _write_meshtf_checkpoint(_hf_model(gated=False), str(tmp_path))
    (tmp_path / "operative_config.gin").write_text(OPERATIVE_GIN)
    fields = meshtf.config_fields_from_operative_gin(str(tmp_path / "operative_config.gin"))
    assert fields == {
        "d_model": 16, "d_ff": 24, "d_kv": 6, "num_heads": 2, "dropout_rate": 0.1,
        "relative_attention_num_buckets": 8, "num_encoder_layers": 2, "num_decoder_layers": 3,
        "feed_forward_proj": "relu",
    }  # fmt: skip
    config, _, _ = meshtf.load(str(tmp_path))
    assert config.dropout_rate == 0.1
    (tmp_path / "operative_config.gin").write_text(OPERATIVE_GIN.replace("num_heads = 2", "num_heads = 4"))
    with pytest.raises(
        UserError, match=r"operative_config.gin sets num_heads=4 but the checkpoint's shapes say 2"
    ):
        meshtf.load(str(tmp_path))


def test_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(UserError, match="not found"):
        meshtf.load(str(tmp_path / "model.ckpt-5"))
    with pytest.raises(UserError, match="no TF checkpoint in directory"):
        meshtf.load(str(tmp_path))


def test_cli_meshtf_to_mesh_t5_to_hf(tmp_path, capsys):
    from mesh_t5 import cli
    from mesh_t5.model import T5Model

    model = _hf_model(gated=True)
    ckpt = tmp_path / "meshtf"
    ckpt.mkdir()
    _write_meshtf_checkpoint(model, str(ckpt))
    code = cli.main(
        [
            "convert",
            f"--input={ckpt}",
            f"--output_dir={tmp_path / 'bad'}",
            "--to=mesh_t5",
            "--gin.T5Config.num_heads=4",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "num_heads=4" in err, err
    assert cli.main(["convert", f"--input={ckpt}", f"--output_dir={tmp_path / 'ours'}", "--to=mesh_t5"]) == 0
    assert (
        cli.main(["convert", f"--input={tmp_path / 'ours'}", f"--output_dir={tmp_path / 'hf'}", "--to=hf"])
        == 0
    )
    inputs = np.array([[5, 9, 23, 4, 1]], np.int32)  # no PAD: HF attends to PAD without a mask
    decoder_inputs = np.array([[0, 7, 3, 11]], np.int32)
    with torch.no_grad():
        want = model(
            input_ids=torch.tensor(inputs).long(), decoder_input_ids=torch.tensor(decoder_inputs).long()
        )
        want = want.logits.numpy()
    ours = T5Model.from_pretrained(str(tmp_path / "ours")).logits(inputs, decoder_inputs)
    np.testing.assert_allclose(ours, want, atol=2e-4, rtol=2e-4)
    back = T5Model.from_pretrained(str(tmp_path / "hf")).logits(inputs, decoder_inputs)
    np.testing.assert_allclose(back, want, atol=2e-4, rtol=2e-4)
    capsys.readouterr()
    code = cli.main(["convert", f"--input={tmp_path / 'ours'}", f"--output_dir={tmp_path / 'hf'}", "--to=hf"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not empty" in err and len(err.splitlines()) == 1, err
