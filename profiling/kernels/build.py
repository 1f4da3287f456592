"""Builds and loads our C kernels: one shared library, compiled once per machine and cached.

    small_batch_linear.c   linear layers at a few rows (small_batch.py)
    paged_attention.c      decode attention read in place from a paged KV pool (serving/engine/paged_runner.py)
    decoder_layer.c        a whole decoder layer's decode step in one call (fused_decoder.py)
    kernels.h              the functions they share with one another and with ops.cpp
    ops.cpp                both as torch operators (llm_infer::...), called by torch's dispatcher without Python

The C files are compiled by `CC` (else gcc) with -O3 -march=native and OpenMP, ops.cpp by `CXX` (else g++) against
this torch's headers: ~15 s. The library is cached under CACHE_DIR, its file name a hash of the sources, the flags,
the torch version and this CPU's flags. `library()` builds (at the first call on a machine) and loads it, and
registers the operators' shape functions for torch.compile; without a compiler, or when the build fails, it raises
KernelUnavailable and `unavailable_reason()` says why.
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

from . import compiler

HERE = Path(__file__).parent
C_SOURCES = [HERE / "small_batch_linear.c", HERE / "paged_attention.c",  # the kernels, plain C
             HERE / "decoder_layer.c"]
OPS_SOURCE = HERE / "ops.cpp"  # their torch operators
HEADER = HERE / "kernels.h"  # the functions the C files and ops.cpp share
C_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC",
           # vectorised sums without -ffast-math, whose start-up code would change the whole process's float mode
           "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]
CXX_FLAGS = ["-O2", "-std=c++20", "-fPIC", "-shared", "-fopenmp", "-w"]
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm-infer-baseline" / "kernels"


class KernelUnavailable(RuntimeError):
    """The kernels cannot be built or loaded here (no C or C++ compiler, a failed build)."""


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
        raise KernelUnavailable(f"{command[0]} could not build our CPU kernels: {result.stderr.strip()[-400:]}")


def _build() -> Path:
    """Compile the kernels and their operators into one shared library under CACHE_DIR (once per sources, flags,
    torch and CPU); its path."""
    from torch.utils.cpp_extension import include_paths

    cc, cxx = _compiler("CC"), _compiler("CXX")
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    torch_lib = Path(torch.__file__).parent / "lib"
    key_parts = [*(source.read_text() for source in [*C_SOURCES, OPS_SOURCE, HEADER]), cc, cxx, *C_FLAGS,
                 *CXX_FLAGS, abi, torch.__version__, _cpu_flags()]
    key = hashlib.sha256("\n".join(key_parts).encode()).hexdigest()[:16]
    cache = CACHE_DIR
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: the machine's temporary directory
        cache = Path(tempfile.gettempdir()) / "llm-infer-baseline-kernels"
        cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"kernels-{key}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache) as staging:  # built aside, then renamed: processes may race
        objects = [Path(staging) / f"{source.stem}.o" for source in C_SOURCES]
        for source, obj in zip(C_SOURCES, objects):
            _run([cc, *C_FLAGS, f"-I{HERE}", "-c", str(source), "-o", str(obj)])
        built = Path(staging) / target.name
        _run([cxx, *CXX_FLAGS, abi, f"-I{HERE}", *[f"-I{path}" for path in include_paths()], str(OPS_SOURCE),
              *map(str, objects), f"-L{torch_lib}", "-lc10", "-ltorch_cpu", "-o", str(built)])
        os.replace(built, target)
    return target


def _linear_shape(x: torch.Tensor, weight: torch.Tensor, *unused) -> torch.Tensor:
    """The linear operators' output without computing it (torch.compile traces them with it)."""
    return x.new_empty(x.shape[0], weight.shape[0], dtype=torch.float32)


def _panels_shape(x: torch.Tensor, panels: torch.Tensor, *unused) -> torch.Tensor:
    """The panel GEMM's output: (rows, n / W panels x W)."""
    return x.new_empty(x.shape[0], panels.shape[0] * panels.shape[2], dtype=torch.float32)


def _attention_shape(query: torch.Tensor, *unused) -> torch.Tensor:
    """The paged decode attention's output without computing it."""
    return torch.empty_like(query)


@functools.cache
def library() -> ctypes.CDLL:
    """The kernels built (at the first call on a machine) and loaded: their torch operators registered (with their
    shape functions), the C functions reachable through the returned handle. KernelUnavailable when they cannot be."""
    try:
        path = _build()
        torch.ops.load_library(str(path))
        handle = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as error:
        raise KernelUnavailable(f"{type(error).__name__}: {error}") from error
    for name in ("small_batch_linear", "small_batch_linear_int8", "small_batch_linear_w8a8", "small_batch_linear_int4",
                 "small_batch_linear_w4a8"):
        torch.library.register_fake(f"llm_infer::{name}")(_linear_shape)
    torch.library.register_fake("llm_infer::small_batch_linear_panels")(_panels_shape)
    torch.library.register_fake("llm_infer::paged_decode_attention")(_attention_shape)
    return handle


@functools.cache
def unavailable_reason() -> str | None:
    """Why the kernels cannot run here, or None when they can (builds and loads them once)."""
    try:
        library()
    except KernelUnavailable as error:
        return str(error)
    return None


def available() -> bool:
    return unavailable_reason() is None
