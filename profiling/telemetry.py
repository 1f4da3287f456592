"""Background utilisation telemetry: a sampler thread that reads the machine every 1 / hz seconds.

Always (psutil): each CPU core's busy share since the previous sample, whoever used it (`cpu_busy_ratio`, 0 to 1,
one row per core), the share of all cores this process used (`process_cpu_ratio`, 0 to 1: on a shared machine it
tells our work from the neighbours') and this process's resident memory (`process_rss_bytes`).
When a GPU is in use and NVML answers (nvidia-ml-py): GPU utilisation (`gpu_util_ratio`, 0 to 1), memory in use
(`gpu_memory_used_bytes`), power (`gpu_power_w`) and SM clock (`gpu_sm_clock_mhz`).
Without NVML or without a GPU the sampler silently keeps to the CPU metrics (and says so in `backend`).

Sample times are seconds since `origin` (a `time.perf_counter()` value), so they line up with batch launches
timed on the same clock. `samples()` returns a tidy table: t_s, metric, value, unit, core.
"""
from __future__ import annotations

import glob
import os
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

TELEMETRY_COLUMNS = ["t_s", "metric", "value", "unit", "core"]
RAPL_GLOB = "/sys/class/powercap/intel-rapl:[0-9]*"


class NvmlReader:
    """Reads one GPU through NVML. Build it with `open_nvml()`; it holds NVML initialised until `close()`."""

    def __init__(self, pynvml, handle):
        self.pynvml = pynvml
        self.handle = handle

    def read(self) -> dict[str, float]:
        """GPU utilisation (0-1), memory used (bytes), power (watts) and SM clock (MHz) now."""
        nvml = self.pynvml
        return {
            "gpu_util_ratio": nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu / 100.0,
            "gpu_memory_used_bytes": float(nvml.nvmlDeviceGetMemoryInfo(self.handle).used),
            "gpu_power_w": nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0,  # NVML reports milliwatts
            "gpu_sm_clock_mhz": float(nvml.nvmlDeviceGetClockInfo(self.handle, nvml.NVML_CLOCK_SM)),
        }

    def close(self) -> None:
        try:
            self.pynvml.nvmlShutdown()
        except Exception:  # already shut down, or the driver went away: nothing left to release
            pass


def open_nvml(device: str) -> NvmlReader | None:
    """An NVML reader for the GPU in use, or None: on a CPU run, without nvidia-ml-py, or when NVML (the driver)
    does not answer. The GPU is the first one CUDA_VISIBLE_DEVICES shows (index 0 otherwise)."""
    if not device.startswith("cuda"):
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver / no GPU: NVML raises its own error types
        return None
    try:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)
        reader = NvmlReader(pynvml, handle)
        reader.read()  # fail now, not in the sampler thread, if a reading is unsupported
        return reader
    except Exception:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
        return None


