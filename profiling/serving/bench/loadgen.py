"""Load generator for any OpenAI-compatible server (ours or vLLM's), measured as vLLM's `bench serve` measures.

What it sends: `num_requests` streaming `POST /v1/completions` requests with random prompts of an exact token
length and a fixed output length (`max_tokens` = `min_tokens` = output_tokens, `ignore_eos: true`).
When it sends them:
- open loop: arrivals at `request_rate` requests/s with gamma-distributed gaps (`burstiness` 1 = Poisson, < 1
  burstier, > 1 more regular; rate inf = all at once), rescaled so the last arrival is at num_requests / rate;
- closed loop: `max_concurrency` requests in flight at most (with rate inf: a fixed concurrency).
What it measures, client side, from the SSE stream with time.perf_counter (seconds):
    ttft_s   request sent -> first chunk carrying a token
    itl_s    every gap between consecutive token chunks
    e2e_s    request sent -> last token chunk
    tpot_s   (e2e - ttft) / (output_tokens - 1)   (profiling.metrics.tpot_s)
A run gives a per-request table, a dict with vLLM's `bench serve` result keys (JSON, to compare with vLLM runs),
and tidy rows for measurements.csv.

Each request names a tenant (header `X-Tenant` and the OpenAI `user` field), drawn from `tenants` weights, so a
"noisy tenant" mix can be generated.
"""
from __future__ import annotations

import asyncio
import codecs
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ...metrics import RUN_ROW, Measurements, output_tok_per_s, tpot_s

PERCENTILES = (50, 90, 95, 99)
REQUEST_COLUMNS = ["request_id", "tenant", "start_s", "ttft_s", "itl_s", "tpot_s", "e2e_s", "prompt_tokens",
                   "output_tokens", "status", "error", "success", "client_queue_s"]


@dataclass
class LoadSettings:
    """One load run. Times in seconds unless the name says ms; rates in requests/s."""

    num_requests: int = 32
    prompt_tokens: int = 128            # exact prompt length as the server tokenizes it
    output_tokens: int = 64             # fixed: max_tokens = min_tokens, ignore_eos
    request_rate: float = math.inf      # requests/s; inf sends all at once
    burstiness: float = 1.0             # gamma shape of the gaps; 1 = Poisson
    max_concurrency: int | None = None  # closed loop: at most this many in flight
    tenants: dict[str, float] = field(default_factory=lambda: {"default": 1.0})  # tenant -> share of requests
    slo_ttft_ms: float | None = None    # goodput SLOs, as vLLM's --goodput ttft:MS tpot:MS
    slo_tpot_ms: float | None = None
    seed: int = 0
    temperature: float = 0.0            # greedy
    warmup_requests: int = 1            # untimed, one at a time, before the run (vLLM's initial test request),
                                        # with prompts of their own
    endpoint: str = "/v1/completions"
    timeout_s: float = 600.0            # per request
    percentiles: tuple[float, ...] = PERCENTILES


@dataclass
class RequestRecord:
    """One request as the client saw it. Times in seconds; start_s is from the run's start."""

    request_id: int
    tenant: str
    start_s: float = 0.0
    ttft_s: float = float("nan")
    itl_s: list[float] = field(default_factory=list)
    tpot_s: float = float("nan")
    e2e_s: float = float("nan")
    prompt_tokens: int = 0
    output_tokens: int = 0
    status: int = 0                     # HTTP status; 0 when no response came
    error: str = ""
    success: bool = False
    client_queue_s: float = 0.0         # waiting for a concurrency slot in the client (closed loop)


# ---- arrivals and prompts -----------------------------------------------------------------------------------
def arrival_times(num_requests: int, request_rate: float, burstiness: float = 1.0, seed: int = 0) -> np.ndarray:
    """Send time of each request after the run's start, seconds (vLLM `get_request`'s schedule).

    Gaps are gamma(shape=burstiness, scale=1/(rate*burstiness)), so their mean is 1/rate and their coefficient
    of variation 1/sqrt(burstiness); the cumulative times are rescaled so the last is num_requests / rate.
    Rate inf gives all zeros; burstiness inf gives evenly spaced arrivals.
    """
    if num_requests <= 0:
        return np.zeros(0)
    if request_rate <= 0 or burstiness <= 0:
        raise ValueError(f"request_rate and burstiness must be positive (got {request_rate}, {burstiness})")
    if math.isinf(request_rate):
        return np.zeros(num_requests)
    if math.isinf(burstiness):
        gaps = np.full(num_requests, 1.0 / request_rate)
    else:
        rng = np.random.default_rng(seed)
        gaps = rng.gamma(shape=burstiness, scale=1.0 / (request_rate * burstiness), size=num_requests)
    times = np.cumsum(gaps)
    return times * (num_requests / request_rate) / times[-1]


