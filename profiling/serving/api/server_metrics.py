"""The server's Prometheus metrics (GET /metrics), in a registry of their own (so several servers in one process,
as in the tests, never collide). Seconds for times, like vLLM's `vllm:*_seconds` metrics.

    llm_queue_depth                      gauge      requests waiting
    llm_running_batch                    gauge      sequences in the running batch
    llm_generated_tokens_total           counter    output tokens made
    llm_prompt_tokens_total              counter    prompt tokens prefilled
    llm_generation_tokens_per_second     gauge      output tokens per second over the last 5 s
    llm_requests_total{status}           counter    finished requests by outcome (stop, length, cancelled, error,
                                                    rejected_429, rejected_400, rejected_503)
    llm_ttft_seconds                     histogram  arrival -> first token on the host
    llm_tpot_seconds                     histogram  (last token - first token) / (output tokens - 1)
    llm_queue_time_seconds               histogram  queued -> admitted into a step
    llm_e2e_seconds                      histogram  arrival -> last token on the host
    paged KV cache only:
    llm_kv_blocks_total / _used          gauge      blocks in the pool / owned by a sequence now
    llm_kv_cache_usage_ratio             gauge      used / total blocks (vLLM: kv_cache_usage_perc)
    llm_prefix_cache_queries_total       counter    prompt tokens looked up in the prefix cache
    llm_prefix_cache_hits_total          counter    of those, found there (their prefill was skipped)
    llm_prefix_cache_hit_rate            gauge      hits / queries since start
    llm_preemptions_total                counter    sequences that gave their blocks back, to be recomputed
"""
from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0, 120.0)
TPOT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
RATE_WINDOW_S = 5.0


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("llm_queue_depth", "Requests waiting in the queue", registry=r)
        self.running_batch = Gauge("llm_running_batch", "Sequences in the running batch", registry=r)
        self.generated_tokens = Counter("llm_generated_tokens", "Output tokens generated", registry=r)
        self.prompt_tokens = Counter("llm_prompt_tokens", "Prompt tokens prefilled", registry=r)
        self.requests = Counter("llm_requests", "Finished requests by outcome", ["status"], registry=r)
        self.ttft = Histogram("llm_ttft_seconds", "Arrival to first token on the host", buckets=LATENCY_BUCKETS_S,
                              registry=r)
        self.tpot = Histogram("llm_tpot_seconds", "Time per output token after the first", buckets=TPOT_BUCKETS_S,
                              registry=r)
        self.queue_time = Histogram("llm_queue_time_seconds", "Queued to admitted into a worker step",
                                    buckets=LATENCY_BUCKETS_S, registry=r)
        self.e2e = Histogram("llm_e2e_seconds", "Arrival to last token on the host", buckets=LATENCY_BUCKETS_S,
                             registry=r)
        self.kv_blocks_total = Gauge("llm_kv_blocks_total", "KV blocks in the pool", registry=r)
        self.kv_blocks_used = Gauge("llm_kv_blocks_used", "KV blocks owned by a sequence", registry=r)
        self.kv_usage = Gauge("llm_kv_cache_usage_ratio", "Used share of the KV blocks", registry=r)
        self.prefix_queries = Counter("llm_prefix_cache_queries", "Prompt tokens looked up in the prefix cache",
                                      registry=r)
        self.prefix_hits = Counter("llm_prefix_cache_hits", "Prompt tokens found in the prefix cache", registry=r)
        self.prefix_hit_rate = Gauge("llm_prefix_cache_hit_rate", "Prefix cache hits / queries since start",
                                     registry=r)
        self.preemptions = Counter("llm_preemptions", "Sequences preempted (blocks given back, recomputed)",
                                   registry=r)
        self._prefix_seen = (0, 0)  # (queried, hit) tokens already counted
        self._recent: deque[tuple[float, int]] = deque()  # (perf_counter, tokens) of recent steps
        self._lock = threading.Lock()
        self.tokens_per_s = Gauge("llm_generation_tokens_per_second",
                                  f"Output tokens per second over the last {RATE_WINDOW_S:g} s", registry=r)
        self.tokens_per_s.set_function(self._rate)

    def observe_blocks(self, blocks) -> None:
        """The block manager's state after a step (block_manager.py)."""
        self.kv_blocks_total.set(blocks.num_blocks)
        self.kv_blocks_used.set(blocks.num_used)
        self.kv_usage.set(blocks.num_used / blocks.num_blocks)
        queried, hit = self._prefix_seen
        self.prefix_queries.inc(blocks.queried_tokens - queried)
        self.prefix_hits.inc(blocks.hit_tokens - hit)
        self._prefix_seen = (blocks.queried_tokens, blocks.hit_tokens)
        if blocks.queried_tokens:
            self.prefix_hit_rate.set(blocks.hit_tokens / blocks.queried_tokens)

    def count_tokens(self, tokens: int, now: float) -> None:
        """A step made `tokens` output tokens at perf_counter `now`."""
        self.generated_tokens.inc(tokens)
        with self._lock:
            self._recent.append((now, tokens))

    def _rate(self) -> float:
        now = time.perf_counter()
        with self._lock:
            while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
                self._recent.popleft()
            return sum(tokens for _, tokens in self._recent) / RATE_WINDOW_S

    def observe_finished(self, seq) -> None:
        """Record a finished sequence's outcome and latencies."""
        self.requests.labels(status=seq.finish_reason or "unknown").inc()
        if seq.first_token_s is None:
            return
        self.ttft.observe(seq.first_token_s - seq.arrival_s)
        self.e2e.observe(seq.last_token_s - seq.arrival_s)
        if seq.output_tokens > 1:
            self.tpot.observe((seq.last_token_s - seq.first_token_s) / (seq.output_tokens - 1))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
