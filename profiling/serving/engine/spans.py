"""Server-side spans: what happened to every request and every worker step, when (perf_counter seconds).

The server writes one JSON object per line (`--spans-out`), flushed after every worker step:

    {"kind": "meta",    "t": …, "unix_time": …, "settings": {…}}          first line: perf_counter vs wall time
    {"kind": "request", "request_id": "cmpl-…", "event": E, "t": …, …}    one per request event
    {"kind": "step",    "step": k, "phase": "prefill"|"decode", "start": …, "end": …, "batch_size": n,
                        "tokens_in": n, "waiting": n, "running": n}       one per worker step

Request events E, in order, with their extra fields:
    arrived        HTTP request parsed (tenant, endpoint, stream, client_request_id: its X-Request-Id header)
    queued         tokenized and put in the waiting queue (prompt_tokens, max_tokens, queue_depth)
    rejected       not queued (status: 400, 429, 503)
    admitted       the scheduler took it into worker step `step`
    prefill_start, prefill_end   its prefill forward (step); prefill_end is when token 1 is on the host
    decode_step    one decode forward that gave it a token (step, start; `t` = its end)
    chunk_sent     the front end sent a chunk to the client (tokens: tokens sent so far, detokenize_s)
    done           the response is complete (finish_reason, output_tokens)
    cancelled      the client went away;   error  the worker failed (message)

perf_counter is CLOCK_MONOTONIC on Linux, shared by all processes of the machine, so a load generator's
perf_counter stamps on the same machine are directly comparable with these.

Readers: `load_spans`, `chrome_trace` / `write_chrome_trace` (one track per request plus the worker's steps, for
Perfetto or chrome://tracing) and `stage_durations` (per-request stage times as a DataFrame).
"""
from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path

import pandas as pd

END_EVENTS = ("done", "cancelled", "error", "rejected")  # the events that end a request's timeline


class SpanLog:
    """Thread-safe JSONL writer of span events. With no path, events are dropped (costs one branch)."""

    def __init__(self, path: str | Path | None, settings: dict | None = None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w")
            self._write({"kind": "meta", "t": time.perf_counter(), "unix_time": time.time(),
                         "settings": settings or {}})
            self.flush()

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def _write(self, event: dict) -> None:
        with self._lock:
            if self._file is not None:
                self._file.write(json.dumps(event) + "\n")

    def request(self, request_id: str, event: str, t: float | None = None, **fields) -> None:
        """One request event at perf_counter `t` (now when None)."""
        if self._file is not None:
            self._write({"kind": "request", "request_id": request_id, "event": event,
                         "t": time.perf_counter() if t is None else t, **fields})

    def step(self, step: int, phase: str, start: float, end: float, **fields) -> None:
        """One worker step: `phase` prefill, decode or mixed, from `start` to `end` (perf_counter seconds)."""
        if self._file is not None:
            self._write({"kind": "step", "step": step, "phase": phase, "start": start, "end": end, **fields})

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# ---- readers ------------------------------------------------------------------------------------------------
def load_spans(path: str | Path) -> list[dict]:
    """Every event of a spans JSONL file, in file order (a torn last line, from a killed server, is skipped)."""
    events = []
    with open(path) as f:
        for line in f:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def _by_request(events: list[dict]) -> dict[str, list[dict]]:
    requests: dict[str, list[dict]] = {}
    for event in events:
        if event["kind"] == "request":
            requests.setdefault(event["request_id"], []).append(event)
    return requests


def _origin(events: list[dict]) -> float:
    times = [e["t"] for e in events if "t" in e] + [e["start"] for e in events if e["kind"] == "step"]
    return min(times) if times else 0.0


def chrome_trace(events: list[dict]) -> dict:
    """A Chrome trace (JSON object format) of the spans: track 0 is the worker's steps, then one track per
    request in arrival order, with its queue wait, prefill, decode steps and chunks; queue depth and running
    batch as counters. Times in microseconds from the first event."""
    origin = _origin(events)

    def us(seconds: float) -> float:
        return round((seconds - origin) * 1e6, 3)

    trace = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "server"}},
             {"ph": "M", "pid": 1, "tid": 0, "name": "thread_name", "args": {"name": "worker steps"}}]
    for event in events:
        if event["kind"] != "step":
            continue
        args = {k: v for k, v in event.items() if k not in ("kind", "start", "end")}
        name = f"{event['phase']}[{event['step']}] x{event.get('batch_size', '?')}"
        trace.append({"ph": "X", "pid": 1, "tid": 0, "name": name,
                      "cat": event["phase"], "ts": us(event["start"]), "dur": us(event["end"]) - us(event["start"]),
                      "args": args})
        for counter in ("waiting", "running"):
            if counter in event:
                trace.append({"ph": "C", "pid": 1, "name": counter, "ts": us(event["start"]),
                              "args": {counter: event[counter]}})
    for tid, (request_id, request_events) in enumerate(_by_request(events).items(), start=1):
        trace.append({"ph": "M", "pid": 1, "tid": tid, "name": "thread_name", "args": {"name": request_id}})
        trace.extend(_request_slices(request_events, tid, us))
    return {"traceEvents": trace, "displayTimeUnit": "ms"}


