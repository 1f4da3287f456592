"""The scheduler: what the worker runs next, one step at a time (after nano-vllm's scheduler).

`waiting` holds requests not started (WaitingQueue: fifo or fair; preempted ones go first), `running` the admitted
ones. `next_step()` returns a Step (None once stopping with nothing left), blocking while there is nothing to do.
Admission: continuous whenever the batch has room (max_batch, and free KV blocks when paged); static and dynamic
only into an empty batch once the launch rule holds (settings.py), which then runs to completion.
A slab step is Step("prefill", admitted) or Step("decode", running). A paged step is (sequence, tokens) items in
one packed forward: with max_step_tokens 0 whole prompts run in steps of their own, else every decode goes first
(1 token each), then prompt chunks fill the budget (pending prompts, then new admissions). When a decode needs a
block and none is free, the newest running sequence is preempted: its blocks go back and it waits at the front of
the queue, to be recomputed (prompt and output so far). The front end calls `add` and `cancel` (asyncio thread),
the worker `next_step` and `finish`, under one lock.
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
    kind: str                 # "prefill", "decode" or (paged, with prompt chunks beside decodes) "mixed"
    sequences: list[Sequence]
    tokens: list[int] | None = None   # paged: tokens to run for each sequence (None: slab)


class Stopping(Exception):
    """The server is shutting down and accepts no new requests (the front end answers 503)."""


class Scheduler:
    def __init__(self, policy: str, max_batch: int, wait_window_s: float, waiting: WaitingQueue,
                 clock=time.perf_counter, blocks=None, max_step_tokens: int = 0):
        self.policy = policy
        self.blocks = blocks                      # BlockManager (paged) or None (slab)
        self.max_step_tokens = max_step_tokens    # paged: token budget of a step (0: prompts run whole, alone)
        self.preempted: list[Sequence] = []       # preempted since the worker last asked
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

    def cancel(self, seq: Sequence) -> bool:
        """The client went away: a waiting request leaves the queue now (returns True); a running one is dropped
        by the worker before its next step."""
        with self._changed:
            seq.cancelled = True
            if left := self.waiting.remove(seq):
                seq.status, seq.finish_reason = Status.FINISHED, "cancelled"
            self._changed.notify_all()
            return left

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

    def running_now(self) -> list[Sequence]:
        with self._changed:
            return list(self.running)

    def take_preempted(self) -> list[Sequence]:
        """The sequences preempted since the worker last asked."""
        with self._changed:
            preempted, self.preempted = self.preempted, []
            return preempted

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
            if self.blocks is not None:
                self.blocks.free(seq)

    def _schedule(self, now: float) -> tuple[Step | None, float | None]:
        """(the step to run now, or None and how long to wait before asking again: None = until notified)."""
        may_admit, wait_s = self._may_admit(now)
        if self.blocks is not None:
            return self._schedule_paged(may_admit, wait_s)
        admitted = self._admit(self.max_batch - len(self.running)) if may_admit else []
        if admitted:
            return Step("prefill", admitted), None
        return (Step("decode", list(self.running)), None) if self.running else (None, wait_s)

    def _may_admit(self, now: float) -> tuple[bool, float | None]:
        """(whether waiting requests may join now, else how long until a static or dynamic batch may launch)."""
        if self.policy == "continuous":
            return True, None
        if self.running or not len(self.waiting):  # static and dynamic run a batch to completion
            return False, None
        if len(self.waiting) >= self.max_batch or self.stopping:
            return True, None
        newest = self.policy == "static"  # static: the queue has drained, nothing new for a whole window
        arrival = self.waiting.newest_arrival() if newest else self.waiting.oldest_arrival()
        due_in = arrival + self.wait_window_s - now
        return (True, None) if due_in <= 0 else (False, due_in)

    def _admit(self, count: int) -> list[Sequence]:
        admitted = self.waiting.pop(count, Counter(seq.tenant for seq in self.running))
        for seq in admitted:
            seq.status = Status.RUNNING
        self.running.extend(admitted)
        return admitted

    # ---- paged KV cache ------------------------------------------------------------------------------------
    def _schedule_paged(self, may_admit: bool, wait_s: float | None) -> tuple[Step | None, float | None]:
        prompts = [seq for seq in self.running if seq.pending_tokens > 1]
        if not self.max_step_tokens:  # no chunking: prompts run whole, in a step of their own
            if may_admit:
                prompts += self._admit_paged(None)
            if prompts:
                return Step("prefill", prompts, [seq.pending_tokens for seq in prompts]), None
        decodes = self._decodes()
        prompts = [seq for seq in prompts if seq in self.running]  # a decode may have preempted one
        budget = self.max_step_tokens - len(decodes)
        if may_admit:
            prompts += self._admit_paged(budget - sum(seq.pending_tokens for seq in prompts))
        chunks = []
        for seq in prompts:
            if budget > 0:
                chunks.append((seq, min(seq.pending_tokens, budget)))
                budget -= chunks[-1][1]
        if not decodes and not chunks:
            return None, wait_s
        kind = "decode" if not chunks else "mixed" if decodes else "prefill"
        items = decodes + chunks
        return Step(kind, [seq for seq, _ in items], [tokens for _, tokens in items]), None

    def _decodes(self) -> list[tuple[Sequence, int]]:
        """One token for every decoding sequence, each with room for its KV (preempting the newest if needed)."""
        items = []
        for seq in [seq for seq in self.running if seq.pending_tokens == 1]:
            while seq in self.running and not self.blocks.can_append(seq):
                self._preempt(self.running[-1])
            if seq in self.running:
                self.blocks.append(seq)
                items.append((seq, 1))
        return items

    def _admit_paged(self, budget: int | None) -> list[Sequence]:
        """Admit waiting sequences while the batch, the KV blocks and the token budget (None: no limit) allow."""
        admitted = []
        while len(self.running) < self.max_batch and (budget is None or budget > 0):
            seq = self.waiting.peek(Counter(seq.tenant for seq in self.running))
            if seq is None or not self.blocks.can_allocate(seq.all_token_ids):
                break
            self._admit(1)
            self.blocks.allocate(seq)
            admitted.append(seq)
            if budget is not None:
                budget -= seq.pending_tokens
        return admitted

    def _preempt(self, seq: Sequence) -> None:
        """`seq` gives its blocks back and waits at the front of the queue, to be recomputed."""
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.status = Status.WAITING
        seq.preemptions += 1
        self.preempted.append(seq)
        self.waiting.push_front(seq)
