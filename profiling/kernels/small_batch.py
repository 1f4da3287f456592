"""Small-batch linear layers for the CPU: our own C kernel (small_batch_linear.c) for 1 to MAX_ROWS rows.

Why: a decode step at batch 1 to 4 reads every weight once and does ~2 flops per weight, so its linear layers
should take the time to stream the weights from memory. Measured on a 2-core AVX-512 CPU (SmolLM2-135M's 211
matrices, float32, one row): torch's F.linear 46-49 ms, oneDNN over weights packed once 30-34 ms, this kernel
18-19 ms (28 GB/s); with int8 weights and float32 activations 6.3 ms at one row, 23 ms at 8, 57 ms at 16. Above
MAX_ROWS rows oneDNN's GEMM does more flops per byte than these dot products, so the float32 layer hands larger
inputs to it (prepack.py).

    cpu_linears: small_batch     float32 linears: this kernel at <= MAX_ROWS rows, oneDNN packed above

The kernel is plain C, compiled once per machine by the C compiler (`CC`, else gcc) with -O3 -march=native and
OpenMP, and cached under CACHE_DIR (the file name holds a hash of the source, the flags and this CPU's flags).
It sums in another order than torch (vector lanes), so results equal F.linear's up to float rounding. Without a
compiler, `unavailable_reason()` says why and the layers are not replaced.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..prepack import available as prepack_available
from ..prepack import pack_weight, packed_linear
from ..quantize import Int8WeightOnlyLinear

SOURCE = Path(__file__).with_name("small_batch_linear.c")
MAX_ROWS = 4  # float32 rows up to which the kernel runs: above, oneDNN is faster (D2's linear-shape curve shows both)
INT8_MAX_ROWS = 16  # int8 rows up to which the kernel runs (its only rival with float32 activations is to
                    # de-quantise the weights per call, which pays only for a prompt's many rows)
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC",
         # vectorised sums without -ffast-math, whose start-up code would change the whole process's float mode
         "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm-infer-baseline" / "kernels"


class KernelUnavailable(RuntimeError):
    """The kernel cannot be built or loaded here (no C compiler, a failed build)."""


def _cpu_flags() -> str:
    """This CPU's feature flags (/proc/cpuinfo), part of the cache key: -march=native builds for this CPU alone."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(compiler: str) -> Path:
    """Compile SOURCE into CACHE_DIR (once per source, flags and CPU); the path of the shared library."""
    key = hashlib.sha256("\n".join([SOURCE.read_text(), compiler, *FLAGS, _cpu_flags()]).encode()).hexdigest()[:16]
    target = CACHE_DIR / f"small_batch_linear-{key}.so"
    if target.exists():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as staging:  # built aside, then renamed: processes may race
        built = Path(staging) / target.name
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built)], capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            raise KernelUnavailable(f"{compiler} could not build {SOURCE.name}: {result.stderr.strip()[-400:]}")
        os.replace(built, target)
    return target


@functools.cache
def library() -> ctypes.CDLL:
    """The compiled kernel, loaded (built at the first call on a machine); KernelUnavailable when it cannot be."""
    compiler = os.environ.get("CC", "gcc")
    if shutil.which(compiler) is None:
        raise KernelUnavailable(f"no C compiler {compiler!r} on PATH (set CC, or install gcc)")
    try:
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.SubprocessError) as error:
        raise KernelUnavailable(f"{type(error).__name__}: {error}") from error
    pointer, size = ctypes.c_void_p, ctypes.c_long
    lib.linear_f32.argtypes = [pointer, pointer, pointer, pointer, size, size, size]
    lib.linear_int8.argtypes = [pointer, pointer, pointer, pointer, pointer, size, size, size]
    lib.linear_f32.restype = lib.linear_int8.restype = None
    return lib


@functools.cache
def unavailable_reason() -> str | None:
    """Why the kernel cannot run here, or None when it can (builds it once and registers its operators)."""
    try:
        ops()
    except KernelUnavailable as error:
        return str(error)
    return None


def available() -> bool:
    return unavailable_reason() is None