def tenant_sequence(num_requests: int, tenants: dict[str, float], seed: int = 0) -> list[str]:
    """The tenant of each request, drawn with the given weights (reproducible from `seed`)."""
    names = list(tenants)
    weights = np.array([float(tenants[name]) for name in names])
    if len(names) == 1:
        return names * num_requests
    rng = np.random.default_rng(seed + 1)
    return [names[i] for i in rng.choice(len(names), size=num_requests, p=weights / weights.sum())]


def _fit_to_length(tokenizer, ids: list[int], target: int, pool: np.ndarray, rng, max_retry: int):
    """Decode, re-encode, truncate or top up from `pool` until the text re-encodes to `target` tokens.
    Returns the text, or None when `max_retry` rounds do not get there (vLLM's gen_prompt_decode_to_target_len)."""
    for _ in range(max_retry + 1):
        text = tokenizer.decode(ids)
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) == target:
            return text
        if len(ids) > target:
            ids = ids[:target]
        else:
            ids = ids + pool[rng.integers(0, len(pool), size=target - len(ids))].tolist()
    return None


def _round_trip_tokens(tokenizer, candidates: np.ndarray) -> np.ndarray:
    """The tokens whose text alone re-encodes to exactly that token (no partial UTF-8 bytes)."""
    texts = tokenizer.batch_decode([[int(t)] for t in candidates])
    encoded = tokenizer(texts, add_special_tokens=False).input_ids
    return np.array([t for t, ids in zip(candidates, encoded) if ids == [int(t)]])


def random_prompts(tokenizer, num_prompts: int, prompt_tokens: int, seed: int = 0,
                   max_retry: int = 10) -> list[tuple[str, int]]:
    """Random prompts of `prompt_tokens` tokens each, as the server counts them: [(text, tokens), ...].

    As vLLM's random dataset: a run of consecutive non-special token ids from a random offset, decoded to text,
    re-encoded, then truncated or topped up with random ids until the text re-encodes to the target length
    (the tokenizer's own special tokens, e.g. BOS, are counted in). Where that does not converge (byte-level
    tokenizers cut inside UTF-8 characters), the prompt is rebuilt from tokens that round-trip alone; a prompt
    that still cannot be made exact raises ValueError.
    """
    rng = np.random.default_rng(seed)
    target = prompt_tokens - int(tokenizer.num_special_tokens_to_add())
    if target < 1:
        raise ValueError(f"prompt_tokens={prompt_tokens} leaves no room next to the tokenizer's special tokens")
    special = set(tokenizer.all_special_ids)
    allowed = np.array([i for i in range(len(tokenizer)) if i not in special])
    safe = None
    offsets = rng.integers(0, len(allowed), size=num_prompts)
    prompts = []
    for index in range(num_prompts):
        ids = allowed[(offsets[index] + index + np.arange(target)) % len(allowed)].tolist()
        text = _fit_to_length(tokenizer, ids, target, allowed, rng, max_retry)
        if text is None:
            safe = _round_trip_tokens(tokenizer, allowed) if safe is None else safe
            ids = safe[(offsets[index] + index + np.arange(target)) % len(safe)].tolist()
            text = _fit_to_length(tokenizer, ids, target, safe, rng, max_retry)
        if text is None:
            raise ValueError(f"prompt {index}: no text re-encodes to exactly {target} tokens after {max_retry} tries")
        prompts.append((text, len(tokenizer(text).input_ids)))
    return prompts


