"""Orbax checkpoints: the training store, exported model dirs, shape checks that refuse clearly."""

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mesh_t5 import checkpoints, network, optim, steps
from mesh_t5.config import T5Config

TINY = T5Config(
    vocab_size=64, d_model=32, d_ff=64, num_heads=2, d_kv=16, num_encoder_layers=1, num_decoder_layers=1,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
)  # fmt: skip


def listing(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            out[path] = os.stat(path).st_mtime_ns
    return out


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def state():
    optimizer = optim.make_optimizer()
    return jax.device_get(steps.init_state(TINY, optimizer, jax.random.key(1)))


def test_store_roundtrip_keeps_last_k_and_meta(tmp_path, state):
    store = checkpoints.CheckpointStore(tmp_path, keep=2)
    for step in (1, 2, 3):
        store.save(step, {**state, "step": jnp.int32(step)}, {"data": {"position": step * 10}})
    store.close()
    store = checkpoints.CheckpointStore(tmp_path, keep=2)
    assert store.all_steps() == [2, 3] and store.latest_step() == 3
    abstract = steps.abstract_state(TINY, optim.make_optimizer())
    restored, meta = store.restore(3, abstract)
    assert meta == {"data": {"position": 30}}
    assert int(restored["step"]) == 3
    assert_trees_equal(restored["params"], state["params"])
    assert_trees_equal(restored["opt_state"], state["opt_state"])
    before = listing(tmp_path)
    store.save(3, {**state, "step": jnp.int32(99)}, {"data": {}})  # an existing step is never overwritten
    store.close()
    assert listing(tmp_path) == before


def test_shape_mismatch_names_parameter_and_both_shapes(tmp_path, state):
    store = checkpoints.CheckpointStore(tmp_path)
    store.save(5, state, {})
    store.close()
    bigger = TINY.replace(d_ff=128)
    before = listing(tmp_path)
    store = checkpoints.CheckpointStore(tmp_path)
    with pytest.raises(checkpoints.CheckpointError) as info:
        store.restore(5, steps.abstract_state(bigger, optim.make_optimizer()))
    store.close()
    message = str(info.value)
    assert "\n" not in message
    assert (
        "parameter decoder/layers/mlp/wi_0 has shape (1, 32, 64) but the model config needs (1, 32, 128)"
        in message
    )
    assert listing(tmp_path) == before


def test_load_params_from_training_dir_and_step(tmp_path, state):
    store = checkpoints.CheckpointStore(tmp_path)
    store.save(4, {**state, "step": jnp.int32(4)}, {})
    store.save(9, {**state, "step": jnp.int32(9)}, {})
    store.close()
    abstract = jax.eval_shape(lambda: network.init_params(TINY, jax.random.key(0)))
    params, step, state_dir = checkpoints.load_params(tmp_path, abstract)
    assert step == 9 and state_dir.parent.name == "9"
    assert_trees_equal(params, state["params"])
    _params4, step4, _ = checkpoints.load_params(tmp_path / "checkpoints" / "4", abstract)
    assert step4 == 4


def test_save_and_load_model_dir(tmp_path, state):
    vocab = tmp_path / "my.model"
    vocab.write_bytes(b"not really a sentencepiece model")
    out = tmp_path / "exported"
    checkpoints.save_model(out, TINY, state["params"], str(vocab))
    config, params, vocab_path = checkpoints.load_model(out)
    assert config == TINY
    assert_trees_equal(params, state["params"])
    assert vocab_path == str(out / "vocab" / "my.model")
    assert Path(vocab_path).read_bytes() == vocab.read_bytes()
    before = listing(out)
    with pytest.raises(checkpoints.CheckpointError, match="already holds a model"):
        checkpoints.save_model(out, TINY, state["params"], None)
    assert listing(out) == before


def test_not_a_checkpoint_is_one_line(tmp_path):
    abstract = jax.eval_shape(lambda: network.init_params(TINY, jax.random.key(0)))
    with pytest.raises(checkpoints.CheckpointError, match="is not a mesh_t5 checkpoint"):
        checkpoints.load_params(tmp_path, abstract)
    with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
        checkpoints.load_params(tmp_path / "nope", abstract)
