"""The load generator: arrival schedules, prompts, stream parsing, vLLM-style results, tidy rows, and one real run
against our server on the tiny model. The vLLM reference needs no vLLM here: only its absence is checked."""
from __future__ import annotations

import asyncio
import json
import math
import time

import httpx
import numpy as np
import pytest

from profiling.metrics import Measurements
from profiling.model import build_tiny_tokenizer
from profiling.serving.bench import loadgen, reference
from profiling.serving.bench.loadgen import (LoadSettings, RequestRecord, SSEParser, arrival_times, bench_result,
                                       random_prompts, tenant_sequence)


# ---- arrivals -----------------------------------------------------------------------------------------------
def gaps(times):
    return np.diff(np.concatenate([[0.0], times]))


def test_arrivals_mean_gap_is_one_over_rate():
    times = arrival_times(500, request_rate=4.0, burstiness=1.0, seed=0)
    assert times[-1] == pytest.approx(500 / 4.0)
    assert gaps(times).mean() == pytest.approx(0.25)
    assert np.all(np.diff(times) >= 0)


def test_burstiness_sets_the_spread_of_gaps():
    cv = {b: gaps(arrival_times(2000, 2.0, b, seed=1)).std() / 0.5 for b in (0.25, 1.0, 4.0)}
    assert cv[1.0] == pytest.approx(1.0, abs=0.1)            # Poisson: exponential gaps, CV 1
    assert cv[0.25] == pytest.approx(2.0, abs=0.3)           # CV = 1/sqrt(burstiness)
    assert cv[4.0] == pytest.approx(0.5, abs=0.1)
    assert np.allclose(gaps(arrival_times(10, 2.0, math.inf)), 0.5)


def test_arrivals_are_reproducible_and_inf_rate_sends_all_at_once():
    assert np.array_equal(arrival_times(20, 1.0, 1.0, seed=3), arrival_times(20, 1.0, 1.0, seed=3))
    assert not np.array_equal(arrival_times(20, 1.0, 1.0, seed=3), arrival_times(20, 1.0, 1.0, seed=4))
    assert np.array_equal(arrival_times(5, math.inf), np.zeros(5))
    with pytest.raises(ValueError):
        arrival_times(5, 0.0)


def test_tenant_mix_follows_weights():
    tenants = tenant_sequence(400, {"noisy": 3, "quiet": 1}, seed=0)
    assert 260 < tenants.count("noisy") < 340 and tenants.count("noisy") + tenants.count("quiet") == 400
    assert tenants == tenant_sequence(400, {"noisy": 3, "quiet": 1}, seed=0)
    assert tenant_sequence(3, {"only": 1}) == ["only"] * 3


# ---- prompts ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 7, 128])
def test_random_prompts_have_the_exact_token_length(length):
    tokenizer = build_tiny_tokenizer()
    prompts = random_prompts(tokenizer, 6, length, seed=0)
    assert [tokens for _, tokens in prompts] == [length] * 6
    assert all(len(tokenizer(text).input_ids) == length for text, _ in prompts)
    assert prompts == random_prompts(tokenizer, 6, length, seed=0)
    assert len({text for text, _ in prompts}) == 6


# ---- the stream ---------------------------------------------------------------------------------------------
def sse(*payloads, sep="\n\n") -> bytes:
    return "".join(f"data: {p}{sep}" for p in payloads).encode()


def test_sse_parser_survives_any_cut():
    events = [json.dumps({"choices": [{"text": "é中"}]}), json.dumps({"choices": [], "usage": {"x": 1}}), "[DONE]"]
    stream = b": ping\n\n" + sse(*events[:2], sep="\r\n\r\n") + sse(events[2])
    for cut in range(1, len(stream)):  # split the bytes in two anywhere, even inside a UTF-8 character
        parser = SSEParser()
        assert parser.feed(stream[:cut]) + parser.feed(stream[cut:]) + parser.finish() == events
    parser = SSEParser()
    assert parser.feed(b"data: {\"a\": 1}") == [] and parser.finish() == ['{"a": 1}']  # closed without blank line
    assert SSEParser().feed(b"event: x\ndata: a\ndata: b\n\n") == ["a\nb"]


def chunk(text):
    return json.dumps({"choices": [{"index": 0, "text": text, "finish_reason": None}]})


