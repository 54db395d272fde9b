"""The one native kernel: few-row float32 products for decoding on the CPU (few_rows.cc).

A decode step multiplies a few rows (the batch, or batch x beams) by every decoder weight, and on
the CPU that is bound by how fast the weights stream from memory. XLA's dots read them at about a
third of what the machine streams (few_rows.cc says what was measured), so decoding on one CPU
device multiplies by weights packed into panels (`PackedKernel`) through this kernel.

The library is compiled on first use from few_rows.cc with the C++ compiler ($CXX, else c++) and
the XLA FFI headers of the installed jaxlib, into $MESH_T5_CACHE_DIR (default
$XDG_CACHE_HOME/mesh_t5, else ~/.cache/mesh_t5), keyed by the source, the flags and jaxlib's
version; later runs load it. Where it cannot be used (not Linux x86-64 with AVX2 and FMA, no
compiler, a build error, or MESH_T5_NATIVE=0), `available()` is False, one warning line says why
when a build was attempted, and decoding keeps XLA's own dots: same results, slower.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import importlib.metadata
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("few_rows.cc")
TARGET = "mesh_t5_few_rows_matmul"
COLS = 8  # columns per panel (few_rows.cc's kCols)
# Rows up to which few_rows_matmul runs the kernel: a decode step's batch x beams. The t5-small
# step's products, chained (32-step loop, 2 cores, idle), kernel vs XLA's dot: 32 rows 29.0 vs
# 31.9 ms, 64 rows 66 vs 62, 128 rows 123 vs 133, 512 rows 445 vs 354.
MAX_ROWS = 64
FLAGS = ("-O3", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC", "-w")
BUILD_TIMEOUT_S = 600


def cache_dir() -> Path:
    if os.environ.get("MESH_T5_CACHE_DIR"):
        return Path(os.environ["MESH_T5_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mesh_t5"


def _cpu_supported() -> str | None:
    """None when this CPU runs the kernel; else why not."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"{platform.system()} {platform.machine()} (the kernel is for Linux x86-64)"
    try:
        flags = next(
            (line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("flags")),
            [],
        )  # fmt: skip
    except OSError as e:
        return f"cannot read /proc/cpuinfo ({e.strerror})"
    missing = [f for f in ("avx2", "fma") if f not in flags]
    return f"the CPU lacks {', '.join(missing)}" if missing else None


def library_path(compiler: str) -> Path:
    """Where the library built from this source, these flags, this compiler and this jaxlib lives."""
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(FLAGS).encode(),
        compiler.encode(),
        importlib.metadata.version("jaxlib").encode(),
    ):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"few_rows-{key.hexdigest()[:16]}.so"


def build(compiler: str) -> Path:
    """Returns the built library's path, compiling it first unless it is in the cache.

    Raises RuntimeError with a one-line reason. The compiler writes a temporary file in the cache
    directory that is renamed into place, so concurrent first uses never load a partial library.
    """
    path = library_path(compiler)
    if path.exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise RuntimeError(f"cannot write to the cache directory {path.parent} ({e.strerror})") from None
    cmd = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if proc.returncode != 0:
            errors = [
                line for line in proc.stderr.splitlines() if "error" in line
            ] or proc.stderr.splitlines()
            raise RuntimeError(f"{compiler} failed: {errors[0] if errors else f'exit {proc.returncode}'}")
        os.replace(tmp, path)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{compiler} took over {BUILD_TIMEOUT_S} s") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@functools.cache
def available() -> bool:
    """Whether the kernel is built, loaded and registered with XLA (built now if need be)."""
    if os.environ.get("MESH_T5_NATIVE", "1") == "0":
        return False
    if (why := _cpu_supported()) is not None:
        log.info("mesh_t5 decodes with XLA's own dots: %s", why)
        return False
    compiler = shutil.which(os.environ.get("CXX") or "c++")
    if compiler is None:
        log.warning(
            "mesh_t5: no C++ compiler (set CXX or install g++) to build its decoding kernel; "
            "decoding on the CPU uses XLA's own dots (the same tokens, slower)"
        )
        return False
    try:
        lib = ctypes.CDLL(str(build(compiler)))
    except (RuntimeError, OSError) as e:
        log.warning(
            "mesh_t5: its decoding kernel is not used (%s); decoding on the CPU uses XLA's own dots", e
        )
        return False
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.MeshT5FewRowsMatmul), platform="cpu")
    return True


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class PackedKernel:
    """A float32 weight [C1..Cc, O1..] laid out for the kernel: panels [ceil(O/8), C, 8] of the
    [C, O] matrix (C = prod(Ci), O = prod(Oi)), zero past O. `layers.dense` multiplies by it through
    `few_rows_matmul`; `shape` and `contract` are the weight's own, so dense's output shapes hold."""

    panels: jax.Array
    shape: tuple[int, ...]
    contract: int

    def tree_flatten(self) -> tuple[tuple[jax.Array], tuple[tuple[int, ...], int]]:
        return (self.panels,), (self.shape, self.contract)

    @classmethod
    def tree_unflatten(cls, aux: tuple[tuple[int, ...], int], children: tuple[jax.Array]) -> PackedKernel:
        return cls(children[0], *aux)

    @property
    def dtype(self) -> Any:
        return self.panels.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def astype(self, dtype: Any) -> PackedKernel:
        if jnp.dtype(dtype) != jnp.float32:
            raise TypeError(f"a PackedKernel is float32 and cannot be used as {jnp.dtype(dtype)}")
        return self


def pack(kernel: jax.Array, contract: int = 1) -> PackedKernel:
    """Returns kernel [C1..Cc, O1..] (cast to float32) as a PackedKernel. Traceable."""
    c = math.prod(kernel.shape[:contract])
    o = math.prod(kernel.shape[contract:])
    p = -(-o // COLS)
    matrix = jnp.pad(kernel.astype(jnp.float32).reshape(c, o), ((0, 0), (0, p * COLS - o)))
    return PackedKernel(jnp.transpose(matrix.reshape(c, p, COLS), (1, 0, 2)), tuple(kernel.shape), contract)


def pack_transposed(matrix: jax.Array) -> PackedKernel:
    """Returns pack(matrix.T) for matrix [O, C] (a tied embedding [V, D]), read in one pass: each
    panel is a [8, C] block of rows transposed. Traceable."""
    o, c = matrix.shape
    p = -(-o // COLS)
    rows = jnp.pad(matrix.astype(jnp.float32), ((0, p * COLS - o), (0, 0)))
    return PackedKernel(jnp.swapaxes(rows.reshape(p, COLS, c), 1, 2), (c, o), 1)


def matrix(kernel: PackedKernel) -> jax.Array:
    """The packed weight as the [C, O] matrix it was packed from. Traceable."""
    p, c, _ = kernel.panels.shape
    o = math.prod(kernel.shape[kernel.contract :])
    return jnp.transpose(kernel.panels, (1, 0, 2)).reshape(c, p * COLS)[:, :o]


def few_rows_matmul(x: jax.Array, kernel: PackedKernel) -> jax.Array:
    """Returns x [R, C] (float32) times the packed [C, O] matrix: [R, O] float32, by the native kernel
    for up to MAX_ROWS rows; beyond (a prompt run through the decoder at once), by XLA's dot of the
    unpacked matrix, as the kernel reads every row once per panel and many rows stop fitting in cache."""
    o = math.prod(kernel.shape[kernel.contract :])
    if x.dtype != jnp.float32:
        raise TypeError(f"few_rows_matmul takes float32 rows, got {x.dtype}")
    if x.shape[0] > MAX_ROWS:
        return jnp.dot(x, matrix(kernel), preferred_element_type=jnp.float32)
    if not available():  # also what registers the kernel with XLA
        raise RuntimeError("the native kernel is not available here; see mesh_t5.native")
    out = jax.ShapeDtypeStruct((x.shape[0], o), jnp.float32)
    return jax.ffi.ffi_call(TARGET, out)(x, kernel.panels)


def unpack(kernel: PackedKernel) -> np.ndarray:
    """The weight as it was packed (for tests and inspection)."""
    return np.asarray(matrix(kernel)).reshape(kernel.shape)
