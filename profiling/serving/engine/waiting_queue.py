"""The waiting room: requests that arrived and wait for the worker, with a bounded depth and a tenant policy.

    fifo   one line; the oldest request is admitted first
    fair   one line per tenant; tenants take turns (round-robin), and a tenant that already runs `tenant_cap`
           sequences is skipped until one of them finishes, so one noisy tenant cannot fill the batch

Not thread-safe on its own: the Scheduler guards it with its lock.
"""
from __future__ import annotations

from collections import Counter, OrderedDict, deque


class QueueFull(Exception):
    """The queue already holds `depth` requests (the HTTP front end answers 429)."""


class WaitingQueue:
    def __init__(self, policy: str = "fifo", depth: int = 256, tenant_cap: int = 0):
        self.policy = policy
        self.depth = depth
        self.tenant_cap = tenant_cap if policy == "fair" else 0
        self._lines: OrderedDict[str, deque] = OrderedDict()  # tenant -> its waiting sequences (fifo: one line)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _line_of(self, seq) -> str:
        return seq.tenant if self.policy == "fair" else ""

    def push(self, seq) -> None:
        """Add a sequence at the back of its line; raise QueueFull when `depth` already wait."""
        if self._count >= self.depth:
            raise QueueFull(f"{self._count} requests already wait (queue depth {self.depth})")
        self._lines.setdefault(self._line_of(seq), deque()).append(seq)
        self._count += 1

    def push_front(self, seq) -> None:
        """Put a preempted sequence back at the front of its line (never refused: it was admitted once)."""
        self._lines.setdefault(self._line_of(seq), deque()).appendleft(seq)
        self._lines.move_to_end(self._line_of(seq), last=False)
        self._count += 1

    def peek(self, running: Counter):
        """The sequence `pop(1, running)` would return, left in place (None when none may be admitted)."""
        tenant = self._next_tenant(running)
        return None if tenant is None else self._lines[tenant][0]

    def remove(self, seq) -> bool:
        """Take a waiting sequence out (its client went away); False if it is not waiting."""
        line = self._lines.get(self._line_of(seq))
        if line is None or seq not in line:
            return False
        line.remove(seq)
        self._count -= 1
        return True

    def oldest_arrival(self) -> float | None:
        """Arrival time of the request that has waited longest (None when empty)."""
        return min((line[0].arrival_s for line in self._lines.values() if line), default=None)

    def newest_arrival(self) -> float | None:
        """Arrival time of the request that arrived last (None when empty)."""
        return max((line[-1].arrival_s for line in self._lines.values() if line), default=None)

    def pop(self, count: int, running: Counter) -> list:
        """Up to `count` sequences to admit now. `running` counts the running sequences per tenant (for the cap);
        fair: one from each tenant in turn, starting with the tenant after the last one served."""
        taken = []
        running = Counter(running)
        while len(taken) < count:
            tenant = self._next_tenant(running)
            if tenant is None:
                break
            seq = self._lines[tenant].popleft()
            self._count -= 1
            running[seq.tenant] += 1
            taken.append(seq)
            self._lines.move_to_end(tenant)  # its turn is over: it goes to the back of the round
        return taken

    def _next_tenant(self, running: Counter) -> str | None:
        for tenant, line in self._lines.items():
            if line and not (self.tenant_cap and running[line[0].tenant] >= self.tenant_cap):
                return tenant
        return None