def mock_send(handler) -> RequestRecord:
    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            record = RequestRecord(request_id=0, tenant="t", prompt_tokens=5)
            payload = loadgen.request_payload("m", "hi", LoadSettings(output_tokens=3), "t")
            return await loadgen.send_request(client, "http://test/v1/completions", payload, record,
                                              {"X-Tenant": "t"}, 0.0)
    return asyncio.run(go())


def test_send_request_measures_the_stream():
    seen = {}

    def handler(request):
        seen.update(json.loads(request.content), tenant=request.headers["x-tenant"])
        usage = json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
        return httpx.Response(200, content=sse(chunk("a"), chunk("b"), chunk("c"), usage, "[DONE]"))

    record = mock_send(handler)
    assert seen["stream"] and seen["ignore_eos"] and seen["max_tokens"] == seen["min_tokens"] == 3
    assert seen["user"] == seen["tenant"] == "t"
    assert record.success and record.status == 200 and record.error == ""
    assert record.output_tokens == 3 and record.prompt_tokens == 5 and len(record.itl_s) == 2
    assert record.e2e_s == pytest.approx(record.ttft_s + sum(record.itl_s))
    assert record.tpot_s == pytest.approx((record.e2e_s - record.ttft_s) / 2)


def test_send_request_records_refusals():
    record = mock_send(lambda request: httpx.Response(429, headers={"Retry-After": "1"}, content=b"queue full"))
    assert not record.success and record.status == 429 and "queue full" in record.error
    record = mock_send(lambda request: httpx.Response(200, content=sse("[DONE]")))
    assert not record.success and "no token" in record.error


# ---- results ------------------------------------------------------------------------------------------------
def made_records():
    """Two completed requests and one refused, with round numbers (seconds)."""
    fast = RequestRecord(0, "quiet", start_s=0.0, ttft_s=0.1, itl_s=[0.05] * 4, e2e_s=0.3, prompt_tokens=10,
                         output_tokens=5, status=200, success=True)
    slow = RequestRecord(1, "noisy", start_s=0.5, ttft_s=0.9, itl_s=[0.2] * 4, e2e_s=1.7, prompt_tokens=10,
                         output_tokens=5, status=200, success=True)
    refused = RequestRecord(2, "noisy", start_s=0.6, status=429, error="HTTP 429")
    for record in (fast, slow):
        record.tpot_s = (record.e2e_s - record.ttft_s) / (record.output_tokens - 1)
    return [fast, slow, refused]


def test_bench_result_has_vllm_keys_and_definitions():
    settings = LoadSettings(num_requests=3, request_rate=math.inf, slo_ttft_ms=500, slo_tpot_ms=100)
    result = bench_result(made_records(), 2.0, settings, model_id="m")
    for key in ("duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
                "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
                "max_concurrency", "request_rate", "burstiness", "num_prompts", "max_output_tokens_per_s",
                "max_concurrent_requests"):
        assert key in result
    for metric in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std", "p50", "p90", "p95", "p99"):
            assert f"{stat}_{metric}_ms" in result
    assert result["request_rate"] == "inf" and result["max_concurrency"] is None
    assert (result["completed"], result["failed"]) == (2, 1)
    assert (result["total_input_tokens"], result["total_output_tokens"]) == (20, 10)
    assert result["request_throughput"] == pytest.approx(1.0)
    assert result["output_throughput"] == pytest.approx(5.0)
    assert result["total_token_throughput"] == pytest.approx(15.0)
    assert result["request_goodput"] == pytest.approx(0.5)   # only the fast one meets TTFT 500 ms, TPOT 100 ms
    assert result["mean_ttft_ms"] == pytest.approx(500.0) and result["median_ttft_ms"] == pytest.approx(500.0)
    assert result["mean_tpot_ms"] == pytest.approx(125.0)    # (50 + 200) / 2
    assert result["p50_itl_ms"] == pytest.approx(125.0) and result["mean_e2el_ms"] == pytest.approx(1000.0)
    assert result["max_concurrent_requests"] == 1            # [0, 0.3) and [0.5, 2.2) never overlap
    assert json.loads(json.dumps(result)) == result