# ---- the stream ---------------------------------------------------------------------------------------------
class SSEParser:
    """Splits a server-sent-event byte stream into the `data:` payloads of complete events.

    Events end with a blank line (\\n\\n, \\r\\n\\r\\n or \\r\\r); comment lines (": ping") are dropped; several
    `data:` lines in one event are joined with \\n. Bytes may be cut anywhere, even inside a UTF-8 character.
    """

    _EVENT_END = re.compile(r"\r\n\r\n|\n\n|\r\r")

    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""

    def feed(self, chunk: bytes) -> list[str]:
        """Payloads of the events completed by this chunk."""
        self._buffer += self._decoder.decode(chunk)
        *events, self._buffer = self._EVENT_END.split(self._buffer)
        return [payload for payload in map(self._payload, events) if payload is not None]

    def finish(self) -> list[str]:
        """Payload of a last event the stream closed without a blank line after."""
        self._buffer += self._decoder.decode(b"", final=True)
        rest, self._buffer = self._buffer, ""
        payload = self._payload(rest)
        return [] if payload is None else [payload]

    @staticmethod
    def _payload(event: str) -> str | None:
        data = []
        for line in re.split(r"\r\n|\n|\r", event):
            if line.startswith("data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(" ") else value)
        return "\n".join(data) if data else None


def request_payload(model_name: str, prompt: str, settings: LoadSettings, tenant: str,
                    output_tokens: int | None = None) -> dict:
    """The JSON body of one streaming completion request with a fixed output length (the settings' unless
    `output_tokens` is given)."""
    output_tokens = output_tokens or settings.output_tokens
    return {
        "model": model_name, "prompt": prompt, "stream": True, "stream_options": {"include_usage": True},
        "max_tokens": output_tokens, "min_tokens": output_tokens, "ignore_eos": True,
        "temperature": settings.temperature, "user": tenant,
    }


async def send_request(client, url: str, payload: dict, record: RequestRecord, headers: dict,
                       run_start: float) -> RequestRecord:
    """Send one streaming request and fill `record` from its stream (vLLM's completions request function).

    A chunk whose `choices` is non-empty counts as a token arrival; the final usage chunk gives the token counts.
    """
    sent = time.perf_counter()
    record.start_s = sent - run_start
    last = sent
    chunks = 0
    usage = {}
    try:
        async with client.stream("POST", url, json=payload, headers=headers) as response:
            record.status = response.status_code
            if response.status_code != 200:
                body = (await response.aread()).decode("utf-8", "replace")
                record.error = f"HTTP {response.status_code}: {body[:300]}"
                return record
            parser = SSEParser()

            def take(payloads):
                nonlocal last, chunks, usage
                for data in payloads:
                    if data.strip() == "[DONE]":
                        continue
                    message = json.loads(data)
                    if message.get("choices"):
                        now = time.perf_counter()
                        if chunks == 0:
                            record.ttft_s = now - sent
                        else:
                            record.itl_s.append(now - last)
                        last = now
                        chunks += 1
                    if message.get("usage"):
                        usage = message["usage"]
                    if message.get("error"):
                        record.error = str(message["error"])[:300]

            async for chunk in response.aiter_bytes():
                take(parser.feed(chunk))
            take(parser.finish())
    except Exception as error:  # connection refused, timeout, broken stream, bad JSON: the request failed
        record.error = f"{type(error).__name__}: {error}"[:300]
        return record
    if chunks == 0:
        record.error = record.error or "no token arrived in the stream"
        return record
    record.e2e_s = last - sent
    record.output_tokens = int(usage.get("completion_tokens") or chunks)
    record.prompt_tokens = int(usage.get("prompt_tokens") or record.prompt_tokens)
    record.tpot_s = tpot_s(record.e2e_s, record.ttft_s, record.output_tokens)
    record.success = not record.error
    return record


# ---- a run --------------------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    """A finished run: per-request records, the run's wall time (s) and vLLM-style result dict."""

    settings: LoadSettings
    records: list[RequestRecord]
    duration_s: float
    result: dict
    start_s: float = math.nan  # perf_counter when the timed requests began (after the warm-up requests)

    def requests_frame(self) -> pd.DataFrame:
        """One row per request; itl_s as a JSON list (seconds)."""
        rows = [{**asdict(r), "itl_s": json.dumps([round(gap, 6) for gap in r.itl_s])} for r in self.records]
        return pd.DataFrame(rows, columns=REQUEST_COLUMNS)

    def write(self, json_path=None, csv_path=None) -> None:
        """The vLLM-compatible result JSON and/or the per-request CSV."""
        if json_path is not None:
            Path(json_path).write_text(json.dumps(self.result, indent=2) + "\n")
        if csv_path is not None:
            self.requests_frame().to_csv(csv_path, index=False)

    def add_rows(self, rows: Measurements, variant: str, repeat: int, server: str, policy: str) -> None:
        """Tidy rows with knobs server, policy, request_rate, tenant (and step for itl_s)."""
        add_rows(rows, self.records, self.duration_s, self.settings, variant, repeat, server, policy)


def first_model(base_url: str, timeout_s: float = 10.0) -> str:
    """The id of the first model the server lists at GET /v1/models."""
    import httpx

    response = httpx.get(f"{base_url.rstrip('/')}/v1/models", timeout=timeout_s)
    response.raise_for_status()
    return response.json()["data"][0]["id"]


async def run_load_async(base_url: str, model_name: str, settings: LoadSettings, prompts: list[tuple[str, int]],
                         label: str = "", tokenizer_id: str = "", arrivals: list[float] | None = None,
                         output_tokens: list[int] | None = None) -> LoadResult:
    """Drive the server with one request per prompt on the settings' schedule; see the module docstring.
    `arrivals` (seconds after the start) and `output_tokens` per request replace the settings' schedule and
    output length (a scripted workload, e.g. long prompts arriving among running streams)."""
    import httpx

    if len(prompts) < settings.num_requests:
        raise ValueError(f"{settings.num_requests} requests need as many prompts (got {len(prompts)})")
    if settings.max_concurrency is not None and settings.max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1 (got {settings.max_concurrency})")
    spare = prompts[settings.num_requests:] or prompts  # warm-up prompts: the spare ones, so no timed prompt is
                                                        # already in a prefix cache
    url = base_url.rstrip("/") + settings.endpoint
    tenants = tenant_sequence(settings.num_requests, settings.tenants, settings.seed)
    if arrivals is None:
        arrivals = arrival_times(settings.num_requests, settings.request_rate, settings.burstiness, settings.seed)
    limits = httpx.Limits(max_connections=settings.max_concurrency, max_keepalive_connections=None)
    timeout = httpx.Timeout(settings.timeout_s, connect=30.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        for index in range(settings.warmup_requests):
            prompt, length = spare[index % len(spare)]
            warm = RequestRecord(request_id=-1, tenant=tenants[0], prompt_tokens=length)
            await send_request(client, url, request_payload(model_name, prompt, settings, warm.tenant), warm,
                               {"X-Tenant": warm.tenant}, time.perf_counter())
            if not warm.success:
                raise RuntimeError(f"warm-up request to {url} failed: {warm.error}")

        slots = asyncio.Semaphore(settings.max_concurrency) if settings.max_concurrency else None

        async def one(index: int, arrived: float, run_start: float) -> RequestRecord:
            prompt, length = prompts[index]
            record = RequestRecord(request_id=index, tenant=tenants[index], prompt_tokens=length)
            payload = request_payload(model_name, prompt, settings, record.tenant,
                                      output_tokens[index] if output_tokens else None)
            headers = {"X-Tenant": record.tenant, "X-Request-Id": f"load-{index}"}
            if slots is None:
                return await send_request(client, url, payload, record, headers, run_start)
            async with slots:
                record.client_queue_s = time.perf_counter() - arrived
                return await send_request(client, url, payload, record, headers, run_start)

        run_start = time.perf_counter()
        tasks = []
        for index, due in enumerate(arrivals):
            wait = run_start + due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(index, time.perf_counter(), run_start)))
        records = list(await asyncio.gather(*tasks))
        duration = time.perf_counter() - run_start
    result = bench_result(records, duration, settings, model_id=model_name, label=label, tokenizer_id=tokenizer_id)
    return LoadResult(settings=settings, records=records, duration_s=duration, result=result, start_s=run_start)


