"""The hardware/software record of a run: what machine, what software, what device and dtype were really used.

Written to reports/runs/<run tag>/env.json and embedded in every meta.json, so numbers from different machines can
be told apart (`run_tag`: model + device + dtype + host, see profiling/runs.py).
"""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from datetime import datetime, timezone

from . import allocator
from .config import REPO_ROOT, Precision


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_record() -> dict:
    """GPU name, memory (bytes), driver and SM clock through NVML (nvidia-ml-py); {} when there is no GPU or NVML."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver / no GPU: NVML raises its own error types
        return {}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or 0))
        name = pynvml.nvmlDeviceGetName(handle)
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {
            "gpu_name": name.decode() if isinstance(name, bytes) else name,
            "gpu_memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
            "gpu_driver": driver.decode() if isinstance(driver, bytes) else driver,
            "gpu_max_sm_clock_mhz": int(pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)),
            "gpu_count": int(pynvml.nvmlDeviceGetCount()),
        }
    except Exception as error:  # a partial NVML is still worth a note
        return {"gpu_error": f"{type(error).__name__}: {error}"}
    finally:
        pynvml.nvmlShutdown()


def git_commit() -> str:
    """The project's HEAD commit (with '-dirty' when tracked files changed), or 'unknown' outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10)
        commit = head.stdout.strip() if head.returncode == 0 else ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not commit:
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def cpu_linears(precision: Precision) -> str | None:
    """How the run's linear layers run on a CPU: prepacked | aten | small_batch (None on a GPU), as
    prepack.apply_cpu_linears and model.load_model run them: small_batch applies to float32 weights where our kernel
    builds (other dtypes, or no kernel, are packed as with prepacked), and prepacked falls back to aten where this
    CPU cannot pack the run's dtype (bfloat16 on an AVX2-only CPU; float16)."""
    import torch

    from .prepack import available

    if precision.device != "cpu":
        return None
    linears = precision.linears
    if linears == "small_batch":
        from .kernels import small_batch

        if precision.dtype != "float32" or not small_batch.available():
            linears = "prepacked"  # as model.load_model falls back
    if linears == "prepacked" and not available(getattr(torch, precision.dtype)):
        return "aten"
    return linears


def cpu_decoder(precision: Precision) -> str | None:
    """How the run's decode steps run on a CPU: hf | fused (None on a GPU), as model.load_model runs them: fused
    needs our small-batch linears in float32 (cpu_linears) and a Llama-type model, else the load says why and
    keeps transformers' modules (the model's type is not checked here)."""
    if precision.device != "cpu":
        return None
    return "fused" if precision.decoder == "fused" and cpu_linears(precision) == "small_batch" else "hf"


def collect(precision: Precision, threads: int, run_tag: str, model: str) -> dict:
    """The full record for the run `run_tag` of `model` on `precision` with `threads` torch threads."""
    import psutil
    import torch
    import transformers

    host = socket.gethostname()
    record = {
        "hostname": host,
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "cpu_logical_cores": psutil.cpu_count(logical=True),
        "ram_bytes": int(psutil.virtual_memory().total),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": threads,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector ISA torch's CPU kernels use
        "model": model,
        "device": precision.device,
        "dtype": precision.dtype,
        "cpu_linears": cpu_linears(precision),  # prepacked (oneDNN) | aten | small_batch, as the run's linears actually run
        "cpu_decoder": cpu_decoder(precision),  # hf | fused: how decode steps run (model.use_fused_decoder)
        "cpu_allocator": allocator.describe(),  # glibc's thresholds for freed memory (profiling/allocator.py)
        "git_commit": git_commit(),
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(gpu_record())
    if precision.device == "cuda" and "gpu_name" not in record:
        record["gpu_name"] = torch.cuda.get_device_name(0)
        record["gpu_memory_bytes"] = int(torch.cuda.get_device_properties(0).total_memory)
    if precision.device == "cuda":
        major, minor = torch.cuda.get_device_capability(0)
        record["gpu_compute_capability"] = f"{major}.{minor}"
    device_name = record.get("gpu_name", record["cpu_model"]) if precision.device == "cuda" else "cpu"
    record["device_name"] = device_name
    record["run_tag"] = run_tag
    return record


# ---- command line (python -m profiling env) ------------------------------------------------------------------
def add_arguments(parser) -> None:
    from .config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    parser.add_argument("--out", required=True)


def cli(args) -> None:
    from .config import apply_threads, resolve_precision
    from .io import staged, write_json
    from .runs import run_tag

    record = collect(resolve_precision(args.settings), apply_threads(args.settings), run_tag(args.settings),
                     args.settings["model"])
    with staged(args.out) as (tmp,):
        write_json(tmp, record)


def phase_wall_times(run_dir, phase_names) -> list[dict]:
    """How long each phase's experiment took, from its meta.json (data/<phase>/meta.json): phase, started_at and
    ended_at (UTC, ISO 8601, whole seconds) and wall_s (seconds: the experiment's own clock between the two when
    recorded, else end - start); phases not yet measured are left out."""
    import json
    from pathlib import Path

    rows = []
    for name in phase_names:
        path = Path(run_dir) / "data" / name / "meta.json"
        if not path.exists():
            continue
        meta = json.loads(path.read_text())
        start, end = meta.get("started_at"), meta.get("ended_at")
        if not (start and end):
            continue
        wall = meta.get("wall_s") or (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
        rows.append({"phase": name, "started_at": start, "ended_at": end, "wall_s": wall})
    return rows