class Telemetry:
    """A background sampler thread. Use as a context manager, or call start() and stop().

    `hz`: samples per second. `device`: the torch device of the run ("cpu" or "cuda"), which decides whether NVML
    is tried. `origin`: the perf_counter value that is t = 0 (default: when the object is made).
    """

    def __init__(self, hz: float = 10.0, device: str = "cpu", origin: float | None = None):
        if hz <= 0:
            raise ValueError(f"telemetry hz must be > 0, got {hz}")
        self.period_s = 1.0 / hz
        self.device = device
        self.origin = time.perf_counter() if origin is None else origin
        self.nvml: NvmlReader | None = None
        self.rows: list[tuple] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()

    @property
    def backend(self) -> str:
        """What the samples come from: "nvml+psutil" with a GPU reader, else "psutil"."""
        return "nvml+psutil" if self.nvml is not None else "psutil"

    def start(self) -> "Telemetry":
        self.nvml = open_nvml(self.device)
        psutil.cpu_percent(percpu=True)  # the first calls only start psutil's busy-time counters
        self._process.cpu_percent()
        self._thread = threading.Thread(target=self._run, daemon=True, name="telemetry")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.nvml is not None:
            self.nvml.close()

    def __enter__(self) -> "Telemetry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def sample_once(self) -> None:
        """Append one reading of every metric, stamped with seconds since `origin`."""
        t_s = time.perf_counter() - self.origin
        for core, percent in enumerate(psutil.cpu_percent(percpu=True)):
            self.rows.append((t_s, "cpu_busy_ratio", percent / 100.0, "ratio", core))
        process_share = self._process.cpu_percent() / (100.0 * psutil.cpu_count())
        self.rows.append((t_s, "process_cpu_ratio", process_share, "ratio", None))
        self.rows.append((t_s, "process_rss_bytes", float(self._process.memory_info().rss), "bytes", None))
        if self.nvml is not None:
            try:
                readings = self.nvml.read()
            except Exception:  # one failed reading is a gap in the series, not a crash
                readings = {}
            for metric, value in readings.items():
                unit = {"ratio": "ratio", "bytes": "bytes", "w": "W", "mhz": "MHz"}[metric.rsplit("_", 1)[1]]
                self.rows.append((t_s, metric, value, unit, None))

    def _run(self) -> None:
        # The first sample comes one period after start(): psutil's counters started in start(), and a reading
        # over a near-zero interval is noise (e.g. a process share of 1000%).
        next_at = time.perf_counter() + self.period_s
        while not self._stop.wait(max(0.0, next_at - time.perf_counter())):
            self.sample_once()
            next_at += self.period_s
            now = time.perf_counter()
            if next_at < now:  # fell behind (e.g. the GIL was busy): skip the missed ticks, never sample twice
                next_at = now + self.period_s  # in a row (psutil reads 0% over a zero-length interval)

    def samples(self) -> pd.DataFrame:
        """The series so far, tidy: t_s (seconds since origin), metric, value, unit, core (per-core rows only)."""
        frame = pd.DataFrame(list(self.rows), columns=TELEMETRY_COLUMNS)
        frame["core"] = frame["core"].astype("Int64")
        return frame


# ---- energy (NVML on a GPU, RAPL powercap on a CPU) ------------------------------------------------------------------------------------------------------
class EnergyMeter:
    """Reads a cumulative energy counter: `read_j()` gives joules (or None); `reason` says why none is readable.

    cuda   NVML's total energy counter of the GPU (millijoules since the driver loaded)
    cpu    the Linux RAPL package counters /sys/class/powercap/intel-rapl:<n>/energy_uj (microjoules), summed over
           packages, when present and readable"""

    def __init__(self, device: str):
        self.reason = None  # why no counter is readable, in words (meta.json)
        self.missing = None  # the same as a key the report words per language: no_nvml, nvml_no_energy_counter,
        #                      no_rapl, rapl_unreadable (None when a counter is readable)
        self.method = None
        self._nvml = None
        self._rapl: list[tuple[Path, float]] = []
        if device.startswith("cuda"):
            self._open_nvml(device)
        else:
            self._open_rapl()

    def _open_nvml(self, device: str) -> None:
        reader = open_nvml(device)
        if reader is None:
            self.reason = "NVML is not available (nvidia-ml-py missing or the driver does not answer)"
            self.missing = "no_nvml"
            return
        try:
            reader.pynvml.nvmlDeviceGetTotalEnergyConsumption(reader.handle)
            self._nvml = reader
            self.method = "NVML nvmlDeviceGetTotalEnergyConsumption (GPU board, mJ)"
        except Exception as error:  # noqa: BLE001 - NVML raises its own error classes per GPU
            self.reason = f"this GPU does not expose NVML's energy counter ({type(error).__name__})"
            self.missing = "nvml_no_energy_counter"

    def _open_rapl(self) -> None:
        packages = sorted(glob.glob(RAPL_GLOB))
        if not packages:
            self.reason = "no RAPL powercap counters on this machine (/sys/class/powercap/intel-rapl:* absent)"
            self.missing = "no_rapl"
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
            self.missing = "rapl_unreadable"

    def note(self) -> dict:
        """What meta.json records of the meter: {"method", "missing" (a key), "detail" (the reason in words)}."""
        return {"method": self.method, "missing": self.missing, "detail": self.reason}

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
