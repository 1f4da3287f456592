"""torch.profiler sessions and gzip Chrome-trace export.

Spans labelled with `torch.profiler.record_function` (the StageClock does this) appear in the trace above the aten
operators (and, on CUDA, the kernels) they ran, so the trace opens in Perfetto or chrome://tracing with
`tokenize`, `prefill`, `decode_step[i]`, `detokenize` on top.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from torch.profiler import ProfilerActivity, profile


def activities(device: str) -> list:
    """CPU always; CUDA kernels too when the run is on a GPU."""
    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])


@contextmanager
def profiled(device: str, record_shapes: bool = True):
    """A torch.profiler session over the block; yields the profiler."""
    with profile(activities=activities(device), record_shapes=record_shapes) as prof:
        yield prof


def export_gzip_trace(prof, path: str | os.PathLike) -> Path:
    """Write the profiler's Chrome trace to `path` (gzip-compressed JSON)."""
    path = Path(path)
    raw = path.with_name(path.name + ".raw.json")
    prof.export_chrome_trace(str(raw))
    try:
        with open(raw, "rb") as src, gzip.open(path, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
    finally:
        raw.unlink(missing_ok=True)
    return path


def write_empty_trace(path: str | os.PathLike, note: str) -> Path:
    """Write a valid gzip Chrome trace with no events and `note` saying why (e.g. the setting ran out of memory),
    so every declared trace file exists and opens."""
    path = Path(path)
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": [], "otherData": {"note": note}}, f)
    return path