def _request_slices(events: list[dict], tid: int, us) -> list[dict]:
    """Chrome trace slices of one request: the whole request, queued, prefill, each decode step, and instant
    events for the chunks sent and the end."""
    at = {}
    for event in events:
        at.setdefault(event["event"], event)
    slices = []

    def span(name: str, start: float, end: float, args: dict | None = None):
        slices.append({"ph": "X", "pid": 1, "tid": tid, "name": name, "ts": us(start), "dur": us(end) - us(start),
                       "args": args or {}})

    end_event = next((e for e in reversed(events) if e["event"] in END_EVENTS), events[-1])
    if "arrived" in at:
        span("request", at["arrived"]["t"], end_event["t"], {"end": end_event["event"]})
    if "queued" in at and "admitted" in at:
        span("queued", at["queued"]["t"], at["admitted"]["t"], {"step": at["admitted"].get("step")})
    if "prefill_start" in at and "prefill_end" in at:
        span("prefill", at["prefill_start"]["t"], at["prefill_end"]["t"], {"step": at["prefill_end"].get("step")})
    for event in events:
        if event["event"] == "decode_step":
            span("decode", event["start"], event["t"], {"step": event["step"]})
        elif event["event"] in ("chunk_sent", "done", "cancelled", "error", "rejected", "admitted"):
            slices.append({"ph": "i", "s": "t", "pid": 1, "tid": tid, "name": event["event"], "ts": us(event["t"]),
                           "args": {k: v for k, v in event.items() if k not in ("kind", "t", "request_id")}})
    return slices


