"""Small-batch linear layers for the CPU: our own C kernel (small_batch_linear.c) for 1 to MAX_ROWS rows.

Why: a decode step at batch 1 to 4 reads every weight once and does ~2 flops per weight, so its linear layers
should take the time to stream the weights from memory. Measured on a 2-core AVX-512 CPU (SmolLM2-135M's 211
matrices, float32, one row): torch's F.linear 46-49 ms, oneDNN over weights packed once 30-34 ms, this kernel
18-19 ms (28 GB/s); with int8 weights and float32 activations 6.3 ms at one row, 23 ms at 8, 57 ms at 16. Above
MAX_ROWS rows oneDNN's GEMM does more flops per byte than these dot products, so the float32 layer hands larger
inputs to it (prepack.py).

    cpu_linears: small_batch     float32 linears: this kernel at <= MAX_ROWS rows, oneDNN packed above

The kernel is plain C (small_batch_linear.c), wrapped as the torch operators llm_infer::small_batch_linear and
llm_infer::small_batch_linear_int8 by a few lines of C++ (small_batch_ops.cpp): torch's dispatcher calls them
without Python, the profiler records them by name with their shapes, and torch.compile calls them from a compiled
graph. Both are compiled once per machine (`CC`, else gcc, with -O3 -march=native and OpenMP; `CXX`, else g++,
against this torch's headers: ~10 s) and cached under CACHE_DIR, the file name a hash of the sources, the flags,
the torch version and this CPU's flags. The kernel sums in another order than torch (vector lanes), so results
equal F.linear's up to float rounding. Without a compiler, or when the build fails, `unavailable_reason()` says
why, use_small_batch_kernels raises KernelUnavailable, and the model loader packs the layers for oneDNN instead
(model.load_model; env.json then records prepacked).
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

from . import compiler
from ..prepack import available as prepack_available
from ..prepack import pack_weight, packed_linear
from ..quantize import Int8WeightOnlyLinear

SOURCE = Path(__file__).with_name("small_batch_linear.c")  # the kernels, plain C
OPS_SOURCE = Path(__file__).with_name("small_batch_ops.cpp")  # their torch operators
MAX_ROWS = 4  # float32 rows up to which the kernel runs: above, oneDNN is faster (D2's linear-shape curve shows both)
INT8_MAX_ROWS = 16  # int8 rows up to which the kernel runs (its only rival with float32 activations is to
                    # de-quantise the weights per call, which pays only for a prompt's many rows)
C_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC",
           # vectorised sums without -ffast-math, whose start-up code would change the whole process's float mode
           "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]
CXX_FLAGS = ["-O2", "-std=c++20", "-fPIC", "-shared", "-fopenmp", "-w"]
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm-infer-baseline" / "kernels"


class KernelUnavailable(RuntimeError):
    """The kernel cannot be built or loaded here (no C or C++ compiler, a failed build)."""


def _cpu_flags() -> str:
    """This CPU's feature flags (/proc/cpuinfo), part of the cache key: -march=native builds for this CPU alone."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler(variable: str) -> str:
    """The compiler `variable` names (CC, CXX; kernels.compiler); KernelUnavailable when it is not on PATH."""
    name = compiler(variable)
    if shutil.which(name) is None:
        raise KernelUnavailable(f"no {'C' if variable == 'CC' else 'C++'} compiler {name!r} on PATH "
                                f"(set {variable}, or install gcc and g++)")
    return name


def _run(command: list[str]) -> None:
    """Run one compiler command; KernelUnavailable with the end of its error output when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise KernelUnavailable(f"{command[0]} could not build the small-batch kernel: {result.stderr.strip()[-400:]}")


def _build() -> Path:
    """Compile the kernel and its operators into one shared library under CACHE_DIR (once per sources, flags,
    torch and CPU); its path."""
    from torch.utils.cpp_extension import include_paths

    cc, cxx = _compiler("CC"), _compiler("CXX")
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    torch_lib = Path(torch.__file__).parent / "lib"
    key_parts = [SOURCE.read_text(), OPS_SOURCE.read_text(), cc, cxx, *C_FLAGS, *CXX_FLAGS, abi, torch.__version__,
                 _cpu_flags()]
    key = hashlib.sha256("\n".join(key_parts).encode()).hexdigest()[:16]
    cache = CACHE_DIR
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: the machine's temporary directory
        cache = Path(tempfile.gettempdir()) / "llm-infer-baseline-kernels"
        cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"small_batch-{key}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache) as staging:  # built aside, then renamed: processes may race
        kernels, built = Path(staging) / "small_batch_linear.o", Path(staging) / target.name
        _run([cc, *C_FLAGS, "-c", str(SOURCE), "-o", str(kernels)])
        _run([cxx, *CXX_FLAGS, abi, *[f"-I{path}" for path in include_paths()], str(OPS_SOURCE), str(kernels),
              f"-L{torch_lib}", "-lc10", "-ltorch_cpu", "-o", str(built)])
        os.replace(built, target)
    return target


def _output_shape(x: torch.Tensor, weight: torch.Tensor, *unused) -> torch.Tensor:
    """The operators' output without computing it (torch.compile traces them with it)."""
    return x.new_empty(x.shape[0], weight.shape[0], dtype=torch.float32)


@functools.cache
def library() -> ctypes.CDLL:
    """The kernel built (at the first call on a machine) and loaded: its torch operators registered (with their
    shape functions), the C functions reachable through the returned handle. KernelUnavailable when it cannot be."""
    try:
        path = _build()
        torch.ops.load_library(str(path))
        handle = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as error:
        raise KernelUnavailable(f"{type(error).__name__}: {error}") from error
    for name in ("small_batch_linear", "small_batch_linear_int8"):
        torch.library.register_fake(f"llm_infer::{name}")(_output_shape)
    return handle


@functools.cache
def unavailable_reason() -> str | None:
    """Why the kernel cannot run here, or None when it can (builds and loads it once)."""
    try:
        library()
    except KernelUnavailable as error:
        return str(error)
    return None


def available() -> bool:
    return unavailable_reason() is None


class SmallBatchLinear(nn.Module):
    """A float32 nn.Linear on the CPU: the C kernel at <= MAX_ROWS rows, oneDNN over a packed weight above (F.linear
    where oneDNN cannot pack). Same weight and bias tensors as the layer it replaces (a tied lm_head stays tied)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self._packed = pack_weight(linear.weight) if prepack_available(torch.float32) else None
        library()

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
        library()

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
    library()
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.device.type == "cpu" \
                    and child.weight.dtype == torch.float32:
                setattr(parent, name, SmallBatchInt8Linear(child) if int8_weights else SmallBatchLinear(child))
                replaced += 1
    return replaced
