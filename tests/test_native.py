"""The native few-row product (mesh_t5/native): built where it can be, exact against numpy, and a
clean fallback where it cannot be built."""

from __future__ import annotations

import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from mesh_t5 import layers, native, network

# Where the kernel can be built (Linux x86-64 with AVX2 and FMA, a C++ compiler), it must be: a
# broken build would otherwise only show as slower decoding.
CAN_BUILD = native._cpu_supported() is None and shutil.which(os.environ.get("CXX") or "c++") is not None
needs_kernel = pytest.mark.skipif(not CAN_BUILD, reason="no AVX2+FMA x86-64 Linux or no C++ compiler")


def test_the_kernel_is_available_wherever_it_can_be_built():
    assert native.available() == CAN_BUILD


@needs_kernel
@pytest.mark.parametrize("rows", [1, 3, 8, 9, 17, 32, native.MAX_ROWS + 1])  # the last: XLA's dot
def test_products_equal_numpy_for_any_rows_and_ragged_columns(rows):
    rng = np.random.default_rng(rows)
    fn = jax.jit(native.few_rows_matmul)
    for k, n in [(1, 1), (5, 7), (64, 8), (33, 13), (130, 41)]:  # n % 8 != 0: the masked last panel
        x = rng.standard_normal((rows, k)).astype(np.float32)
        w = rng.standard_normal((k, n)).astype(np.float32)
        packed = native.pack(jnp.asarray(w))
        assert packed.panels.shape == (-(-n // 8), k, 8)
        want = x.astype(np.float64) @ w.astype(np.float64)
        np.testing.assert_allclose(
            np.asarray(fn(jnp.asarray(x), packed)), want, rtol=1e-5, atol=1e-5 * np.sqrt(k)
        )


@needs_kernel
def test_dense_with_a_packed_kernel_equals_the_einsum_for_two_contracted_axes():
    # The attention output weight [H, K, D] contracts two axes of x [B, T, H, K].
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 3, 4, 5)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((4, 5, 12)), jnp.float32)
    got = jax.jit(lambda x, w: layers.dense(x, w, contract=2))(x, native.pack(w, 2))
    np.testing.assert_allclose(got, jnp.einsum("bthk,hkd->btd", x, w), rtol=1e-5, atol=1e-5)


def test_packing_round_trips_and_the_transposed_packing_agrees():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 3, 11)).astype(np.float32)
    packed = native.pack(jnp.asarray(w), 2)
    assert (packed.shape, packed.contract, packed.ndim, packed.dtype) == ((6, 3, 11), 2, 3, jnp.float32)
    np.testing.assert_array_equal(native.unpack(packed), w)
    np.testing.assert_array_equal(np.asarray(packed.panels)[1, :, 3:], 0.0)  # 11 columns = 8 + 3: zero-padded
    e = rng.standard_normal((21, 4)).astype(np.float32)  # a tied embedding [V, D]
    np.testing.assert_array_equal(
        native.pack_transposed(jnp.asarray(e)).panels, native.pack(jnp.asarray(e.T)).panels
    )
    assert packed.astype(jnp.float32) is packed
    with pytest.raises(TypeError, match="float32"):
        packed.astype(jnp.bfloat16)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CXX": "/nonexistent/c++"}, "no C++ compiler"),
        ({"CXX": "false"}, "false failed: exit 1"),  # a compiler that fails
        ({"MESH_T5_NATIVE": "0"}, None),  # turned off: no message
        ({"MESH_T5_CACHE_DIR": "a-file"}, "cannot write to the cache directory"),  # a file, not a folder
    ],
)
def test_without_the_kernel_one_warning_line_and_decoding_uses_xla(
    monkeypatch, tmp_path, caplog, env, message
):
    if message and native._cpu_supported() is not None:
        pytest.skip("this CPU never builds the kernel")
    monkeypatch.setenv("MESH_T5_CACHE_DIR", str(tmp_path / "cache"))
    for name, value in env.items():
        if value == "a-file":
            (tmp_path / "cache").write_text("")
            value = str(tmp_path / "cache")
        monkeypatch.setenv(name, value)
    native.available.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="mesh_t5.native"):
            assert not native.available()
            assert not network.packs_decoder_weights(tiny_config(), 8)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        if message is None:
            assert warnings == []
        else:
            assert len(warnings) == 1 and message in warnings[0], warnings
            assert "\n" not in warnings[0]
        cache = tmp_path / "cache"
        if cache.is_file():  # the file given as the cache directory is left as it was
            assert cache.read_text() == ""
        else:
            assert list(cache.glob("*")) == []  # no partial library left behind
    finally:
        native.available.cache_clear()
