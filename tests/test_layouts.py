"""Layout strings → meshes and PartitionSpecs, validation messages, optimizer-slot axes (one device)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from mesh_t5 import layouts
from mesh_t5.config import T5Config, get_model_config
from mesh_t5.layouts import LayoutError


def test_parse_mesh_shape_and_rules_keep_order():
    assert list(layouts.parse_mesh_shape(" data:2, model:4 ").items()) == [("data", 2), ("model", 4)]
    rules = layouts.parse_layout_rules(layouts.DEFAULT_LAYOUT_RULES)
    assert rules == {"batch": "data", "vocab": "model", "heads": "model", "d_ff": "model", "experts": "data"}


@pytest.mark.parametrize(
    ("mesh_shape", "needle"),
    [
        ("data:0", "'data:0'"),
        ("data", "'data'"),
        ("data:2,data:2", "twice"),
        ("", "empty"),
        ("x:two", "'x:two'"),
    ],
)
def test_bad_mesh_shape_is_one_line(mesh_shape, needle):
    with pytest.raises(LayoutError) as e:
        layouts.parse_mesh_shape(mesh_shape)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_bad_rules_name_the_axis():
    with pytest.raises(LayoutError, match="unknown logical axis 'hedas'"):
        layouts.parse_layout_rules("hedas:model")
    with pytest.raises(LayoutError, match=r"layout rule heads:modle names mesh axis 'modle'.*data:4,model:2"):
        layouts.make_abstract_layout("data:4,model:2", "heads:modle")


def test_mesh_size_must_match_device_count():
    n = jax.device_count()
    with pytest.raises(LayoutError, match=f"has {n + 1} devices but {n} are available"):
        layouts.make_layout(f"data:{n + 1}")


def test_default_layout_is_data_parallel_over_all_devices():
    layout = layouts.make_layout()
    assert layout.mesh_shape == {"data": jax.device_count()}
    # The default rules onto the absent `model` axis are dropped; given ones naming it are errors.
    assert layout.rules == {"batch": "data", "experts": "data"}


def test_spec_follows_rules_and_uses_each_mesh_axis_once():
    layout = layouts.make_abstract_layout("data:2,model:4", layouts.DEFAULT_LAYOUT_RULES + ",embed:data")
    assert layout.spec(("layers", "embed", "d_ff")) == P(None, "data", "model")
    assert layout.spec(("vocab", "embed")) == P("model", "data")
    # batch takes `data` first, so the activation's embed dimension stays whole (Mesh-TF's rule).
    assert layout.spec(("batch", "length", "embed")) == P("data", None, None)
    # An axis of size 1 is dropped from the spec.
    assert layouts.make_abstract_layout("data:8,model:1").spec(("vocab", "embed")) == P(None, None)


def test_shard_shape_divides_the_split_dimensions():
    layout = layouts.make_abstract_layout("data:16,model:32")
    assert layout.shard_shape((24, 1024, 65536), ("layers", "embed", "d_ff")) == (24, 1024, 2048)
    assert layout.shard_shape((128, 512, 32128), ("batch", "length", "vocab")) == (8, 512, 1004)


@pytest.mark.parametrize(
    ("mesh", "rules", "message"),
    [
        (
            "data:1,model:3",
            "heads:model",
            "mesh model:3 does not divide heads=8; pick a model axis that divides 8",
        ),
        ("data:1,model:3", "d_ff:model", "mesh model:3 does not divide d_ff=2048"),
        ("data:1,model:5", "vocab:model", "mesh model:5 does not divide vocab=32128"),
        ("data:3,model:1", "embed:data", "mesh data:3 does not divide embed=512"),
    ],
)
def test_validate_names_the_dimension(mesh, rules, message):
    layout = layouts.make_abstract_layout(mesh, rules)
    with pytest.raises(LayoutError) as e:
        layouts.validate(layout, get_model_config("t5-small"))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_validate_batch_and_accepts_the_papers_meshes():
    with pytest.raises(LayoutError, match="mesh data:16 does not divide batch_size=100"):
        layouts.validate(layouts.make_abstract_layout("data:16,model:32"), get_model_config("t5-11b"), 100)
    layouts.validate(layouts.make_abstract_layout("data:16,model:32"), get_model_config("t5-11b"), 128)
    layouts.validate(layouts.make_abstract_layout("data:64,model:8"), get_model_config("t5-3b"), 128)


def _adafactor_case():
    params = {
        "mlp": {"wi": jax.ShapeDtypeStruct((2, 256, 1024), jnp.float32)},
        "square": jax.ShapeDtypeStruct((2, 256, 256), jnp.float32),
        "embedding": jax.ShapeDtypeStruct((4096, 256), jnp.float32),
        "scale": jax.ShapeDtypeStruct((256,), jnp.float32),
        "relpos": jax.ShapeDtypeStruct((32, 8), jnp.float32),
    }
    axes = {
        "mlp": {"wi": ("layers", "embed", "d_ff")},
        "square": ("layers", "embed", "d_ff"),
        "embedding": ("vocab", "embed"),
        "scale": ("embed",),
        "relpos": ("relpos_buckets", "heads"),
    }
    return params, axes


def test_adafactor_factored_slots_drop_the_reduced_axis():
    params, axes = _adafactor_case()
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adafactor(learning_rate=None, decay_rate=0.8))
    state = jax.eval_shape(opt.init, params)
    state_axes = layouts.optimizer_state_axes(state, params, axes)
    factored = state_axes[1][0]
    assert factored.count == ()
    # v_row keeps all but the largest dim; v_col all but the second largest (optax's rule).
    assert factored.v_row["mlp"]["wi"] == ("layers", "embed")
    assert factored.v_col["mlp"]["wi"] == ("layers", "d_ff")
    assert factored.v_row["embedding"] == ("embed",) and factored.v_col["embedding"] == ("vocab",)
    # Equal sizes: the tie is broken as optax breaks it (argsort order), not by shape alone.
    assert factored.v_row["square"] == ("layers", "embed") and factored.v_col["square"] == ("layers", "d_ff")
    # Unfactored parameters keep a full second moment with the parameter's axes; the rest is replicated.
    assert factored.v["scale"] == ("embed",) and factored.v["relpos"] == ("relpos_buckets", "heads")
    assert factored.v["mlp"]["wi"] == (None,)
    # Every axes tuple has the rank of its slot.
    ranks = jax.tree.map(lambda s: len(s.shape), state)
    assert jax.tree.leaves(ranks) == [len(a) for a in jax.tree.leaves(state_axes, is_leaf=layouts.is_axes)]


def test_adam_slots_take_the_parameter_axes_and_shardings_build():
    params, axes = _adafactor_case()
    state = jax.eval_shape(optax.adam(1e-3).init, params)
    state_axes = layouts.optimizer_state_axes(state, params, axes)
    assert state_axes[0].mu == axes and state_axes[0].nu == axes
    layout = layouts.make_layout("data:1,model:1")
    shardings = layout.tree_shardings(layouts.optimizer_state_axes(state, params, axes))
    assert jax.tree.structure(shardings) == jax.tree.structure(state)


def test_init_sharded_matches_plain_init_and_host_batch_roundtrips():
    layout = layouts.make_layout()

    def init(key):
        return {"w": jax.random.normal(key, (8, 16)), "b": jnp.zeros((16,))}

    out = layouts.init_sharded(init, {"w": ("embed", "d_ff"), "b": ("d_ff",)}, layout, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(out["w"], init(jax.random.PRNGKey(3))["w"])
    assert layouts.process_batch_shard(layout) == (0, 1)
    batch = {"encoder_input_tokens": np.arange(12, dtype=np.int32).reshape(3, 4), "ids": np.arange(3)}
    global_batch = layouts.host_batch_to_global(batch, layout)
    np.testing.assert_array_equal(global_batch["encoder_input_tokens"], batch["encoder_input_tokens"])
    assert layouts.feature_axes(1) == ("batch",) and layouts.feature_axes(3) == ("batch", "length", None)


def test_constrain_is_a_noop_without_a_layout_and_checks_rank_with_one():
    x = jnp.ones((2, 3))
    assert layouts.constrain(x, ("batch", "length")) is x
    with layouts.use_layout(layouts.make_layout()), pytest.raises(ValueError, match="rank-2"):
        layouts.constrain(x, ("batch",))
    assert layouts.current_layout() is None


def test_validate_checks_the_tiny_test_config():
    tiny = T5Config(vocab_size=512, d_model=64, d_ff=128, num_heads=8, d_kv=8, num_encoder_layers=2)
    for mesh in ("data:8", "model:8", "data:2,model:4", "data:4,model:2"):
        layouts.validate(layouts.make_abstract_layout(mesh), tiny, batch_size=8)
