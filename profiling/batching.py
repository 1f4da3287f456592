"""Batching: static batches, a dynamic batcher (max batch + wait window), and arrival processes.

Static batching hands the model B prompts at once; every request waits for the whole batch.

The dynamic batcher sits between a queue of arriving requests and one worker:

    producers --put()--> [ FIFO queue ] --next_batch()--> worker (runs the model on the batch)

A batch launches when `max_batch` requests wait, or when the oldest waiting request has waited `wait_window_s`
(whichever comes first); it takes at most `max_batch` requests, oldest first. A window of 0 launches whatever is
waiting as soon as the worker asks. The batcher reads time only through its `clock` (seconds, any origin), so a
test can drive it with a hand-advanced clock; `poll()` decides without blocking, `next_batch()` blocks.

Arrival processes give the times (seconds from the run's start) at which an open-loop producer enqueues requests:
Poisson at a rate (independent exponential gaps), or a burst (all at once). Both are fixed by a seed.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


# ---- static batches -----------------------------------------------------------------------------------------
def static_batch(prompts: list[str], batch_size: int) -> list[str]:
    """The first `batch_size` prompts: distinct requests for one static batch (needs enough prompts)."""
    if batch_size > len(prompts):
        raise ValueError(f"a static batch of {batch_size} needs {batch_size} distinct prompts, "
                         f"only {len(prompts)} are configured")
    return list(prompts[:batch_size])


def padding_waste_ratio(attention_mask) -> float:
    """Share of the batch's prompt positions that are padding: padded tokens / all prompt tokens (0 to 1).

    `attention_mask` is (batch, prompt_tokens) with 1 for a real token and 0 for padding."""
    total = attention_mask.numel()
    padded = total - int(attention_mask.sum())
    return padded / total if total else 0.0


# ---- arrival processes --------------------------------------------------------------------------------------
def poisson_arrivals(rate_req_per_s: float, count: int, seed: int) -> list[float]:
    """Arrival times (seconds from the start) of `count` requests from a Poisson process at `rate_req_per_s`:
    the gaps between arrivals are independent exponential draws with mean 1 / rate."""
    if rate_req_per_s <= 0:
        raise ValueError(f"a Poisson rate must be > 0 requests/s, got {rate_req_per_s}")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate_req_per_s, size=count)
    return np.cumsum(gaps).tolist()


def burst_arrivals(count: int, at_s: float = 0.0) -> list[float]:
    """Arrival times of a burst: `count` requests that all arrive at `at_s` seconds."""
    return [float(at_s)] * count


# ---- the dynamic batcher ------------------------------------------------------------------------------------
@dataclass
class Request:
    """One request in the queue. `arrival_s` is stamped by the batcher (its clock) when the request is put."""

    request_id: int
    payload: Any = None  # what the worker needs, e.g. the prompt text
    arrival_s: float | None = None


class DynamicBatcher:
    """A thread-safe FIFO queue that releases batches of at most `max_batch` requests.

    Launch rule (checked whenever the worker asks): launch if `max_batch` requests wait, or if the oldest waiting
    request has waited at least `wait_window_s` seconds. Requests leave in arrival order. `close()` says no more
    requests will come; the last partial batch still waits out its window (a real server cannot know it is the
    last), and `next_batch()` returns None once the queue is closed and empty.
    """

    def __init__(self, max_batch: int, wait_window_s: float, clock: Callable[[], float] = time.perf_counter):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if wait_window_s < 0:
            raise ValueError(f"wait_window_s must be >= 0, got {wait_window_s}")
        self.max_batch = max_batch
        self.wait_window_s = wait_window_s
        self.clock = clock
        self._queue: deque[Request] = deque()
        self._closed = False
        self._changed = threading.Condition()

    def put(self, request: Request) -> Request:
        """Enqueue a request (any thread), stamping its arrival time; returns it."""
        with self._changed:
            if self._closed:
                raise RuntimeError("put() on a closed batcher")
            request.arrival_s = self.clock()
            self._queue.append(request)
            self._changed.notify_all()
        return request

    def close(self) -> None:
        """No more requests will be put; wakes a waiting worker."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def waiting(self) -> int:
        """Requests in the queue now."""
        with self._changed:
            return len(self._queue)

    def _seconds_until_launch(self, now: float) -> float | None:
        """Seconds until the head of the queue may launch (0: now); None when the queue is empty."""
        if not self._queue:
            return None
        if len(self._queue) >= self.max_batch:
            return 0.0
        return max(0.0, self._queue[0].arrival_s + self.wait_window_s - now)

    def _take(self) -> list[Request]:
        count = min(self.max_batch, len(self._queue))
        return [self._queue.popleft() for _ in range(count)]

    def poll(self) -> list[Request] | None:
        """The batch that launches at the clock's current time, or None if no batch is due yet (never blocks)."""
        with self._changed:
            if self._seconds_until_launch(self.clock()) == 0.0:
                return self._take()
            return None

    def next_batch(self, poll_s: float = 0.05) -> list[Request] | None:
        """Block until a batch launches and return it; None when the batcher is closed and empty.

        While waiting for a window to expire, it sleeps on a condition variable for the remaining window (at most
        `poll_s` seconds at a time, so an injected clock that is not wall time is re-read regularly)."""
        with self._changed:
            while True:
                due_in = self._seconds_until_launch(self.clock())
                if due_in == 0.0:
                    return self._take()
                if due_in is None and self._closed:
                    return None
                self._changed.wait(timeout=poll_s if due_in is None else min(due_in, poll_s))


def feed(batcher: DynamicBatcher, requests: list[Request], arrivals_s: list[float], start: float,
         clock: Callable[[], float] = time.perf_counter) -> None:
    """Open-loop producer: put each request at `start + arrivals_s[i]` on `clock` (seconds), then close.

    Open loop: arrivals follow their schedule whatever the worker is doing, as real users do. The batcher is
    closed even if putting fails, so the worker never waits for requests that cannot come."""
    try:
        for request, arrival in zip(requests, arrivals_s, strict=True):
            delay = start + arrival - clock()
            if delay > 0:
                time.sleep(delay)
            batcher.put(request)
    finally:
        batcher.close()


def start_producer(batcher: DynamicBatcher, requests: list[Request], arrivals_s: list[float],
                   start: float, clock: Callable[[], float] = time.perf_counter) -> threading.Thread:
    """Run `feed` in a background thread (daemon) and return the thread."""
    thread = threading.Thread(target=feed, args=(batcher, requests, arrivals_s, start, clock), daemon=True,
                              name="arrivals")
    thread.start()
    return thread
