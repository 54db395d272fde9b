"""Shared fixtures: tiny T5 configs and random token batches."""

from __future__ import annotations

import functools
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import pytest

from mesh_t5 import network
from mesh_t5.config import T5Config

# Programs some tests run in a fresh process (tests/scripts/README.md).
SCRIPTS = pathlib.Path(__file__).parent / "scripts"


def run_script(
    name: str, *args: str, env: dict[str, str] | None = None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Runs tests/scripts/NAME with this Python in a fresh process; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def tiny_config(**overrides: object) -> T5Config:
    """Returns a seconds-to-compile T5Config (d_model 32, 2 layers, vocab 64) with overrides."""
    values: dict[str, object] = dict(
        vocab_size=64, d_model=32, d_ff=64, num_heads=4, d_kv=8, num_encoder_layers=2,
        num_decoder_layers=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
    )  # fmt: skip
    values.update(overrides)
    return T5Config(**values)  # type: ignore[arg-type]


@pytest.fixture
def rng() -> np.random.RandomState:
    return np.random.RandomState(0)


def tiny_params(config: T5Config, seed: int = 0) -> Any:
    """Returns random T5-init parameters drawn on the host (compiling init would dominate these tests)."""
    return network.init_params_numpy(config, seed)


@functools.cache
def jitted_forward(config: T5Config) -> Any:
    """Returns a jitted forward(params, batch) for config (one compile per config and shape)."""
    return jax.jit(functools.partial(network.forward, config=config))


def jaxpr_eqns(jaxpr: Any) -> Iterator[Any]:
    """Yields every equation of jaxpr, those of nested jaxprs (loop bodies, calls) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            sub = getattr(param, "jaxpr", param)  # a ClosedJaxpr's Jaxpr
            if hasattr(sub, "eqns"):
                yield from jaxpr_eqns(sub)
