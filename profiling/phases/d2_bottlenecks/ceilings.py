"""Device ceilings measured on this machine: the roofs of the D2 roofline.

Each ceiling times one large, simple operation after a warm-up, `repeats` times, synchronising the device at every
timed boundary (timing.sync), and keeps every repeat's seconds so the median and the spread can be reported:

    memory bandwidth   dst.copy_(src) on a buffer much larger than the caches; bytes moved = read + written
    matmul FLOP/s      a square (n x n) @ (n x n) product in the dtype in use, by the faster of torch.mm and oneDNN (CPU)
    matrix-vector      a (n x n) @ (n) product: what a decode step's linear layers do at batch 1; 2 n^2 FLOPs,
                       n^2 + 2n elements moved
    tiny operator      the host time of one 1-element add: dispatch cost on the CPU, dispatch + empty kernel
                       launch on CUDA (launched back to back, synchronised once at the end)
    host <-> device    (CUDA only) pinned host buffer -> device and back

Units: seconds, bytes, floating-point operations (FLOPs).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ...stats import summarize
from ...timing import sync


@dataclass
class Ceiling:
    """One measured ceiling: what was timed, the work per repeat, and every repeat's seconds."""

    name: str  # e.g. "memory_bandwidth"
    label: str  # what was timed, in words
    seconds: list[float] = field(default_factory=list)  # one entry per timed repeat
    work_bytes: float = 0.0  # bytes moved by one repeat (read + written)
    work_flops: float = 0.0  # floating-point operations of one repeat
    per_call: int = 1  # operations timed together in one repeat (the tiny-operator ceiling times many)

    def rate(self, seconds: float) -> dict:
        """Bytes/s and FLOP/s of one repeat that took `seconds`, and seconds per call."""
        return {"bytes_per_s": self.work_bytes / seconds if self.work_bytes else None,
                "flop_per_s": self.work_flops / seconds if self.work_flops else None,
                "seconds_per_call": seconds / self.per_call}

    def record(self) -> dict:
        """The ceiling as ceilings.json stores it: median rates, spread (min/max over repeats), n and CV."""
        stats = summarize(self.seconds)
        fastest, slowest = self.rate(stats["min"]), self.rate(stats["max"])
        # the median of the repeats' rates (for an even count, not the rate of the median time)
        rates = [self.rate(seconds) for seconds in self.seconds]
        median = {key: float(np.median([rate[key] for rate in rates])) if rates[0][key] is not None else None
                  for key in rates[0]}
        return {
            "label": self.label,
            "n": stats["n"],
            "cv": stats["cv"],
            "median_s": stats["p50"],
            "work_bytes": self.work_bytes,
            "work_flops": self.work_flops,
            "per_call": self.per_call,
            **median,
            # the spread of each rate over the repeats: the fastest repeat gives the high end
            "bytes_per_s_range": [slowest["bytes_per_s"], fastest["bytes_per_s"]],
            "flop_per_s_range": [slowest["flop_per_s"], fastest["flop_per_s"]],
            "seconds_per_call_range": [fastest["seconds_per_call"], slowest["seconds_per_call"]],
        }


