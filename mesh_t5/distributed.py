"""Multi-host start-up: one Python process per host (multi-controller JAX), joined by jax.distributed.

Every host runs the same command. Process 0 also serves as the coordinator; the others
connect to it. The coordinates come from, in order:

1. arguments / flags: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`;
2. environment: `MESH_T5_COORDINATOR_ADDRESS`, `MESH_T5_NUM_PROCESSES`, `MESH_T5_PROCESS_ID`
   (and optionally `MESH_T5_LOCAL_DEVICE_IDS="0,1"`);
3. a cluster JAX detects by itself (a Cloud TPU pod slice, SLURM with several tasks, Open MPI):
   `jax.distributed.initialize()` with no arguments. `MESH_T5_DISTRIBUTED=auto` forces this
   (tpu_scripts/launch.sh sets it: on a TPU VM the worker list comes from the metadata server);
   `MESH_T5_DISTRIBUTED=off` disables multi-host start-up altogether.

With none of these (one process), nothing happens. Each process then feeds its own slice
of the global batch (`layouts.process_batch_shard`) and writes only its own checkpoint shards.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from typing import Any

from mesh_t5.errors import UserError

ENV_COORDINATOR = "MESH_T5_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "MESH_T5_NUM_PROCESSES"
ENV_PROCESS_ID = "MESH_T5_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "MESH_T5_LOCAL_DEVICE_IDS"
ENV_MODE = "MESH_T5_DISTRIBUTED"  # "auto" | "off" | unset

_initialized = False


class DistributedError(UserError):
    """Multi-host settings are inconsistent; the message is one line naming what to change."""


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.lstrip("-").isdigit():
        raise DistributedError(f"{name}={value!r} is not an integer")
    return int(value)


def _cluster_detected() -> bool:
    """True when JAX can find the other processes on its own (TPU pod slice, SLURM, Open MPI)."""
    tpu_hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([h for h in tpu_hosts.split(",") if h.strip()]) > 1:
        return True
    if int(os.environ.get("SLURM_NTASKS", os.environ.get("SLURM_STEP_NUM_TASKS", "1")) or 1) > 1:
        return True
    return int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
) -> bool:
    """Joins this process to a multi-process JAX run; returns True if it did (False: single process).

    Must run before anything touches a JAX device. Calling it again is a no-op.
    """
    global _initialized
    if _initialized:
        return True
    mode = os.environ.get(ENV_MODE, "").strip().lower()
    if mode not in ("", "auto", "off"):
        raise DistributedError(f"{ENV_MODE}={mode!r} is unknown; use auto, off or leave it unset")
    if mode == "off":
        return False
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if local_device_ids is None and os.environ.get(ENV_LOCAL_DEVICE_IDS):
        local_device_ids = [int(x) for x in os.environ[ENV_LOCAL_DEVICE_IDS].split(",") if x.strip()]

    import jax  # after reading the settings: importing jax is fine, touching devices is not

    explicit = coordinator_address is not None or num_processes is not None or process_id is not None
    if explicit:
        if coordinator_address is None or num_processes is None or process_id is None:
            raise DistributedError(
                "multi-host launch needs all of coordinator_address, num_processes and process_id "
                f"(got {coordinator_address}, {num_processes}, {process_id}); "
                f"set --coordinator_address/--num_processes/--process_id or {ENV_COORDINATOR} etc."
            )
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise DistributedError(
                f"process_id={process_id} is not in [0, num_processes={num_processes}); "
                "number the hosts 0..N-1"
            )
        if num_processes == 1:
            return False
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            local_device_ids=local_device_ids,
        )
    elif mode == "auto" or _cluster_detected():
        jax.distributed.initialize(local_device_ids=local_device_ids)
    else:
        return False
    _initialized = True
    logging.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Adds --coordinator_address, --num_processes, --process_id to a command's parser."""
    group = parser.add_argument_group("multi-host (see tpu_scripts/; env MESH_T5_* works too)")
    group.add_argument("--coordinator_address", default=None, help="HOST:PORT of process 0")
    group.add_argument("--num_processes", type=int, default=None, help="number of processes (hosts)")
    group.add_argument("--process_id", type=int, default=None, help="this process's index, 0..N-1")


def initialize_from_args(args: Any) -> bool:
    """`initialize` with the values of `add_flags`' flags (missing attributes count as unset)."""
    return initialize(
        coordinator_address=getattr(args, "coordinator_address", None),
        num_processes=getattr(args, "num_processes", None),
        process_id=getattr(args, "process_id", None),
    )


def is_primary() -> bool:
    """True on the process that should write logs, summaries and non-sharded files."""
    import jax

    return jax.process_index() == 0


def shutdown() -> None:
    """Leaves the multi-process run (a no-op for a single process)."""
    global _initialized
    if _initialized:
        import jax

        jax.distributed.shutdown()
        _initialized = False
