"""Counters D5 reads around a run: peak memory and energy. Each says how it measures, or why it cannot.

Peak memory (bytes above the level just before the block):
    cuda   torch.cuda.max_memory_allocated after reset_peak_memory_stats (the caching allocator's peak)
    cpu    the process's peak resident set (VmHWM in /proc/self/status) after resetting it through
           /proc/self/clear_refs; where that reset is refused, psutil's RSS sampled every 5 ms by a thread
Energy (joules):
    cuda   NVML's total energy counter of the GPU (millijoules since the driver loaded)
    cpu    the Linux RAPL package counters /sys/class/powercap/intel-rapl:<n>/energy_uj (microjoules), summed over
           packages, when present and readable
"""
from __future__ import annotations

import glob
import threading
from pathlib import Path

import psutil

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
RAPL_GLOB = "/sys/class/powercap/intel-rapl:[0-9]*"


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


# ---- energy ------------------------------------------------------------------------------------------------------
class EnergyMeter:
    """Reads a cumulative energy counter: `read_j()` gives joules (or None); `reason` says why none is readable."""

    def __init__(self, device: str):
        self.reason = None
        self.method = None
        self._nvml = None
        self._rapl: list[tuple[Path, float]] = []
        if device.startswith("cuda"):
            self._open_nvml(device)
        else:
            self._open_rapl()

    def _open_nvml(self, device: str) -> None:
        from ...telemetry import open_nvml

        reader = open_nvml(device)
        if reader is None:
            self.reason = "NVML is not available (nvidia-ml-py missing or the driver does not answer)"
            return
        try:
            reader.pynvml.nvmlDeviceGetTotalEnergyConsumption(reader.handle)
            self._nvml = reader
            self.method = "NVML nvmlDeviceGetTotalEnergyConsumption (GPU board, mJ)"
        except Exception as error:  # noqa: BLE001 - NVML raises its own error classes per GPU
            self.reason = f"this GPU does not expose NVML's energy counter ({type(error).__name__})"

    def _open_rapl(self) -> None:
        packages = sorted(glob.glob(RAPL_GLOB))
        if not packages:
            self.reason = "no RAPL powercap counters on this machine (/sys/class/powercap/intel-rapl:* absent)"
            return
        try:
            for package in packages:
                path = Path(package) / "energy_uj"
                int(path.read_text())
                wrap = float((Path(package) / "max_energy_range_uj").read_text())
                self._rapl.append((path, wrap))
            self.method = "Linux RAPL package counters (CPU packages + DRAM where included, µJ)"
        except (OSError, ValueError) as error:
            self._rapl = []
            self.reason = f"RAPL counters exist but are not readable here ({type(error).__name__}: needs root)"

    @property
    def available(self) -> bool:
        return self._nvml is not None or bool(self._rapl)

    def read_j(self) -> list[float] | None:
        """Raw counter values in joules (one per package / GPU), or None when no counter is readable."""
        if self._nvml is not None:
            return [self._nvml.pynvml.nvmlDeviceGetTotalEnergyConsumption(self._nvml.handle) / 1000.0]
        if self._rapl:
            return [int(path.read_text()) / 1e6 for path, _ in self._rapl]
        return None

    def joules_between(self, before: list[float] | None, after: list[float] | None) -> float | None:
        """Joules used between two readings (a RAPL counter that wrapped is corrected once)."""
        if before is None or after is None:
            return None
        total = 0.0
        wraps = [wrap / 1e6 for _, wrap in self._rapl] or [float("inf")] * len(before)
        for start, end, wrap in zip(before, after, wraps):
            total += end - start if end >= start else end + wrap - start
        return total
