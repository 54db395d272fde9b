"""The training loop on a fake 8-device mesh gives the single-layout losses (slow: a subprocess
compiles two layouts; the layouts tests cover the train step's parity on meshes by default)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "train_on_meshes.py"


@pytest.mark.slow
def test_loop_on_meshes_matches(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    a, b = out["data:8"], out["data:2,model:4"]
    assert a["losses"][-1] < a["losses"][0]
    for x, y in zip(a["losses"], b["losses"], strict=True):
        assert x == pytest.approx(y, rel=1e-5)
    assert a["eval"]["loss"] == pytest.approx(b["eval"]["loss"], rel=1e-5)