def write_chrome_trace(spans_path: str | Path, out_path: str | Path) -> Path:
    """Read a spans JSONL and write its Chrome trace as gzip JSON (`.json.gz`); returns `out_path`."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out_path, "wt") as f:
        json.dump(chrome_trace(load_spans(spans_path)), f)
    return out_path


STAGE_COLUMNS = ["request_id", "client_request_id", "tenant", "status", "prompt_tokens", "output_tokens", "arrived_s",
                 "http_s", "queue_wait_s", "schedule_s", "prefill_s", "decode_s", "handoff_s", "detokenize_s",
                 "stream_s", "ttft_s", "e2e_s", "admitted_step"]


def stage_durations(events: list[dict] | str | Path) -> pd.DataFrame:
    """Per-request stage durations (seconds), one row per request, following the flow
    HTTP -> queue -> scheduler -> worker (prefill, decode) -> detokenize -> stream:

        http_s        arrived -> queued      (parse, chat template, tokenize)
        queue_wait_s  queued -> admitted     (waiting for the scheduler)
        schedule_s    admitted -> prefill start
        prefill_s     prefill start -> end   (first token on the host)
        decode_s      prefill end -> last token on the host
        handoff_s     median over tokens: token on the host -> its chunk sent (worker -> asyncio -> socket)
        detokenize_s  total detokenization time of the request's chunks
        stream_s      last token on the host -> response done
        ttft_s        arrived -> first chunk sent;   e2e_s  arrived -> done
    `arrived_s` is seconds from the first event of the file; `client_request_id` is the request's
    X-Request-Id header (the load generator's id), to join with client-side records. Missing stages are NaN
    (e.g. a rejected request).
    """
    if not isinstance(events, list):
        events = load_spans(events)
    origin = _origin(events)
    rows = []
    for request_id, request_events in _by_request(events).items():
        first = {}
        for event in request_events:
            first.setdefault(event["event"], event)

        def t(name: str) -> float:
            return first[name]["t"] if name in first else float("nan")

        token_times = [t("prefill_end")] + [e["t"] for e in request_events if e["event"] == "decode_step"]
        chunks = [e for e in request_events if e["event"] == "chunk_sent"]
        handoffs = [chunk["t"] - token_times[chunk["tokens"] - 1] for chunk in chunks
                    if 0 < chunk.get("tokens", 0) <= len(token_times)]
        end = next((e for e in reversed(request_events) if e["event"] in END_EVENTS), None)
        status = end["event"] if end else "open"
        last_token = token_times[-1] if "prefill_end" in first else float("nan")
        end_t = end["t"] if end else float("nan")
        rows.append({
            "request_id": request_id,
            "client_request_id": first.get("arrived", {}).get("client_request_id"),
            "tenant": first.get("arrived", {}).get("tenant"),
            "status": status,
            "prompt_tokens": first.get("queued", {}).get("prompt_tokens"),
            "output_tokens": (end or {}).get("output_tokens", len(token_times) if "prefill_end" in first else 0),
            "arrived_s": t("arrived") - origin,
            "http_s": t("queued") - t("arrived"),
            "queue_wait_s": t("admitted") - t("queued"),
            "schedule_s": t("prefill_start") - t("admitted"),
            "prefill_s": t("prefill_end") - t("prefill_start"),
            "decode_s": last_token - t("prefill_end"),
            "handoff_s": float(pd.Series(handoffs).median()) if handoffs else float("nan"),
            "detokenize_s": float(sum(c.get("detokenize_s", 0.0) for c in chunks)) if chunks else float("nan"),
            "stream_s": end_t - last_token,
            "ttft_s": (chunks[0]["t"] if chunks else float("nan")) - t("arrived"),
            "e2e_s": end_t - t("arrived"),
            "admitted_step": first.get("admitted", {}).get("step"),
        })
    return pd.DataFrame(rows, columns=STAGE_COLUMNS)


def step_table(events: list[dict] | str | Path) -> pd.DataFrame:
    """The worker's steps as a DataFrame: step, phase (prefill, decode, or mixed: prompt chunks beside decodes),
    start_s (from the first event), seconds, batch_size, tokens_in, prompt_tokens_in, waiting, running (queue
    depth and running batch over time), kv_bytes_reserved and kv_bytes_held (KV memory reserved against the bytes
    of the tokens it holds; NaN where the step did not record them)."""
    if not isinstance(events, list):
        events = load_spans(events)
    origin = _origin(events)
    columns = ["batch_size", "tokens_in", "prompt_tokens_in", "waiting", "running", "kv_bytes_reserved",
               "kv_bytes_held"]
    rows = [{"step": e["step"], "phase": e["phase"], "start_s": e["start"] - origin, "seconds": e["end"] - e["start"],
             **{name: e.get(name) for name in columns}} for e in events if e["kind"] == "step"]
    return pd.DataFrame(rows, columns=["step", "phase", "start_s", "seconds", *columns])
