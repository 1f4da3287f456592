"""One request inside the server: what it asks for, and where it stands.

The HTTP front end creates a Sequence and hands it to the scheduler; from then on only the worker thread changes
it, except `cancelled`, which the front end sets when the client goes away. Tokens go back to the front end as
TokenEvents on the sequence's asyncio queue (`events`). Times are time.perf_counter() seconds.
"""
from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class TokenEvent:
    """What the worker tells the front end after a step: the new token (None when the sequence ended without
    one, e.g. cancelled or failed), and why it finished (None while it runs)."""

    token_id: int | None
    finish_reason: str | None = None   # "stop" (end of sequence), "length", "cancelled", "error"
    ready_s: float = 0.0               # perf_counter when the token was on the host
    step: int = -1                     # the worker step that made it
    error: str | None = None


@dataclass(eq=False)
class Sequence:
    """A request as the scheduler and the worker see it."""

    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    tenant: str = "default"
    min_tokens: int = 0               # end-of-sequence is not allowed before this many tokens
    ignore_eos: bool = False          # keep going after end-of-sequence, up to max_tokens
    temperature: float = 0.0          # 0 = greedy
    top_p: float = 1.0
    arrival_s: float = 0.0            # when the HTTP request arrived
    events: asyncio.Queue | None = None  # TokenEvents for the front end (None: nobody listens)

    status: Status = Status.WAITING
    output_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    cancelled: bool = False           # set by the front end (client gone, or a stop string was seen)
    queued_s: float | None = None
    admitted_s: float | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None

    # paged KV cache (block_manager.py): where its tokens live and how many of them have KV computed
    block_table: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0      # tokens (prompt, then output) whose keys and values are in the cache
    num_cached_tokens: int = 0        # of those, taken from the prefix cache at admission
    preemptions: int = 0              # times its blocks were taken back and its tokens recomputed

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def output_tokens(self) -> int:
        return len(self.output_ids)

    @property
    def all_token_ids(self) -> list[int]:
        """Prompt then output: every token whose KV the sequence needs (the newest output's once it is fed)."""
        return self.prompt_ids + self.output_ids

    @property
    def pending_tokens(self) -> int:
        """Tokens still to run through the model before the next token can be picked (1 while decoding)."""
        return self.prompt_tokens + self.output_tokens - self.num_computed_tokens

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED
