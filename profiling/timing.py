"""Clocks, device synchronisation, and the statistics every figure in the report is built from.

Times are seconds from `time.perf_counter`. On CUDA the clock is read only after `torch.cuda.synchronize()`, so a
timed span covers the GPU work it launched, not just the launch. `TIMING_METHOD` names the method for meta.json.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np


def sync(device: str) -> None:
    """Wait until every kernel queued on `device` has finished (a no-op on the CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timing_method(device: str) -> str:
    return "torch.cuda.synchronize + perf_counter" if device.startswith("cuda") else "perf_counter (CPU, synchronous)"


class StageClock:
    """Times named spans of one request, synchronising the device at each boundary.

    `with clock.span("prefill"): ...` appends a Span to `clock.spans` and wraps it in
    `torch.profiler.record_function(name)`, so the same label shows in a Chrome trace when a profiler runs.
    Span starts are seconds since the clock was created (the request's start).
    """

    def __init__(self, device: str):
        self.device = device
        self.origin = time.perf_counter()
        self.spans: list[Span] = []

    def now(self) -> float:
        """Seconds since the clock was created, after waiting for the device."""
        sync(self.device)
        return time.perf_counter() - self.origin

    @contextmanager
    def span(self, name: str):
        import torch

        with torch.profiler.record_function(name):
            start = self.now()
            yield
            self.spans.append(Span(name, start, self.now() - start))

    def seconds(self, name: str) -> float:
        """Total seconds spent in spans called `name`."""
        return sum(span.seconds for span in self.spans if span.name == name)

    def end_of(self, name: str) -> float:
        """Seconds from the clock's creation to the end of the last span called `name`."""
        return max(span.start + span.seconds for span in self.spans if span.name == name)


@dataclass(frozen=True)
class Span:
    name: str
    start: float  # seconds since the clock's origin
    seconds: float


# ---- statistics -------------------------------------------------------------------------------------------
PERCENTILES = (50, 90, 95, 99)


def summarize(values, ci_resamples: int = 1000, seed: int = 0) -> dict:
    """Summary statistics of a sample: n, mean, std, cv, min, p50/p90/p95/p99, max, and a 95% bootstrap
    confidence interval of the median (ci95_low, ci95_high). NaNs are dropped; an empty sample gives n = 0."""
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if data.size == 0:
        return {"n": 0}
    mean = float(data.mean())
    std = float(data.std(ddof=1)) if data.size > 1 else 0.0
    stats = {
        "n": int(data.size),
        "mean": mean,
        "std": std,
        "cv": std / mean if mean else float("nan"),
        "min": float(data.min()),
        "max": float(data.max()),
    }
    for p in PERCENTILES:
        stats[f"p{p}"] = float(np.percentile(data, p))
    low, high = bootstrap_median_ci(data, ci_resamples, seed)
    stats["ci95_low"], stats["ci95_high"] = low, high
    return stats


def bootstrap_median_ci(data, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap confidence interval of the median of `data`."""
    data = np.asarray(data, dtype=float)
    if data.size < 2:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(data, size=(resamples, data.size), replace=True), axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


# ---- metric definitions (DESIGN.md "Metric definitions": the one place they are computed) -----------------
def tpot_s(e2e_s: float, ttft_s: float, output_tokens: int) -> float:
    """Time per output token after the first: (e2e - ttft) / (output_tokens - 1), seconds."""
    if output_tokens < 2:
        return float("nan")
    return (e2e_s - ttft_s) / (output_tokens - 1)


def output_tok_per_s(generated_tokens: int, wall_s: float) -> float:
    """Generated tokens per second of wall time."""
    return generated_tokens / wall_s if wall_s > 0 else float("nan")