def run_load(base_url: str, model_name: str | None, settings: LoadSettings, tokenizer, label: str = "",
             tokenizer_id: str = "") -> LoadResult:
    """Synchronous run: build random prompts with `tokenizer`, drive the server, return the result.

    model_name None asks the server (first model of GET /v1/models).
    """
    model_name = model_name or first_model(base_url)
    needed = settings.num_requests + max(settings.warmup_requests, 1)
    prompts = random_prompts(tokenizer, needed, settings.prompt_tokens, settings.seed)
    return asyncio.run(run_load_async(base_url, model_name, settings, prompts, label=label,
                                      tokenizer_id=tokenizer_id))


# ---- results ------------------------------------------------------------------------------------------------
def is_good(record: RequestRecord, slo_ttft_ms: float | None, slo_tpot_ms: float | None) -> bool:
    """A completed request meeting every SLO given (ms). A TPOT of one-token outputs counts as 0, as in vLLM."""
    if not record.success:
        return False
    if slo_ttft_ms is not None and record.ttft_s * 1000 > slo_ttft_ms:
        return False
    tpot = 0.0 if math.isnan(record.tpot_s) else record.tpot_s
    return not (slo_tpot_ms is not None and tpot * 1000 > slo_tpot_ms)


def goodput_req_per_s(records: list[RequestRecord], duration_s: float, slo_ttft_ms: float | None,
                      slo_tpot_ms: float | None) -> float:
    """Completed requests meeting every SLO per second of the run."""
    good = sum(is_good(r, slo_ttft_ms, slo_tpot_ms) for r in records)
    return good / duration_s if duration_s > 0 else float("nan")


