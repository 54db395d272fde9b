"""Multi-host: 2 CPU processes joined by jax.distributed on localhost train like one process;
distributed.initialize's settings; the launch scripts' --dry_run commands."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mesh_t5 import distributed

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "tests" / "multidevice" / "multiprocess_train.py"
SCRIPTS = ROOT / "tpu_scripts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_T5_", "XLA_FLAGS"))}
    return {**env, "JAX_PLATFORMS": "cpu"}


def test_two_processes_train_like_one(tmp_path):
    port = _free_port()
    multi_out, single_out = tmp_path / "multi.json", tmp_path / "single.json"
    procs = []
    for process_id in range(2):
        env = {
            **_clean_env(),
            "MESH_T5_COORDINATOR_ADDRESS": f"localhost:{port}",
            "MESH_T5_NUM_PROCESSES": "2",
            "MESH_T5_PROCESS_ID": str(process_id),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(HELPER), str(multi_out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        logs = [p.communicate(timeout=900)[0].decode(errors="replace") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    single = subprocess.run(
        [sys.executable, str(HELPER), str(single_out)],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert single.returncode == 0, single.stderr[-3000:]

    multi, ref = json.loads(multi_out.read_text()), json.loads(single_out.read_text())
    assert multi["process_count"] == 2 and multi["device_count"] == 4 and ref["process_count"] == 1
    assert multi["batch_shard"] == [0, 2]  # process 0 fed the first half of each global batch
    np.testing.assert_allclose(multi["losses"], ref["losses"], atol=1e-5, rtol=0)
    assert len(set(ref["losses"])) == 3  # three different batches, three different losses
    multi_params, ref_params = np.load(f"{multi_out}.npz"), np.load(f"{single_out}.npz")
    assert sorted(multi_params.files) == sorted(ref_params.files)
    for name in ref_params.files:
        np.testing.assert_allclose(multi_params[name], ref_params[name], atol=1e-5, rtol=0, err_msg=name)


# ------------------------------------------------------------------ distributed.initialize settings


@pytest.fixture
def no_cluster_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("MESH_T5_", "SLURM_", "OMPI_", "TPU_WORKER")):
            monkeypatch.delenv(name)
    monkeypatch.setattr(distributed, "_initialized", False)


def test_single_process_does_nothing(no_cluster_env):
    assert distributed.initialize() is False
    assert distributed.initialize(coordinator_address="localhost:1", num_processes=1, process_id=0) is False


def test_incomplete_or_bad_settings_are_one_line(no_cluster_env, monkeypatch):
    with pytest.raises(distributed.DistributedError, match="needs all of coordinator_address") as e:
        distributed.initialize(num_processes=2)
    assert "\n" not in str(e.value)
    with pytest.raises(distributed.DistributedError, match=r"process_id=2 is not in \[0, num_processes=2\)"):
        distributed.initialize(coordinator_address="localhost:1", num_processes=2, process_id=2)
    monkeypatch.setenv("MESH_T5_NUM_PROCESSES", "two")
    with pytest.raises(distributed.DistributedError, match="MESH_T5_NUM_PROCESSES='two' is not an integer"):
        distributed.initialize()
    monkeypatch.delenv("MESH_T5_NUM_PROCESSES")
    monkeypatch.setenv("MESH_T5_DISTRIBUTED", "yes")
    with pytest.raises(distributed.DistributedError, match="MESH_T5_DISTRIBUTED='yes' is unknown"):
        distributed.initialize()
    monkeypatch.setenv("MESH_T5_DISTRIBUTED", "off")
    monkeypatch.setenv("SLURM_NTASKS", "4")  # would auto-detect, but "off" wins
    assert distributed.initialize() is False


def test_cluster_detection(no_cluster_env, monkeypatch):
    assert not distributed._cluster_detected()
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert not distributed._cluster_detected()
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert distributed._cluster_detected()
    monkeypatch.delenv("SLURM_NTASKS")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.2,10.0.0.3")
    assert distributed._cluster_detected()


# --------------------------------------------------------------------------- launch scripts


def _script(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TPU_NAME", "ZONE", "PROJECT", "DRY_RUN")}
    return subprocess.run(["bash", *map(str, args)], capture_output=True, text=True, env=env, timeout=60)


def test_tpu_scripts_dry_run_print_the_gcloud_commands():
    common = ["--name=t5-pod", "--zone=europe-west4-a", "--dry_run"]
    out = _script(SCRIPTS / "create_tpu_vm.sh", *common, "--accelerator_type=v3-512")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "+ gcloud compute tpus tpu-vm create t5-pod --accelerator-type=v3-512 "
        "--version=tpu-ubuntu2204-base --zone=europe-west4-a"
    )
    out = _script(SCRIPTS / "install.sh", *common)
    assert out.returncode == 0 and "ssh t5-pod --worker=all" in out.stdout and "pip\\ install" in out.stdout
    out = _script(SCRIPTS / "launch.sh", *common, "--", "train", "--gin_file=models/t5_11B.gin")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("+ gcloud compute tpus tpu-vm ssh t5-pod --worker=all")
    assert "MESH_T5_DISTRIBUTED=auto\\ mesh-t5\\ train\\ --gin_file=models/t5_11B.gin" in out.stdout
    out = _script(SCRIPTS / "delete_tpu_vm.sh", *common)
    assert out.stdout.strip() == "+ gcloud compute tpus tpu-vm delete t5-pod --quiet --zone=europe-west4-a"


def test_tpu_scripts_errors_are_one_line():
    out = _script(SCRIPTS / "launch.sh", "--name=t5-pod", "--dry_run", "--", "train")
    assert out.returncode == 2 and out.stderr.strip() == (
        "launch.sh: error: --zone is not set; pass --zone=VALUE (or set ZONE)"
    )
    out = _script(SCRIPTS / "launch.sh", "--name=x", "--zone=z", "--dry_run", "--", "plan")
    assert out.returncode == 2 and "not one to run on every worker" in out.stderr
    out = _script(SCRIPTS / "create_tpu_vm.sh", "--name=x", "--zone=z", "--acelerator_type=v3-8")
    assert out.returncode == 2 and "unknown flag --acelerator_type=v3-8" in out.stderr


def test_gpu_and_local_launchers_dry_run():
    out = _script(SCRIPTS / "slurm_gpu.sbatch", "--dry_run", "train", "--gin_file=models/t5_3B.gin")
    assert out.returncode == 0, out.stderr
    assert "MESH_T5_COORDINATOR_ADDRESS=localhost:12355 MESH_T5_NUM_PROCESSES=2" in out.stdout
    assert (
        "srun --nodes=2 --ntasks=2 --ntasks-per-node=1" in out.stdout
        and "--gin_file=models/t5_3B.gin" in out.stdout
    )
    out = _script(SCRIPTS / "launch_local.sh", "--num_processes=3", "--port=2222", "--dry_run", "--", "train")
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and len(lines) == 3
    assert all(f"MESH_T5_PROCESS_ID={i} mesh-t5 train" in line for i, line in enumerate(lines))
    assert all("MESH_T5_COORDINATOR_ADDRESS=localhost:2222" in line for line in lines)
