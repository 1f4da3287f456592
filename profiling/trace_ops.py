"""Read a gzip Chrome trace and attribute operator time to the stage spans that contain it.

A stage span is a `user_annotation` event (a `record_function` label such as `prefill` or `decode_step[3]`).
An operator's *self* time is its duration minus the durations of the operators nested directly inside it on the
same thread; summing self times never counts a microsecond twice. On CUDA, each kernel is attributed to the stage
whose span contains the runtime call that launched it (matched by the trace's `correlation` id).
"""
from __future__ import annotations

import gc
import gzip
import json
import re
from bisect import bisect_right
from functools import lru_cache
from pathlib import Path

import pandas as pd

STEP_INDEX = re.compile(r"\[\d+\]$")


def load_events(path) -> list[dict]:
    """All complete ('X') events of a gzip (or plain) Chrome trace. An analysis reads one trace several times
    (stages, operators, categories), so the last sixteen are kept: callers must not modify the events."""
    return _load_events(str(path), Path(path).stat().st_mtime_ns)


@lru_cache(maxsize=16)
def _load_events(path: str, mtime_ns: int) -> list[dict]:
    # A trace is ~10^5-10^6 small containers without reference cycles. Python's cyclic garbage collector would
    # rescan all of them again and again while they are created and afterwards (loading D5's ten traces: 8.6 s
    # with it, 1.0 s without), so it is paused while parsing and the result is moved out of its reach (freeze).
    opener = gzip.open if path.endswith(".gz") else open
    collecting = gc.isenabled()
    gc.disable()
    try:
        with opener(path, "rt") as f:
            trace = json.load(f)
        events = [event for event in trace["traceEvents"] if event.get("ph") == "X"]
    finally:
        if collecting:
            gc.enable()
    gc.freeze()
    return events


def cpu_ops_by_thread(events: list[dict]) -> dict:
    """The aten operator events of each (pid, tid), sorted by start (an enclosing operator before its children)."""
    by_thread: dict = {}
    for event in events:
        if event.get("cat") == "cpu_op":
            by_thread.setdefault((event["pid"], event["tid"]), []).append(event)
    for ops in by_thread.values():
        ops.sort(key=lambda e: (e["ts"], -e["dur"]))
    return by_thread


def kernel_launches(events: list[dict]) -> dict:
    """correlation id -> the CUDA runtime or driver call that launched the kernel with that id."""
    return {e["args"]["correlation"]: e for e in events
            if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}


def stage_group(name: str) -> str:
    """`decode_step[7]` -> `decode_step`; other labels unchanged."""
    return STEP_INDEX.sub("", name)


class StageIndex:
    """Finds the innermost stage span containing a timestamp, per thread."""

    def __init__(self, annotations: list[dict]):
        self.by_thread: dict = {}
        for event in sorted(annotations, key=lambda e: e["ts"]):
            self.by_thread.setdefault((event["pid"], event["tid"]), []).append(event)
        self.starts = {key: [e["ts"] for e in spans] for key, spans in self.by_thread.items()}

    def stage_at(self, pid, tid, ts: float) -> str | None:
        # Stage spans do not overlap on one thread, so the latest span starting at or before ts is the only
        # candidate.
        index = bisect_right(self.starts.get((pid, tid), []), ts) - 1
        if index < 0:
            return None
        span = self.by_thread[(pid, tid)][index]
        return span["name"] if ts < span["ts"] + span["dur"] else None


def self_times(ops: list[dict]) -> dict[int, float]:
    """Self time (µs) of each operator event, keyed by its position in `ops` (one thread, sorted by ts)."""
    self_us = {}
    stack: list[int] = []
    for index, op in enumerate(ops):
        while stack and ops[stack[-1]]["ts"] + ops[stack[-1]]["dur"] <= op["ts"]:
            stack.pop()
        self_us[index] = op["dur"]
        if stack:
            self_us[stack[-1]] -= op["dur"]
        stack.append(index)
    return self_us


def operator_table(path) -> pd.DataFrame:
    """One row per (stage, device, operator): calls, self_s, total_s (seconds; total includes nested operators,
    as the profiler's "CPU total" does), share_of_stage (of the stage's summed self time).

    `stage` is the span label with any step index removed (all decode steps pooled as `decode_step`);
    `device` is `cpu` for aten operators, `cuda` for GPU kernels.
    """
    events = load_events(path)
    index = StageIndex([e for e in events if e.get("cat") == "user_annotation"])
    rows = []
    for (pid, tid), ops in cpu_ops_by_thread(events).items():
        self_us = self_times(ops)
        for position, op in enumerate(ops):
            stage = index.stage_at(pid, tid, op["ts"])
            rows.append({"stage": stage_group(stage) if stage else "(outside stages)", "device": "cpu",
                         "op": op["name"], "self_s": self_us[position] / 1e6, "total_s": op["dur"] / 1e6})
    launches = kernel_launches(events)
    for kernel in (e for e in events if e.get("cat") == "kernel"):
        launch = launches.get(kernel.get("args", {}).get("correlation"))
        stage = index.stage_at(launch["pid"], launch["tid"], launch["ts"]) if launch else None
        rows.append({"stage": stage_group(stage) if stage else "(outside stages)", "device": "cuda",
                     "op": kernel["name"], "self_s": kernel["dur"] / 1e6, "total_s": kernel["dur"] / 1e6})
    if not rows:
        return pd.DataFrame(columns=["stage", "device", "op", "calls", "self_s", "total_s", "share_of_stage"])
    frame = pd.DataFrame(rows)
    table = (frame.groupby(["stage", "device", "op"], as_index=False)
             .agg(calls=("op", "size"), self_s=("self_s", "sum"), total_s=("total_s", "sum")))
    stage_totals = table.groupby(["stage", "device"])["self_s"].transform("sum")
    table["share_of_stage"] = table["self_s"] / stage_totals
    return table.sort_values(["stage", "device", "self_s"], ascending=[True, True, False]).reset_index(drop=True)


def stage_spans(path) -> pd.DataFrame:
    """The stage spans of a trace: name, start_s (from the first span), seconds."""
    annotations = sorted((e for e in load_events(path) if e.get("cat") == "user_annotation"), key=lambda e: e["ts"])
    if not annotations:
        return pd.DataFrame(columns=["name", "start_s", "seconds"])
    origin = annotations[0]["ts"]
    return pd.DataFrame([{"name": e["name"], "start_s": (e["ts"] - origin) / 1e6, "seconds": e["dur"] / 1e6}
                         for e in annotations])
