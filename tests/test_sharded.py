"""Sharded = single-device on a fake 8-device CPU mesh: loss, gradients, a train step, greedy decodes,
parameter shardings, and a checkpoint saved on data:2,model:4 restored onto data:8.

All mesh cases run in ONE subprocess (tests/multidevice/mesh_parity.py) so that this pytest
process keeps its single device and the compile cost is paid once.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HELPER = Path(__file__).parent / "multidevice" / "mesh_parity.py"
MESHES = ("data:8", "model:8", "data:2,model:4", "data:4,model:2")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mesh_parity")
    out = tmp / "results.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # the helper sets its own device count before importing jax
    proc = subprocess.run(
        [sys.executable, str(HELPER), str(out), str(tmp)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("mesh", MESHES)
def test_sharded_run_matches_single_device(results, mesh):
    got = results["meshes"][mesh]
    assert got["loss"] <= TOLERANCE, got["loss"]
    assert got["grads"] <= TOLERANCE, got["grads"]
    assert got["step_loss"] <= TOLERANCE and got["params_after"] <= TOLERANCE
    assert got["tokens_equal"], mesh
    assert got["scores"] <= TOLERANCE, got["scores"]


def test_the_reference_decodes_are_not_trivial(results):
    # Parity of decodes means little if every row decodes the same token or stops at once.
    tokens = results["reference"]["tokens"]
    assert len({tuple(row) for row in tokens}) > 4 and all(len(row) == 6 for row in tokens)
    assert 5.0 < results["reference"]["loss"] < 7.5  # near ln(256) = 5.55 at init


@pytest.mark.parametrize("mesh", ("model:8", "data:2,model:4", "data:4,model:2"))
def test_parameters_are_sharded_by_the_rules(results, mesh):
    params = results["meshes"][mesh]["specs"]["params"]
    for stack in ("encoder", "decoder"):
        layers = f"['{stack}']['layers']"
        assert params[f"{layers}['mlp']['wi_0']"] == "P(None, None, 'model')"  # [L, embed, d_ff]: d_ff
        assert params[f"{layers}['mlp']['wo']"] == "P(None, 'model', None)"  # [L, d_ff, embed]
        attention = "attention" if stack == "encoder" else "self_attention"
        assert params[f"{layers}['{attention}']['query']"] == "P(None, None, 'model', None)"  # heads
        assert params[f"{layers}['{attention}']['out']"] == "P(None, 'model', None, None)"
        assert params[f"{layers}['mlp_norm']['scale']"] == "P(None, None)"
        assert params[f"['{stack}']['relpos_bias']"] == "P(None, 'model')"
    assert params["['token_embedder']['embedding']"] == "P('model', None)"  # [vocab, embed]: vocab
    assert params["['logits_dense']['kernel']"] == "P(None, 'model')"
    # Adafactor's factored slots of wi_0 [L, embed, d_ff]: v_row [L, embed] whole, v_col [L, d_ff] split.
    slots = results["meshes"][mesh]["specs"]["opt_state"]
    assert slots["[0][0].v_row['encoder']['layers']['mlp']['wi_0']"] == "P(None, None)"
    assert slots["[0][0].v_col['encoder']['layers']['mlp']['wi_0']"] == "P(None, 'model')"


def test_data_parallel_replicates_parameters(results):
    params = results["meshes"]["data:8"]["specs"]["params"]
    assert params and all("'" not in spec for spec in params.values()), params  # no mesh axis named


def test_params_born_sharded_equal_single_device_init(results):
    assert results["init_sharded_diff"] == 0.0


def test_checkpoint_saved_on_one_mesh_restores_on_another(results):
    checkpoint = results["checkpoint"]
    assert checkpoint["wi_spec_saved"] == "P(None, None, 'model')"
    assert checkpoint["restored_mesh"] == {"data": 8}
    assert checkpoint["wi_spec_restored"] == "P(None, None, None)"
    assert checkpoint["max_diff"] == 0.0 and checkpoint["meta"] == {"mesh": "data:2,model:4"}