def time_repeats(run, device: str, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of `repeats` calls of `run()` after `warmup` untimed calls, the device synchronised around each."""
    for _ in range(warmup):
        run()
    sync(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def memory_bandwidth(device: str, dtype: torch.dtype, buffer_bytes: int, repeats: int) -> Ceiling:
    """Copy a `buffer_bytes` buffer into another: bytes moved = 2 x buffer (read once, written once)."""
    element = torch.empty((), dtype=dtype).element_size()
    src = torch.ones(buffer_bytes // element, dtype=dtype, device=device)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * element
    return Ceiling("memory_bandwidth", f"copy of a {src.numel() * element / 2**20:.0f} MiB buffer (read + write)",
                   time_repeats(lambda: dst.copy_(src), device, repeats), work_bytes=moved)


def memory_read(device: str, dtype: torch.dtype, buffer_bytes: int, repeats: int) -> Ceiling:
    """Sum a `buffer_bytes` buffer: bytes moved = the buffer, read once (what a decode step does to its weights;
    a copy also writes, which some machines do slower than they read)."""
    element = torch.empty((), dtype=dtype).element_size()
    src = torch.ones(buffer_bytes // element, dtype=dtype, device=device)
    return Ceiling("memory_read", f"sum over a {src.numel() * element / 2**20:.0f} MiB buffer (read only)",
                   time_repeats(lambda: src.sum(), device, repeats), work_bytes=src.numel() * element)


def matmul(device: str, dtype: torch.dtype, size: int, repeats: int) -> Ceiling:
    """(size x size) @ (size x size): 2 size^3 FLOPs, in `dtype`, by the faster of torch.mm and (on a CPU) oneDNN
    over a weight packed once, the kernel the engine's linear layers run: the compute roof is the fastest matmul
    this machine runs (MKL's torch.mm reached half of oneDNN's FLOP/s on an AMD CPU, and prefill then read
    MFU > 100%)."""
    from ...prepack import available, pack_weight, packed_linear

    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype, device=device)
    work = {"work_bytes": 3 * size * size * a.element_size(), "work_flops": 2 * size**3}
    shape = f"{size}x{size} @ {size}x{size} matmul"
    candidates = [Ceiling("matmul", f"{shape} (torch.mm)",
                          time_repeats(lambda: torch.mm(a, b, out=out), device, repeats), **work)]
    if device == "cpu" and available(dtype):
        packed = pack_weight(b.t().contiguous())  # a @ b = a @ (b^T)^T: F.linear's weight is b^T
        candidates.append(Ceiling("matmul", f"{shape} (oneDNN, weight packed once)",
                                  time_repeats(lambda: packed_linear(a, packed), device, repeats), **work))
    return min(candidates, key=lambda ceiling: float(np.median(ceiling.seconds)))


def matvec(device: str, dtype: torch.dtype, size: int, repeats: int) -> Ceiling:
    """(size x size) @ (size): 2 size^2 FLOPs; moves the matrix once plus the two vectors."""
    generator = torch.Generator(device="cpu").manual_seed(1)
    matrix = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    vector = torch.randn(size, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(size, dtype=dtype, device=device)
    element = matrix.element_size()
    return Ceiling("matvec", f"{size}x{size} @ {size} matrix-vector product",
                   time_repeats(lambda: torch.mv(matrix, vector, out=out), device, repeats),
                   work_bytes=(size * size + 2 * size) * element, work_flops=2 * size * size)


def tiny_operator(device: str, calls: int, repeats: int) -> Ceiling:
    """`calls` in-place adds on a 1-element tensor, back to back, synchronised once: host cost per operator."""
    x = torch.zeros(1, device=device)

    def run():
        for _ in range(calls):
            x.add_(1.0)

    label = "empty kernel launch (1-element add)" if device.startswith("cuda") else "dispatch of a 1-element add"
    return Ceiling("tiny_op", label, time_repeats(run, device, repeats), per_call=calls)


def host_device_copies(buffer_bytes: int, repeats: int) -> list[Ceiling]:
    """CUDA only: a pinned host buffer copied to the device (h2d) and back (d2h); bytes moved = the buffer."""
    host = torch.ones(buffer_bytes // 4, dtype=torch.float32).pin_memory()
    on_device = torch.empty_like(host, device="cuda")
    moved = host.numel() * 4
    h2d = Ceiling("host_to_device", f"{moved / 2**20:.0f} MiB pinned host -> device copy",
                  time_repeats(lambda: on_device.copy_(host, non_blocking=True), "cuda", repeats), work_bytes=moved)
    d2h = Ceiling("device_to_host", f"{moved / 2**20:.0f} MiB device -> pinned host copy",
                  time_repeats(lambda: host.copy_(on_device, non_blocking=True), "cuda", repeats), work_bytes=moved)
    return [h2d, d2h]


def measure_all(device: str, dtype: torch.dtype, cfg: dict, progress=None) -> list[Ceiling]:
    """Every ceiling for `device` and `dtype`, sized by the d2 config block (copy_mib, matmul_size, …).

    Host <-> device copies are measured only on CUDA; on the CPU they do not exist and are left out.
    `progress` (a tqdm bar) is advanced once per ceiling.
    """
    repeats = cfg["ceiling_repeats"]
    buffer_bytes = cfg["copy_mib"] * 2**20
    steps = [
        lambda: [memory_bandwidth(device, dtype, buffer_bytes, repeats)],
        lambda: [memory_read(device, dtype, buffer_bytes, repeats)],
        lambda: [matmul(device, dtype, cfg["matmul_size"], repeats)],
        lambda: [matvec(device, dtype, cfg["matvec_size"], repeats)],
        lambda: [tiny_operator(device, cfg["tiny_op_calls"], repeats)],
    ]
    if device.startswith("cuda"):
        steps.append(lambda: host_device_copies(buffer_bytes, repeats))
    ceilings = []
    for step in steps:
        ceilings.extend(step())
        if progress is not None:
            progress.update(1)
    return ceilings
