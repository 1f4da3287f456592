"""Clocks and device synchronisation: how every span of every experiment is timed.

Times are seconds from `time.perf_counter`. On CUDA the clock is read only after `torch.cuda.synchronize()`, so a
timed span covers the GPU work it launched, not just the launch. `TIMING_METHOD` names the method for meta.json.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass


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