def _peaks(done: list[RequestRecord]) -> tuple[float, int]:
    """Most output tokens in one wall-clock second, and most requests in flight at once (vLLM's definitions)."""
    if not done:
        return 0.0, 0
    origin = min(r.start_s for r in done)
    buckets = np.zeros(int(np.ceil(max(r.start_s + r.e2e_s for r in done) - origin)) + 1)
    for r in done:
        token_times = r.start_s + r.ttft_s + np.concatenate([[0.0], np.cumsum(r.itl_s)])
        np.add.at(buckets, (token_times - origin).astype(int), 1)
    events = sorted([(r.start_s, 1) for r in done] + [(r.start_s + r.e2e_s, -1) for r in done])
    in_flight = peak = 0
    for _, step in events:
        in_flight += step
        peak = max(peak, in_flight)
    return float(buckets.max()), peak


def _stats(result: dict, name: str, values_s: list[float], percentiles) -> None:
    """mean/median/std/pNN of `values_s` into result as `<stat>_<name>_ms` (0 when empty, as vLLM)."""
    values = np.asarray(values_s or [0.0]) * 1000
    result[f"mean_{name}_ms"] = float(np.mean(values))
    result[f"median_{name}_ms"] = float(np.median(values))
    result[f"std_{name}_ms"] = float(np.std(values))
    for p in percentiles:
        word = str(int(p)) if int(p) == p else str(p)
        result[f"p{word}_{name}_ms"] = float(np.percentile(values, p))


def bench_result(records: list[RequestRecord], duration_s: float, settings: LoadSettings, model_id: str = "",
                 label: str = "", tokenizer_id: str = "") -> dict:
    """The run as vLLM's `bench serve` writes its result JSON (same keys, same definitions)."""
    done = [r for r in records if r.success]
    total_input = sum(r.prompt_tokens for r in done)
    total_output = sum(r.output_tokens for r in done)
    has_slo = settings.slo_ttft_ms is not None or settings.slo_tpot_ms is not None
    peak_tokens, peak_requests = _peaks(done)
    result = {
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": "openai",
        "backend": "openai",
        "label": label or None,
        "model_id": model_id,
        "tokenizer_id": tokenizer_id or model_id,
        "num_prompts": settings.num_requests,
        "request_rate": "inf" if math.isinf(settings.request_rate) else settings.request_rate,
        "burstiness": settings.burstiness,
        "max_concurrency": settings.max_concurrency,
        "duration": duration_s,
        "completed": len(done),
        "failed": len(records) - len(done),
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": len(done) / duration_s,
        "request_goodput": (goodput_req_per_s(records, duration_s, settings.slo_ttft_ms, settings.slo_tpot_ms)
                            if has_slo else None),
        "output_throughput": output_tok_per_s(total_output, duration_s),
        "total_token_throughput": (total_input + total_output) / duration_s,
        "max_output_tokens_per_s": peak_tokens,
        "max_concurrent_requests": peak_requests,
    }
    _stats(result, "ttft", [r.ttft_s for r in done], settings.percentiles)
    _stats(result, "tpot", [r.tpot_s for r in done if r.output_tokens > 1], settings.percentiles)
    _stats(result, "itl", [gap for r in done for gap in r.itl_s], settings.percentiles)
    _stats(result, "e2el", [r.e2e_s for r in done], settings.percentiles)
    if settings.max_concurrency is not None:
        _stats(result, "client_queue_time", [r.client_queue_s for r in done], settings.percentiles)
    return result


