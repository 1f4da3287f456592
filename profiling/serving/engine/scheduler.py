"""The scheduler: decides what the worker runs next, one step at a time (after nano-vllm's scheduler).

    waiting  requests not started yet (WaitingQueue: fifo or fair across tenants)
    running  sequences in the batch, each with its own rows of the KV cache

`next_step()` returns one of
    Step("prefill", new)      admit `new` from the waiting queue: one forward over their prompts
    Step("decode", running)   one forward that adds one token to every running sequence
    None                      the server is stopping and nothing is left (the worker exits)
and blocks while there is nothing to do. Which one depends on the policy:
    continuous  prefill whenever requests wait and the batch has free slots, else decode
    static,     decode while a batch runs (run to completion); when it is empty, prefill the next batch once
    dynamic     its launch rule holds (see settings.py)

The front end calls `add` and `cancel` from the asyncio thread; the worker calls `next_step` and `finish`;
one lock guards both sides.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from .sequence import Sequence, Status
from .waiting_queue import WaitingQueue


@dataclass
class Step:
    kind: str                 # "prefill" or "decode"
    sequences: list[Sequence]


class Stopping(Exception):
    """The server is shutting down and accepts no new requests (the front end answers 503)."""


class Scheduler:
    def __init__(self, policy: str, max_batch: int, wait_window_s: float, waiting: WaitingQueue,
                 clock=time.perf_counter):
        self.policy = policy
        self.max_batch = max_batch
        self.wait_window_s = wait_window_s
        self.waiting = waiting
        self.running: list[Sequence] = []
        self.clock = clock
        self.stopping = False
        self._changed = threading.Condition()

    # ---- front end side ------------------------------------------------------------------------------------
    def add(self, seq: Sequence) -> int:
        """Queue a request; returns the queue depth after it. Raises QueueFull or Stopping."""
        with self._changed:
            if self.stopping:
                raise Stopping("the server is shutting down")
            self.waiting.push(seq)
            seq.queued_s = self.clock()
            self._changed.notify_all()
            return len(self.waiting)

    def cancel(self, seq: Sequence) -> None:
        """The client went away: a waiting request leaves the queue now; a running one is dropped by the worker
        before its next step."""
        with self._changed:
            seq.cancelled = True
            if self.waiting.remove(seq):
                seq.status = Status.FINISHED
                seq.finish_reason = "cancelled"
            self._changed.notify_all()

    def stop(self) -> None:
        """Accept nothing new; the worker finishes what is queued and running, then `next_step` returns None."""
        with self._changed:
            self.stopping = True
            self._changed.notify_all()

    # ---- worker side ---------------------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(waiting, running) now."""
        with self._changed:
            return len(self.waiting), len(self.running)

    def next_step(self) -> Step | None:
        """The next step to run; blocks while there is none. None: stopping and nothing left."""
        with self._changed:
            while True:
                step, wait_s = self._schedule(self.clock())
                if step is not None:
                    return step
                if self.stopping and not self.running and not len(self.waiting):
                    return None
                self._changed.wait(timeout=wait_s)

    def finish(self, seq: Sequence, reason: str) -> None:
        """The worker ended a running sequence: it leaves the batch and frees its slot."""
        with self._changed:
            seq.status = Status.FINISHED
            seq.finish_reason = reason
            self.running.remove(seq)

    def _schedule(self, now: float) -> tuple[Step | None, float | None]:
        """(the step to run now, or None and how long to wait before asking again: None = until notified)."""
        if self.policy == "continuous":
            free = self.max_batch - len(self.running)
            if free > 0 and len(self.waiting):
                admitted = self._admit(free)
                if admitted:
                    return Step("prefill", admitted), None
            return (Step("decode", list(self.running)), None) if self.running else (None, None)

        if self.running:  # static and dynamic run a batch to completion
            return Step("decode", list(self.running)), None
        due_in = self._launch_due_in(now)
        if due_in is None:
            return None, None
        if due_in > 0 and not self.stopping:
            return None, due_in
        admitted = self._admit(self.max_batch)
        return (Step("prefill", admitted), None) if admitted else (None, None)

    def _launch_due_in(self, now: float) -> float | None:
        """Seconds until a static or dynamic batch may launch (0: now); None when nothing waits."""
        if not len(self.waiting):
            return None
        if len(self.waiting) >= self.max_batch:
            return 0.0
        if self.policy == "static":  # the queue has drained: nothing new for a whole window
            return max(0.0, self.waiting.newest_arrival() + self.wait_window_s - now)
        return max(0.0, self.waiting.oldest_arrival() + self.wait_window_s - now)  # dynamic

    def _admit(self, count: int) -> list[Sequence]:
        admitted = self.waiting.pop(count, Counter(seq.tenant for seq in self.running))
        for seq in admitted:
            seq.status = Status.RUNNING
        self.running.extend(admitted)
        return admitted
