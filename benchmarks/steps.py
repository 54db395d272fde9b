"""The two training steps `benchmarks.run` compares, on the same config, weights and batch.

mesh_t5: `steps.make_train_step` as `mesh-t5 train` jits it (state donated, Adafactor with T5's
settings from `optim.make_optimizer`, z-loss 1e-4, dropout from the config).
transformers: `T5ForConditionalGeneration` in train mode (the same dropout) with the same weights
(exported by `mesh_t5.hf.params_to_hf`), loss from `labels`, `loss.backward()` and
`torch.optim.Adafactor` (torch's Adafactor is T5's: factored second moments, decay -0.8, update
clipping d=1, step scaled by the parameter's RMS floored at 1e-3).
Batches are random tokens, no padding, every target weighted: [B, inputs] / [B, targets] int32.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mesh_t5.config import T5Config

LEARNING_RATE = 0.01


def load_average() -> str:
    """The 1, 5 and 15 minute load averages as /proc/loadavg gives them, e.g. "1.52 1.73 1.80"."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def alternate(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Times each fn `repeats` times, round-robin (a, b, c, a, b, c, ...): load drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def random_batch(config: T5Config, batch: int, inputs: int, targets: int, seed: int = 0) -> dict:
    """Returns a numpy batch with the T5 feature names: random ids in [2, vocab), all weights 1."""
    rng = np.random.default_rng(seed)
    decoder_targets = rng.integers(2, config.vocab_size, (batch, targets))
    decoder_inputs = np.concatenate([np.zeros((batch, 1), np.int64), decoder_targets[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": rng.integers(2, config.vocab_size, (batch, inputs)).astype(np.int32),
        "decoder_input_tokens": decoder_inputs.astype(np.int32),
        "decoder_target_tokens": decoder_targets.astype(np.int32),
        "decoder_loss_weights": np.ones((batch, targets), np.int32),
    }


class MeshStep:
    """mesh_t5's jitted train step over a fixed batch; each call runs one step (blocking)."""

    def __init__(self, config: T5Config, params: dict, batch: dict):
        import jax

        from mesh_t5 import optim, steps

        self._jax = jax
        optimizer = optim.make_optimizer()
        settings = steps.StepSettings(learning_rate=optim.constant_schedule(LEARNING_RATE))
        self._step = steps.make_train_step(config, optimizer, settings)
        device_params = jax.device_put(params)
        self._state = {
            "step": jax.numpy.zeros((), jax.numpy.int32),
            "params": device_params,
            "opt_state": steps.init_opt_state(device_params, optimizer),
        }
        self._batch = jax.device_put(batch)
        self.loss = float("nan")

    def compiled(self) -> Any:
        """The step compiled by XLA for this state and batch (for its cost and memory analyses)."""
        return self._step.lower(self._state, self._batch).compile()

    def __call__(self) -> None:
        self._state, metrics = self._step(self._state, self._batch)  # the old state is donated
        self.loss = float(metrics["loss"])  # blocks until the step is done


class HFStep:
    """transformers' T5 forward + backward + torch Adafactor over a fixed batch."""

    def __init__(self, config: T5Config, params: dict | None, batch: dict):
        import torch
        import transformers

        from benchmarks.decode_length import hf_model
        from mesh_t5 import hf

        self._torch = torch
        if params is None:  # its own random init: the memory worker never loads mesh_t5's weights
            self.model = transformers.T5ForConditionalGeneration(
                transformers.T5Config(**hf.config_to_hf(config))
            )
        else:
            self.model = hf_model(config, params)
        self.model.train()
        self._optimizer = torch.optim.Adafactor(self.model.parameters(), lr=LEARNING_RATE)
        self._inputs = {
            "input_ids": torch.from_numpy(batch["encoder_input_tokens"].astype(np.int64)),
            "decoder_input_ids": torch.from_numpy(batch["decoder_input_tokens"].astype(np.int64)),
            "labels": torch.from_numpy(batch["decoder_target_tokens"].astype(np.int64)),
        }
        self.loss = float("nan")

    def forward_flops(self) -> int:
        """Matmul FLOPs of one forward pass by torch.utils.flop_counter (no update)."""
        from torch.utils.flop_counter import FlopCounterMode

        with self._torch.no_grad(), FlopCounterMode(display=False) as counter:
            self.model(**self._inputs)
        return counter.get_total_flops()

    def __call__(self) -> None:
        self._optimizer.zero_grad(set_to_none=True)
        loss = self.model(**self._inputs).loss
        loss.backward()
        self._optimizer.step()
        self.loss = loss.item()


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB: VmHWM of /proc/self/status.

    Not getrusage's ru_maxrss: Linux keeps that high-water mark across exec, so a worker started
    from a large parent would report the parent's peak.
    """
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024  # kB


def memory_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs `spec["steps"]` steps of one framework alone; returns its step times and peak RSS.

    Only that framework is imported (mesh_t5's worker never imports torch, transformers' never
    imports JAX), so the peak is what a user's training process of that framework holds.
    """
    from mesh_t5.config import get_model_config

    config = get_model_config(spec["model"])
    batch = random_batch(config, spec["batch"], spec["inputs"], spec["targets"])
    if spec["framework"] == "mesh_t5":
        from mesh_t5 import network

        step: Any = MeshStep(config, network.init_params_numpy(config), batch)
    else:
        import torch

        torch.set_num_threads(spec["threads"])
        step = HFStep(config, None, batch)
    baseline = peak_rss_mb()
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"peak_rss_mb": peak_rss_mb(), "rss_before_steps_mb": baseline, "step_s": times}


def compile_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Returns the seconds to lower and compile mesh_t5's train step for each (model, layers) in spec.

    Abstract state and batch (ShapeDtypeStructs): nothing is allocated or run, so T5-base costs
    only its compile. Each config is new to the process, so no in-memory cache is hit.
    """
    import jax

    from mesh_t5 import optim, steps
    from mesh_t5.config import get_model_config

    optimizer = optim.make_optimizer()
    settings = steps.StepSettings(learning_rate=optim.constant_schedule(LEARNING_RATE))
    results = []
    for model, num_layers in spec["configs"]:
        config = get_model_config(model).replace(num_encoder_layers=num_layers, num_decoder_layers=num_layers)
        state = steps.abstract_state(config, optimizer)
        batch = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
            random_batch(config, spec["batch"], spec["inputs"], spec["targets"]),
        )
        step = steps.make_train_step(config, optimizer, settings)
        start = time.perf_counter()
        lowered = step.lower(state, batch)
        lowered_at = time.perf_counter()
        lowered.compile()
        done = time.perf_counter()
        results.append(
            {"model": model, "layers": num_layers, "trace_s": lowered_at - start, "compile_s": done - start}
        )
    return {"compile": results}


def one_core_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Times both training steps alternating, this process pinned to one core, torch on one thread.

    Pinned before JAX or torch load, so XLA's thread pool and torch's OpenMP see a single CPU.
    """
    import os
    import statistics

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import torch

    from mesh_t5 import network
    from mesh_t5.config import get_model_config

    torch.set_num_threads(1)
    config = get_model_config(spec["model"])
    params = network.init_params_numpy(config, seed=0)
    batch = random_batch(config, spec["batch"], spec["inputs"], spec["targets"])
    sides = {"mesh_t5": MeshStep(config, params, batch), "transformers": HFStep(config, params, batch)}
    for step in sides.values():
        step()  # compile / warm up
    times = alternate(sides, spec["repeats"])
    return {
        name: {"step_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts)}
        for name, ts in times.items()
    }