def add_rows(rows: Measurements, records: list[RequestRecord], duration_s: float, settings: LoadSettings,
             variant: str, repeat: int, server: str, policy: str) -> None:
    """Tidy rows of one run. Per completed request: ttft_s, tpot_s, e2e_s, output_tokens and one itl_s row per
    gap (knob `step` = 1, 2, …). Per run (request_id -1, tenant "all"): output_tok_per_s, request_per_s,
    goodput_req_per_s (the settings' SLOs; every completed request counts when none are set)."""
    knobs = {"server": server, "policy": policy, "request_rate": float(settings.request_rate)}
    for r in records:
        if not r.success:
            continue
        for metric, value in (("ttft_s", r.ttft_s), ("tpot_s", r.tpot_s), ("e2e_s", r.e2e_s),
                              ("output_tokens", r.output_tokens)):
            if not (isinstance(value, float) and math.isnan(value)):
                rows.add(variant, repeat, metric, value, request_id=r.request_id, tenant=r.tenant, **knobs)
        for step, gap in enumerate(r.itl_s, start=1):
            rows.add(variant, repeat, "itl_s", gap, request_id=r.request_id, tenant=r.tenant, step=step, **knobs)
    done = [r for r in records if r.success]
    run = {"request_id": RUN_ROW, "tenant": "all", **knobs}
    rows.add(variant, repeat, "output_tok_per_s", output_tok_per_s(sum(r.output_tokens for r in done), duration_s),
             **run)
    rows.add(variant, repeat, "request_per_s", len(done) / duration_s, **run)
    rows.add(variant, repeat, "goodput_req_per_s",
             goodput_req_per_s(records, duration_s, settings.slo_ttft_ms, settings.slo_tpot_ms), **run)


def main(argv=None) -> None:
    """python -m profiling.serving.bench.loadgen --base-url URL --tokenizer DIR [...]: one run, printed as vLLM prints."""
    import argparse

    from transformers import AutoTokenizer

    parser = argparse.ArgumentParser(prog="python -m profiling.serving.bench.loadgen", description=main.__doc__)
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--tokenizer", required=True, help="model directory or cached id (for the prompts)")
    parser.add_argument("--model", default=None, help="model name to request (default: the server's first)")
    parser.add_argument("--num-requests", type=int, default=32)
    parser.add_argument("--input-len", type=int, default=128, help="prompt tokens")
    parser.add_argument("--output-len", type=int, default=64, help="output tokens")
    parser.add_argument("--request-rate", type=float, default=math.inf, help="requests/s (default inf)")
    parser.add_argument("--burstiness", type=float, default=1.0)
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--tenants", default="default=1", help="tenant=weight,… e.g. noisy=3,quiet=1")
    parser.add_argument("--slo-ttft-ms", type=float, default=None)
    parser.add_argument("--slo-tpot-ms", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--result-json", default=None, help="write vLLM-style result JSON here")
    parser.add_argument("--requests-csv", default=None, help="write the per-request table here")
    args = parser.parse_args(argv)
    tenants = {name: float(weight) for name, weight in (pair.split("=") for pair in args.tenants.split(","))}
    settings = LoadSettings(num_requests=args.num_requests, prompt_tokens=args.input_len,
                            output_tokens=args.output_len, request_rate=args.request_rate,
                            burstiness=args.burstiness, max_concurrency=args.max_concurrency, tenants=tenants,
                            slo_ttft_ms=args.slo_ttft_ms, slo_tpot_ms=args.slo_tpot_ms, seed=args.seed)
    result = run_load(args.base_url, args.model, settings, AutoTokenizer.from_pretrained(args.tokenizer),
                      tokenizer_id=args.tokenizer)
    for key, value in result.result.items():
        print(f"{key:<32} {value:.2f}" if isinstance(value, float) else f"{key:<32} {value}")
    result.write(args.result_json, args.requests_csv)


if __name__ == "__main__":
    main()
