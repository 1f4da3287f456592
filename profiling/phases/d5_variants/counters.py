"""Counters D5 reads around a run: peak memory and energy. Each says how it measures, or why it cannot.

Peak memory (bytes above the level just before the block):
    cuda   torch.cuda.max_memory_allocated after reset_peak_memory_stats (the caching allocator's peak)
    cpu    the process's peak resident set (VmHWM in /proc/self/status) after resetting it through
           /proc/self/clear_refs; where that reset is refused, psutil's RSS sampled every 5 ms by a thread
Energy (joules): telemetry.EnergyMeter (NVML on a GPU, RAPL powercap counters on a CPU), shared by every phase.
"""
from __future__ import annotations

import threading
from pathlib import Path

import psutil

from ...telemetry import EnergyMeter  # noqa: F401 - the shared energy counter, used by D5's experiment

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


# ---- peak memory -------------------------------------------------------------------------------------------------
def _status_bytes(field: str) -> int:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _can_reset_peak_rss() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        _status_bytes("VmHWM")
        return True
    except (OSError, KeyError):
        return False


class PeakMemory:
    """`with PeakMemory(device) as peak: …`; afterwards `peak.delta_bytes` is the peak above the level at entry,
    and `peak.method` says how it was measured."""

    def __init__(self, device: str):
        self.device = device
        self.delta_bytes = 0
        self._sampled_peak = 0
        self._stop = threading.Event()
        self._thread = None
        if device.startswith("cuda"):
            self.method = "torch.cuda.max_memory_allocated (caching allocator peak) minus allocated at start"
        elif _can_reset_peak_rss():
            self.method = "process peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS at start"
        else:
            self.method = "process RSS sampled every 5 ms (psutil), peak minus RSS at start"

    def __enter__(self):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        elif self.method.startswith("process peak RSS"):
            CLEAR_REFS.write_text("5")
            self._start = _status_bytes("VmRSS")
        else:
            self._start = psutil.Process().memory_info().rss
            self._sampled_peak = self._start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(0.005):
            self._sampled_peak = max(self._sampled_peak, process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self._thread is None:
            peak = _status_bytes("VmHWM")
        else:
            self._stop.set()
            self._thread.join()
            peak = self._sampled_peak
        self.delta_bytes = max(0, peak - self._start)

