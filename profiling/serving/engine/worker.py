"""The worker: the one thread that owns the model. Its loop, step after step:

    step = scheduler.next_step()          what to run (blocks while there is nothing)
    one forward                           paged: the packed step (paged_runner); slab: prefill(new) or
                                          decode(running) (step_engine); tokens to the host
    hand the tokens to the front end      one call_soon_threadsafe per step onto the asyncio loop
    finished sequences leave the batch    their KV (blocks, or slab rows) is freed at once

Every step and every request's part in it are recorded as spans (spans.py) and metrics (server_metrics.py).
Times are time.perf_counter() seconds.
"""
from __future__ import annotations

import asyncio
import threading
import time
import traceback

from .batch_state import BatchState
from .sequence import Sequence, Status, TokenEvent
from .step_engine import pick_tokens


class Worker:
    def __init__(self, engine, scheduler, metrics, spans, threads: int | None = None, runner=None):
        self.engine = engine
        self.runner = runner                  # PagedRunner (paged KV cache) or None (slab: engine's steps)
        self.threads = threads                # torch intra-op threads for this thread (None: leave as is)
        self.scheduler = scheduler
        self.metrics = metrics
        self.spans = spans
        self.state: BatchState | None = None  # the running batch's tensors
        self.steps = 0                        # steps run so far; the next step's index
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Start the worker thread; token events go to `loop` (the front end's asyncio loop)."""
        self.loop = loop
        self.thread = threading.Thread(target=self.run, name="worker", daemon=True)
        self.thread.start()

    def join(self, timeout_s: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout_s)

    def run(self) -> None:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        while (step := self.scheduler.next_step()) is not None:
            try:
                self._drop_cancelled()
                self._note_preempted()
                if step.tokens is not None:
                    self._paged(step)
                elif step.kind == "prefill":
                    self._prefill(step.sequences)
                elif self.state is not None:
                    self._decode()
            except Exception as error:  # a failed step fails its sequences, never the server
                traceback.print_exc()
                self._fail_all(step, f"{type(error).__name__}: {error}")
            self._update_gauges()
            self.spans.flush()

    # ---- the paged step: one packed forward ---------------------------------------------------------------
    def _paged(self, step) -> None:
        items = []
        for seq, tokens in zip(step.sequences, step.tokens, strict=True):
            if seq.finished:  # cancelled and dropped before this step
                continue
            if seq.cancelled:
                self._finish(seq, "cancelled")
            else:
                items.append((seq, tokens))
        if not items:
            return
        index, start = self._next_step_index(), time.perf_counter()
        for seq, tokens in items:
            if seq.admitted_s is None:
                seq.admitted_s = start
                self.metrics.queue_time.observe(start - seq.queued_s)
                self.spans.request(seq.request_id, "admitted", t=start, step=index,
                                   cached_tokens=seq.num_cached_tokens)
            if not seq.output_ids and seq.num_computed_tokens == seq.num_cached_tokens:
                self.spans.request(seq.request_id, "prefill_start", t=start, step=index)
        picked, logits = self.runner.forward(items)
        for seq, tokens in items:
            seq.num_computed_tokens += tokens
            self.scheduler.blocks.commit(seq)
        host_tokens = pick_tokens(logits, picked, self.engine.eos_token_ids).tolist()
        ready = time.perf_counter()
        for seq in picked:  # the first token ends the prefill; later ones are decode steps (or a recompute)
            if not seq.output_ids or self.spans.enabled:
                event = "decode_step" if seq.output_ids else "prefill_end"
                self.spans.request(seq.request_id, event, t=ready, step=index, start=start)
        prompt_tokens = sum(tokens for _, tokens in items if tokens > 1)
        self.metrics.prompt_tokens.inc(prompt_tokens)
        self._hand_over(picked, host_tokens, ready, index)
        pool, held = self.runner.pool, sum(seq.num_computed_tokens for seq in self.scheduler.running_now())
        self.spans.step(index, step.kind, start, time.perf_counter(), batch_size=len(items),
                        tokens_in=sum(tokens for _, tokens in items), prompt_tokens_in=prompt_tokens,
                        kv_bytes_reserved=self.scheduler.blocks.num_used * pool.bytes_per_block,
                        kv_bytes_held=held * pool.bytes_per_block // pool.block_size, **self._counts())

    # ---- the two slab steps ------------------------------------------------------------------------------------
    def _prefill(self, sequences: list[Sequence]) -> None:
        for seq in [s for s in sequences if s.cancelled]:
            self._finish(seq, "cancelled")
        sequences = [s for s in sequences if not s.cancelled]
        if not sequences:
            return
        step, start = self._next_step_index(), time.perf_counter()
        for seq in sequences:
            seq.admitted_s = start
            self.metrics.queue_time.observe(start - seq.queued_s)
            self.spans.request(seq.request_id, "admitted", t=start, step=step)
            self.spans.request(seq.request_id, "prefill_start", t=start, step=step)
        state, logits = self.engine.prefill(sequences)
        tokens_in = int(state.mask.numel())  # prompt tokens with padding
        tokens = self.engine.pick_tokens(logits, sequences)
        state.last_tokens = tokens
        host_tokens = tokens.tolist()
        ready = time.perf_counter()
        for seq in sequences:
            self.spans.request(seq.request_id, "prefill_end", t=ready, step=step)
        self.metrics.prompt_tokens.inc(sum(seq.prompt_tokens for seq in sequences))
        self._hand_over(sequences, host_tokens, ready, step)
        state.keep([row for row, seq in enumerate(state.sequences) if not seq.finished])
        if state.rows:
            self.state = state if self.state is None else self.state.merge(state)
        self.spans.step(step, "prefill", start, time.perf_counter(), batch_size=len(sequences),
                        tokens_in=tokens_in, prompt_tokens_in=tokens_in, **self._slab_kv(), **self._counts())

    def _decode(self) -> None:
        state = self.state
        step, start = self._next_step_index(), time.perf_counter()
        logits = self.engine.decode(state)
        tokens = self.engine.pick_tokens(logits, state.sequences)
        state.last_tokens = tokens
        host_tokens = tokens.tolist()
        ready = time.perf_counter()
        if self.spans.enabled:
            for seq in state.sequences:
                self.spans.request(seq.request_id, "decode_step", t=ready, step=step, start=start)
        batch_size, columns, kv = state.rows, state.columns, self._slab_kv()
        self._hand_over(state.sequences, host_tokens, ready, step)
        self._keep_unfinished()
        self.spans.step(step, "decode", start, time.perf_counter(), batch_size=batch_size, tokens_in=batch_size,
                        prompt_tokens_in=0, kv_columns=columns, **kv, **self._counts())

    def _slab_kv(self) -> dict:
        """Bytes the running batch's slabs reserve (padding and spare columns included) and the bytes of the
        tokens they hold."""
        if self.state is None:
            return {"kv_bytes_reserved": 0, "kv_bytes_held": 0}
        layers = self.state.cache.layers
        reserved = sum(layer.key_slab.nbytes + layer.value_slab.nbytes for layer in layers)
        slots = sum(layer.key_slab.shape[0] * layer.key_slab.shape[2] for layer in layers)
        return {"kv_bytes_reserved": reserved, "kv_bytes_held": reserved * int(self.state.mask.sum()) * len(layers)
                // max(slots, 1)}

    # ---- after a step ---------------------------------------------------------------------------------------
    def _hand_over(self, sequences: list[Sequence], tokens: list[int], ready: float, step: int) -> None:
        """Append each sequence's new token, end the finished ones, and send every token to the front end."""
        events = []
        eos = self.engine.eos_token_ids
        for seq, token in zip(sequences, tokens, strict=True):
            seq.output_ids.append(token)
            if seq.first_token_s is None:
                seq.first_token_s = ready
            seq.last_token_s = ready
            reason = None
            if token in eos and not seq.ignore_eos:
                reason = "stop"
            elif seq.output_tokens >= seq.max_tokens:
                reason = "length"
            if reason:
                self._finish(seq, reason, send=False)
            events.append((seq, TokenEvent(token, reason, ready, step)))
        self.metrics.count_tokens(len(sequences), ready)
        self._send(events)

    def _finish(self, seq: Sequence, reason: str, send: bool = True, error: str | None = None) -> None:
        if seq.status is Status.RUNNING:
            self.scheduler.finish(seq, reason)
        else:
            seq.status, seq.finish_reason = Status.FINISHED, reason
        self.metrics.observe_finished(seq)
        if reason in ("cancelled", "error"):
            self.spans.request(seq.request_id, reason, message=error)
        if send:
            self._send([(seq, TokenEvent(None, reason, time.perf_counter(), -1, error))])

    def _note_preempted(self) -> None:
        """Preemptions the scheduler made for this step: a span event and a count each."""
        for seq in self.scheduler.take_preempted():
            self.metrics.preemptions.inc()
            self.spans.request(seq.request_id, "preempted", recomputed_tokens=seq.prompt_tokens + seq.output_tokens)

    def _drop_cancelled(self) -> None:
        """Sequences whose client went away leave the batch before the next step (their slot is free now)."""
        if self.runner is not None:
            for seq in self.scheduler.running_now():
                if seq.cancelled and not seq.finished:
                    self._finish(seq, "cancelled")
            return
        if self.state is None:
            return
        for seq in self.state.sequences:
            if seq.cancelled and not seq.finished:
                self._finish(seq, "cancelled")
        self._keep_unfinished()

    def _keep_unfinished(self) -> None:
        state = self.state
        state.keep([row for row, seq in enumerate(state.sequences) if not seq.finished])
        if state.rows == 0:
            self.state = None

    def _fail_all(self, step, message: str) -> None:
        """A forward failed: every sequence of the step and of the running batch ends with an error."""
        running = self.scheduler.running_now() if self.runner is not None else (
            self.state.sequences if self.state is not None else [])
        failed = list(step.sequences) + running
        for seq in failed:
            if not seq.finished:
                self._finish(seq, "error", error=message)
        self.state = None

    def _send(self, events: list[tuple[Sequence, TokenEvent]]) -> None:
        """Hand token events to the asyncio loop in one call (each lands on its sequence's queue)."""
        if self.loop is None or not events:
            return
        try:
            self.loop.call_soon_threadsafe(_put_events, events)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    # ---- bookkeeping -----------------------------------------------------------------------------------------
    def _next_step_index(self) -> int:
        self.steps += 1
        return self.steps - 1

    def _counts(self) -> dict:
        waiting, running = self.scheduler.counts()
        return {"waiting": waiting, "running": running}

    def _update_gauges(self) -> None:
        waiting, running = self.scheduler.counts()
        self.metrics.queue_depth.set(waiting)
        self.metrics.running_batch.set(running)
        if self.scheduler.blocks is not None:
            self.metrics.observe_blocks(self.scheduler.blocks)


def _put_events(events: list[tuple[Sequence, TokenEvent]]) -> None:
    """Runs on the asyncio loop: put each event on its sequence's queue."""
    for seq, event in events:
        if seq.events is not None:
            seq.events.put_nowait(event)