def _pointer(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _linear_f32(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (rows, k) float32 @ weight (n, k).T + bias (n): the C kernel, (rows, n) float32."""
    x = x.contiguous()
    out = torch.empty(x.shape[0], weight.shape[0], dtype=torch.float32)
    library().linear_f32(x.data_ptr(), weight.data_ptr(), _pointer(bias), out.data_ptr(), x.shape[0],
                         weight.shape[0], weight.shape[1])
    return out


def _linear_int8(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None):
    """x (rows, k) float32 @ (weight (n, k) int8 * scales (n)[:, None]).T + bias (n): the C kernel, (rows, n)."""
    x = x.contiguous()
    out = torch.empty(x.shape[0], weight.shape[0], dtype=torch.float32)
    library().linear_int8(x.data_ptr(), weight.data_ptr(), scales.data_ptr(), _pointer(bias), out.data_ptr(),
                          x.shape[0], weight.shape[0], weight.shape[1])
    return out


def _output_shape(x: torch.Tensor, weight: torch.Tensor, *unused) -> torch.Tensor:
    """The ops' output without computing it (torch.compile traces them with these)."""
    return x.new_empty(x.shape[0], weight.shape[0], dtype=torch.float32)


@functools.cache
def ops() -> torch.library.Library:
    """The kernels as torch operators, llm_infer::small_batch_linear(x, weight, bias) and
    llm_infer::small_batch_linear_int8(x, weight, scales, bias): the profiler then records each call under that
    name, with its shapes, and torch.compile calls them from a compiled graph. KernelUnavailable when the kernel
    cannot be built here. (The registration lives as long as the returned object: it is cached.)"""
    library()
    registry = torch.library.Library("llm_infer", "DEF")
    registry.define("small_batch_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor")
    registry.define("small_batch_linear_int8(Tensor x, Tensor weight, Tensor scales, Tensor? bias) -> Tensor")
    for name, kernel in (("small_batch_linear", _linear_f32), ("small_batch_linear_int8", _linear_int8)):
        registry.impl(name, kernel, "CPU")
        registry.impl(name, _output_shape, "Meta")
    return registry


class SmallBatchLinear(nn.Module):
    """A float32 nn.Linear on the CPU: the C kernel at <= MAX_ROWS rows, oneDNN over a packed weight above (F.linear
    where oneDNN cannot pack). Same weight and bias tensors as the layer it replaces (a tied lm_head stays tied)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self._packed = pack_weight(linear.weight) if prepack_available(torch.float32) else None
        ops()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.shape[0] > MAX_ROWS or x.dtype != torch.float32:
            if self._packed is not None:
                return packed_linear(x, self._packed, self.bias)
            return F.linear(x, self.weight, self.bias)
        out = torch.ops.llm_infer.small_batch_linear(flat, self.weight, self.bias)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
               f"small-batch kernel at <= {MAX_ROWS} rows"


class SmallBatchInt8Linear(Int8WeightOnlyLinear):
    """int8 weights with one scale per output channel (quantize.py's layout), float32 activations: the C kernel at
    <= INT8_MAX_ROWS rows; above, the weight de-quantised per call and F.linear (torch's own int8 kernel is slow with
    float32 activations)."""

    def __init__(self, linear: nn.Linear):
        super().__init__(linear, torch.float32)
        ops()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.shape[0] > INT8_MAX_ROWS or x.dtype != torch.float32:
            weight = (self.weight.float() * self.scales.float()[:, None]).to(x.dtype)
            return F.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))
        out = torch.ops.llm_infer.small_batch_linear_int8(flat, self.weight, self.scales, self.bias)
        return out.view(*x.shape[:-1], self.out_features)


def use_small_batch_kernels(model: nn.Module, int8_weights: bool = False) -> int:
    """Replace every float32 CPU nn.Linear of `model` (lm_head included) by a SmallBatchLinear, or, with
    `int8_weights`, by a SmallBatchInt8Linear; in place. Returns how many were replaced; KernelUnavailable when the
    kernel cannot be built here."""
    ops()
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.device.type == "cpu" \
                    and child.weight.dtype == torch.float32:
                setattr(parent, name, SmallBatchInt8Linear(child) if int8_weights else SmallBatchLinear(child))
                replaced += 1
    return replaced