def test_goodput_is_none_without_slos_and_counts_each_slo():
    records = made_records()
    assert bench_result(records, 2.0, LoadSettings())["request_goodput"] is None
    assert loadgen.goodput_req_per_s(records, 2.0, None, None) == pytest.approx(1.0)
    assert loadgen.goodput_req_per_s(records, 2.0, 1000, None) == pytest.approx(1.0)
    assert loadgen.goodput_req_per_s(records, 2.0, None, 60) == pytest.approx(0.5)
    assert loadgen.goodput_req_per_s(records, 2.0, 50, None) == 0.0


def test_tidy_rows_and_request_table():
    settings = LoadSettings(num_requests=3, request_rate=2.0, slo_ttft_ms=500)
    result = loadgen.LoadResult(settings, made_records(), 2.0, bench_result(made_records(), 2.0, settings))
    rows = Measurements("d4_serving")
    result.add_rows(rows, "continuous@2", 0, server="ours", policy="continuous")
    frame = rows.frame()
    assert {"server", "policy", "request_rate", "tenant", "step"} <= set(frame.columns)
    assert set(frame.metric) == {"ttft_s", "tpot_s", "e2e_s", "itl_s", "output_tokens", "output_tok_per_s",
                                 "request_per_s", "goodput_req_per_s"}
    itl = frame[frame.metric == "itl_s"]
    assert len(itl) == 8 and list(itl[itl.request_id == 1].step) == [1, 2, 3, 4]
    run = frame[frame.request_id == -1].set_index("metric").value
    assert run["output_tok_per_s"] == pytest.approx(5.0) and run["goodput_req_per_s"] == pytest.approx(0.5)
    assert (frame.request_rate == 2.0).all() and 2 not in set(frame.request_id)  # refused: no latency rows
    table = result.requests_frame()
    assert list(table.columns) == loadgen.REQUEST_COLUMNS and json.loads(table.itl_s[1]) == [0.2] * 4


# ---- the reference server without vLLM ---------------------------------------------------------------------
def test_reference_absent_says_how_to_enable(tmp_path):
    settings = reference.ReferenceSettings(venv=tmp_path / "nothing")
    available, reason = reference.reference_available(settings)
    assert not available and "make reference" in reason and "\n" not in reason
    with pytest.raises(reference.ReferenceServerError, match="make reference"):
        with reference.reference_server(tmp_path, settings):
            pass
    command = reference.server_command("models/m", reference.ReferenceSettings(), 8123)
    assert command[command.index("--model") + 1] == "models/m" and "--gpu-memory-utilization" in command
    assert "--enforce-eager" not in command
    assert "--enforce-eager" in reference.server_command("m", reference.ReferenceSettings(enforce_eager=True), 1)


# ---- a real run against our server --------------------------------------------------------------------------
def test_run_load_against_our_server(tiny):
    from profiling.serving.api.server import start_in_thread
    from profiling.serving.api.settings import ServerSettings

    model, tokenizer = tiny
    settings = ServerSettings(model="tiny-random", device="cpu", dtype="float32", threads=1, port=0,
                              policy="continuous", max_batch=4)
    load = LoadSettings(num_requests=4, prompt_tokens=16, output_tokens=8, tenants={"a": 1, "b": 1},
                        slo_ttft_ms=60_000, slo_tpot_ms=60_000)
    with start_in_thread(settings, model=model, tokenizer=tokenizer) as server:
        before = time.perf_counter()
        result = loadgen.run_load(server.base_url, None, load, tokenizer, label="ours")
        after = time.perf_counter()
    # the timed window starts after the warm-up request (a run's server-side spans are split by this window)
    assert before < result.start_s and result.start_s + result.duration_s <= after
    assert [r.error for r in result.records] == [""] * 4
    assert result.result["completed"] == 4 and result.result["total_output_tokens"] == 32
    assert all(r.output_tokens == 8 and r.prompt_tokens == 16 for r in result.records)
    # a chunk may carry several tokens, and on a busy machine a short stream's chunks can all arrive in one read
    assert all(0 < r.ttft_s <= r.e2e_s and len(r.itl_s) <= 7 for r in result.records), [
        (r.ttft_s, r.e2e_s, len(r.itl_s)) for r in result.records]
    assert result.result["request_goodput"] == pytest.approx(result.result["request_throughput"])
