"""The OpenAI-compatible server, against a real uvicorn server on 127.0.0.1 with the tiny model.

Each test starts its own server in a background thread (port 0) and stops it at the end; the tiny model is built
once in memory. No timing assertions: only what was answered, in what order, and what the counters say.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
import torch

from profiling.engine import generate
from profiling.serving.engine import spans as spans_module
from profiling.serving.api.server import start_in_thread
from profiling.serving.api.settings import ServerSettings


@pytest.fixture(scope="module")
def tiny_model():
    from profiling.model import build_tiny_model

    return build_tiny_model(seed=0)


@pytest.fixture
def start(tiny_model, tmp_path):
    """start(**settings) -> a running server on the tiny model (stopped after the test); spans go to tmp_path. The
    server runs the handed-in model itself (linears aten), so hooks on it (slow_steps, an injected failure) act;
    a prepacked server works on its own copy (test_continuous_batching_equals_alone_token_for_token)."""
    running = []

    def _start(**overrides):
        fields = {"model": "tiny-random", "port": 0, "spans_out": str(tmp_path / f"spans{len(running)}.jsonl"),
                  "linears": "aten", **overrides}
        server = start_in_thread(ServerSettings(**fields), model=tiny_model[0], tokenizer=tiny_model[1])
        running.append(server)
        return server

    yield _start
    for server in running:
        server.stop()


@pytest.fixture
def slow_steps(tiny_model):
    """Every forward of the tiny model takes at least 10 ms more, so a long request surely outlasts the test's
    next few requests (it is cancelled when its client closes the stream)."""
    handle = tiny_model[0].register_forward_pre_hook(lambda module, args: time.sleep(0.01))
    yield
    handle.remove()


def alone_tokens(tiny_model, prompt: str, max_tokens: int) -> list[int]:
    """What the offline engine generates for `prompt` alone (greedy, fixed length)."""
    model, tokenizer = tiny_model
    ids = tokenizer(prompt, return_tensors="pt")
    return generate(model, ids["input_ids"], ids["attention_mask"], max_tokens).tokens[0].tolist()


def sse_payloads(response) -> list:
    """The JSON payloads of an SSE response (the final [DONE] as the string "[DONE]")."""
    payloads = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


def metric_samples(base_url: str) -> dict:
    """/metrics parsed by prometheus_client's parser: {(name, labels as sorted tuple): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base_url}/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def first_chunk(lines) -> str:
    """Read up to the first SSE data line of `lines` (an iterator that stays open: the stream goes on)."""
    for line in lines:
        if line.startswith("data: "):
            return line
    raise AssertionError("the stream ended without a chunk")


def wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


PROMPTS = ["Hello there", "The capital of France is", "a", "Once upon a time, in a land far away,", "xyz 123",
           "Streaming tokens one by one"]


# ---- endpoints ------------------------------------------------------------------------------------------------
def test_models_health_and_metrics_parse(start):
    server = start()
    assert httpx.get(f"{server.base_url}/health").json() == {"status": "ok"}
    models = httpx.get(f"{server.base_url}/v1/models").json()
    assert models["data"][0]["id"] == "tiny-random"
    httpx.post(f"{server.base_url}/v1/completions", json={"prompt": "hi", "max_tokens": 3}, timeout=30)
    samples = metric_samples(server.base_url)
    names = {name for name, _ in samples}
    for name in ("llm_queue_depth", "llm_running_batch", "llm_generated_tokens_total",
                 "llm_generation_tokens_per_second", "llm_ttft_seconds_count", "llm_tpot_seconds_count",
                 "llm_queue_time_seconds_count", "llm_e2e_seconds_count"):
        assert name in names, name
    assert samples[("llm_generated_tokens_total", ())] == 3


def test_a_stopped_server_lets_its_service_and_kv_pool_go(tiny_model, tmp_path):
    """A stopped server's service (its model copy, its KV pool: 512 MiB by default) is freed once nothing of the
    caller's holds it: D4 starts and stops a dozen servers in one process."""
    import gc
    import weakref

    server = start_in_thread(ServerSettings(model="tiny-random", port=0, linears="aten", kv_cache_mib=4,
                                            spans_out=str(tmp_path / "spans.jsonl")),
                             model=tiny_model[0], tokenizer=tiny_model[1])
    assert httpx.get(f"{server.base_url}/v1/models").json()["data"][0]["id"] == "tiny-random"
    reply = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30)
    assert reply.status_code == 200 and metric_samples(server.base_url)[("llm_generated_tokens_total", ())] == 2
    service = weakref.ref(server.service)
    server.stop()
    del server, reply
    gc.collect()
    assert service() is None


def test_completion_not_streaming_equals_engine(start, tiny_model):
    server = start()
    body = {"prompt": PROMPTS[1], "max_tokens": 12, "ignore_eos": True, "return_token_ids": True}
    reply = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=30).json()
    choice = reply["choices"][0]
    assert choice["token_ids"] == alone_tokens(tiny_model, PROMPTS[1], 12)
    assert choice["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 12
    assert reply["object"] == "text_completion" and reply["id"].startswith("cmpl-")


def test_completion_streaming_matches_not_streaming(start, tiny_model):
    server = start()
    body = {"prompt": PROMPTS[0], "max_tokens": 10, "ignore_eos": True, "return_token_ids": True,
            "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    usage = payloads[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 10
    chunks = payloads[:-2]
    tokens = [t for chunk in chunks for t in chunk["choices"][0]["token_ids"]]
    assert tokens == alone_tokens(tiny_model, PROMPTS[0], 10)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks[:-1])


def test_chat_streaming_and_not(start):
    server = start()
    body = {"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 6, "ignore_eos": True}
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=30).json()
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["usage"]["completion_tokens"] == 6
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json={**body, "stream": True},
                      timeout=30) as response:
        payloads = sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    assert payloads[0]["object"] == "chat.completion.chunk"
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(p["choices"][0]["delta"]["content"] for p in payloads[:-1])
    assert streamed == reply["choices"][0]["message"]["content"]


def test_stop_string_ends_the_text_before_it(start):
    server = start()
    url = f"{server.base_url}/v1/completions"

    def ask(prompt, **extra):
        body = {"prompt": prompt, "max_tokens": 30, "ignore_eos": True, **extra}
        return httpx.post(url, json=body, timeout=30)

    for prompt in PROMPTS:  # the tiny model writes random bytes: find a reply with a plain two-letter stop string
        text = ask(prompt).json()["choices"][0]["text"]
        stops = [text[i:i + 2] for i in range(1, len(text) - 2) if text[i:i + 2].isascii() and text[i:i + 2].isalnum()]
        if stops:
            break
    stop = stops[0]
    plain = ask(prompt, stop=[stop]).json()["choices"][0]
    assert plain["text"] == text[:text.index(stop)] and plain["finish_reason"] == "stop"
    chunks = [json.loads(line[len("data: "):]) for line in ask(prompt, stop=stop, stream=True).text.splitlines()
              if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == text[:text.index(stop)]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_openai_client_works_unchanged(start):
    openai = pytest.importorskip("openai")
    server = start()
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == ["tiny-random"]
    completion = client.completions.create(model="tiny-random", prompt="Hello", max_tokens=5,
                                           extra_body={"ignore_eos": True})
    assert completion.usage.completion_tokens == 5 and completion.choices[0].finish_reason == "length"
    chat = client.chat.completions.create(model="tiny-random", messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=4, extra_body={"ignore_eos": True})
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 4
    stream = client.chat.completions.create(model="tiny-random", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=4, stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == 4
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.choices[0].message.content


# ---- scheduling -------------------------------------------------------------------------------------------------
async def _staggered_requests(base_url: str, bodies: list[dict], gap_s: float) -> list[dict]:
    """Send the bodies one after another, `gap_s` apart, without waiting for the answers; return the answers."""
    async with httpx.AsyncClient(timeout=60) as client:
        async def send(index, body):
            await asyncio.sleep(index * gap_s)
            response = await client.post(f"{base_url}/v1/completions", json=body)
            return response.json()
        return await asyncio.gather(*[send(i, body) for i, body in enumerate(bodies)])


# KV cache set-ups of the server; each must give every request exactly its tokens alone
KV_SETUPS = {
    "slab": {"kv_cache": "slab"},
    "paged": {"kv_cache": "paged", "max_step_tokens": 0, "prefix_cache": "off"},
    "chunked": {"kv_cache": "paged", "max_step_tokens": 8, "prefix_cache": "off"},  # prompts span several steps
    "chunked_sdpa": {"kv_cache": "paged", "max_step_tokens": 8, "prefix_cache": "off",  # decodes by SDPA, not
                     "paged_attention": "sdpa"},                                        # our kernel
    "preempting": {"kv_cache": "paged", "kv_block_size": 4, "kv_blocks": 48, "max_step_tokens": 16},  # too few
    # our small-batch linears: steps of decodes alone run the fused C decoder layer over the pool
    "chunked_fused": {"kv_cache": "paged", "max_step_tokens": 8, "prefix_cache": "off", "linears": "small_batch"},
    "preempting_fused": {"kv_cache": "paged", "kv_block_size": 4, "kv_blocks": 48, "max_step_tokens": 16,
                         "linears": "small_batch"},
}


def assert_blocks_all_free(server) -> None:
    """After draining: every block is back on the free list and no block has a user."""
    blocks = server.service.blocks
    assert blocks.num_free + blocks.num_used == blocks.num_blocks
    assert blocks.num_free == blocks.num_blocks
    assert all(block.ref_count == 0 for block in blocks.blocks)


@pytest.mark.parametrize("setup", list(KV_SETUPS))
def test_continuous_batching_equals_alone_token_for_token(start, tiny_model, setup):
    server = start(policy="continuous", max_batch=4, **{"linears": "prepacked", **KV_SETUPS[setup]})
    if setup != "slab":  # which decode path the steps of decodes alone took
        fused = KV_SETUPS[setup].get("linears") == "small_batch"
        assert server.service.worker.runner.decoder == ("fused" if fused else "hf")
    lengths = [40, 25, 150, 10, 35, 90]  # 150 and 90 outgrow the spare KV columns (kv_slab.py)
    bodies = [{"prompt": prompt, "max_tokens": n, "ignore_eos": True, "return_token_ids": True}
              for prompt, n in zip(PROMPTS, lengths)]
    replies = asyncio.run(_staggered_requests(server.base_url, bodies, gap_s=0.01))
    for prompt, n, reply in zip(PROMPTS, lengths, replies):
        assert reply["choices"][0]["token_ids"] == alone_tokens(tiny_model, prompt, n), prompt
    samples = metric_samples(server.base_url)
    server.stop()
    steps = spans_module.step_table(server.settings.spans_out)
    assert steps.batch_size.max() <= 4
    joined = steps[(steps.phase == "prefill") & (steps.running > steps.batch_size)]
    if KV_SETUPS[setup].get("max_step_tokens"):  # prompt chunks ran beside decodes, within the step's budget
        joined = steps[steps.phase == "mixed"]
        assert steps.tokens_in.max() <= KV_SETUPS[setup]["max_step_tokens"]
    if setup.startswith("chunked"):
        assert (steps.prompt_tokens_in > 0).sum() > len(PROMPTS)  # some prompt took more than one step
    assert len(joined) > 0, "no request joined a running batch"
    if setup.startswith("preempting"):
        assert samples[("llm_preemptions_total", ())] > 0
        events = spans_module.load_spans(server.settings.spans_out)
        assert any(e.get("event") == "preempted" for e in events)
    if setup != "slab":
        assert_blocks_all_free(server)


def test_prefix_cache_reuses_shared_prompt_blocks(start, tiny_model):
    server = start(policy="continuous", max_batch=4, kv_block_size=4, max_step_tokens=16, prefix_cache="on")
    system = "You are a careful assistant who answers briefly. "
    prompts = [system + question for question in ("Why is the sky blue?", "Name a prime.", "Say hi.")]
    bodies = [{"prompt": p, "max_tokens": 12, "ignore_eos": True, "return_token_ids": True} for p in prompts]
    first = httpx.post(f"{server.base_url}/v1/completions", json=bodies[0], timeout=60).json()
    replies = [first] + asyncio.run(_staggered_requests(server.base_url, bodies[1:], gap_s=0.01))
    for prompt, reply in zip(prompts, replies):
        assert reply["choices"][0]["token_ids"] == alone_tokens(tiny_model, prompt, 12), prompt
    samples = metric_samples(server.base_url)
    server.stop()
    shared = len(tiny_model[1](system).input_ids) // 4 * 4
    assert samples[("llm_prefix_cache_hits_total", ())] >= 2 * (shared - 4)
    assert 0 < samples[("llm_prefix_cache_hit_rate", ())] < 1
    admitted = [e for e in spans_module.load_spans(server.settings.spans_out) if e.get("event") == "admitted"]
    assert [e["cached_tokens"] > 0 for e in admitted] == [False, True, True]
    assert_blocks_all_free(server)


def test_block_manager_shares_frees_and_evicts():
    from profiling.serving.engine.block_manager import BlockManager
    from profiling.serving.engine.sequence import Sequence

    blocks = BlockManager(num_blocks=6, block_size=4, prefix_caching=True)
    first = Sequence("a", list(range(10)), max_tokens=4)
    blocks.allocate(first)
    assert len(first.block_table) == 3 and first.num_cached_tokens == 0
    first.num_computed_tokens = 10
    blocks.commit(first)  # its two full blocks are now keyed
    second = Sequence("b", list(range(8)) + [99, 98, 97], max_tokens=4)
    blocks.allocate(second)
    assert second.block_table[:2] == first.block_table[:2] and second.num_cached_tokens == 8
    assert [blocks.blocks[i].ref_count for i in first.block_table] == [2, 2, 1]
    assert blocks.num_used == 4
    blocks.free(first)
    blocks.free(second)
    assert blocks.num_free == 6 and all(block.ref_count == 0 for block in blocks.blocks)
    third = Sequence("c", list(range(8)) + [5], max_tokens=4)  # freed blocks keep their keys until reused
    blocks.allocate(third)
    assert third.num_cached_tokens == 8
    exact = Sequence("d", list(range(8)), max_tokens=4)  # a whole-prompt hit still computes its last block
    assert blocks.can_allocate(exact.all_token_ids)
    blocks.allocate(exact)
    assert exact.num_cached_tokens == 4
    assert not blocks.can_allocate(list(range(100, 120)))  # 5 blocks, 3 free


@pytest.mark.parametrize("policy", ["static", "dynamic"])
def test_static_and_dynamic_batches_run_to_completion(start, tiny_model, policy):
    server = start(policy=policy, max_batch=2, wait_window_ms=300)
    bodies = [{"prompt": prompt, "max_tokens": 8, "ignore_eos": True, "return_token_ids": True}
              for prompt in PROMPTS[:3]]
    replies = asyncio.run(_staggered_requests(server.base_url, bodies, gap_s=0.0))
    for prompt, reply in zip(PROMPTS, replies):
        assert reply["choices"][0]["token_ids"] == alone_tokens(tiny_model, prompt, 8)
    server.stop()
    steps = spans_module.step_table(server.settings.spans_out)
    prefills = steps[steps.phase == "prefill"]
    assert prefills.batch_size.tolist() == [2, 1]  # a full batch at once, the rest after the window
    second = prefills.step.iloc[1]
    assert (steps[steps.step < second].phase == "decode").sum() == 7  # the first batch ran to completion first


def test_cancelled_stream_frees_its_batch_slot(start, slow_steps):
    server = start(policy="continuous", max_batch=1)
    long_body = {"prompt": "a long one", "max_tokens": 1500, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=long_body, timeout=30) as response:
        first_chunk(response.iter_lines())
    # the client closed the stream after one chunk; with one slot, this request can only run once that slot is free
    reply = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": "next", "max_tokens": 5,
                                                                  "ignore_eos": True}, timeout=60).json()
    assert reply["usage"]["completion_tokens"] == 5
    samples = metric_samples(server.base_url)
    assert samples[("llm_requests_total", (("status", "cancelled"),))] == 1
    assert samples[("llm_generated_tokens_total", ())] < 1500


def test_full_queue_answers_429_with_retry_after(start, slow_steps):
    server = start(policy="continuous", max_batch=1, queue_depth=1)
    url = f"{server.base_url}/v1/completions"
    long_body = {"prompt": "blocker", "max_tokens": 1500, "ignore_eos": True, "stream": True}
    result = {}

    def waiting_request():
        result["reply"] = httpx.post(url, json={"prompt": "waits", "max_tokens": 3, "ignore_eos": True}, timeout=60)

    with httpx.stream("POST", url, json=long_body, timeout=30) as response:
        lines = response.iter_lines()
        first_chunk(lines)  # the blocker runs
        waiter = threading.Thread(target=waiting_request)
        waiter.start()
        wait_for(lambda: metric_samples(server.base_url)[("llm_queue_depth", ())] == 1)
        rejected = httpx.post(url, json={"prompt": "one too many", "max_tokens": 3}, timeout=30)
        assert rejected.status_code == 429
        assert int(rejected.headers["retry-after"]) >= 1
        assert "error" in rejected.json()
    waiter.join(60)
    assert result["reply"].status_code == 200


def test_bad_input(start):
    server = start(max_tokens_limit=100)
    url = f"{server.base_url}/v1/completions"
    malformed = httpx.post(url, content=b'{"prompt": "unfinished', headers={"content-type": "application/json"})
    assert malformed.status_code == 422
    assert httpx.post(url, json={"max_tokens": 3}).status_code == 422  # no prompt
    too_long = httpx.post(url, json={"prompt": "x" * 3000, "max_tokens": 3})
    assert too_long.status_code == 400 and "2048" in too_long.json()["error"]["message"]
    assert httpx.post(url, json={"prompt": "hi", "max_tokens": 0}).status_code == 400
    assert httpx.post(url, json={"prompt": "hi", "max_tokens": -5}).status_code == 400
    oversized = httpx.post(url, json={"prompt": "hi", "max_tokens": 101})
    assert oversized.status_code == 400 and "100" in oversized.json()["error"]["message"]
    assert httpx.post(f"{server.base_url}/v1/chat/completions", json={"messages": "not a list"}).status_code == 422
    assert httpx.post(url, json={"prompt": "still fine", "max_tokens": 2}).status_code == 200


def test_overload_burst_loses_and_duplicates_nothing(start):
    server = start(policy="continuous", max_batch=2, queue_depth=4)
    body = {"prompt": "burst", "max_tokens": 8, "ignore_eos": True}

    async def burst():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*[client.post(f"{server.base_url}/v1/completions", json=body)
                                          for _ in range(30)])

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} <= {200, 429}
    accepted = [r.json() for r in responses if r.status_code == 200]
    assert len(accepted) >= 2 and any(r.status_code == 429 for r in responses)
    assert len({reply["id"] for reply in accepted}) == len(accepted)
    assert all(reply["usage"]["completion_tokens"] == 8 for reply in accepted)
    samples = metric_samples(server.base_url)
    assert samples[("llm_requests_total", (("status", "length"),))] == len(accepted)
    assert samples[("llm_generated_tokens_total", ())] == 8 * len(accepted)


def test_a_failed_step_fails_its_requests_not_the_server(start, tiny_model):
    server = start()
    url = f"{server.base_url}/v1/completions"

    def fail_once(module, args):
        handle.remove()
        raise RuntimeError("injected failure")

    handle = tiny_model[0].register_forward_pre_hook(fail_once)
    failed = httpx.post(url, json={"prompt": "boom", "max_tokens": 3}, timeout=30)
    assert failed.status_code == 500 and "injected failure" in failed.json()["error"]["message"]
    assert httpx.post(url, json={"prompt": "fine", "max_tokens": 3}, timeout=30).status_code == 200


# ---- tenants ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tenant_policy, expected", [
    ("fifo", ["noisy", "noisy", "noisy", "quiet", "quiet"]),
    ("fair", ["noisy", "quiet", "noisy", "quiet", "noisy"]),
])
def test_tenant_admission_order(start, slow_steps, tenant_policy, expected):
    server = start(policy="continuous", max_batch=1, tenant_policy=tenant_policy)
    url = f"{server.base_url}/v1/completions"
    threads = []
    with httpx.stream("POST", url, json={"prompt": "blocker", "max_tokens": 1500, "ignore_eos": True,
                                         "stream": True}, headers={"X-Tenant": "blocker"}, timeout=30) as response:
        lines = response.iter_lines()
        first_chunk(lines)
        for depth, tenant in enumerate(["noisy", "noisy", "noisy", "quiet", "quiet"], start=1):
            body = {"prompt": tenant, "max_tokens": 2, "user": tenant}  # the tenant from the OpenAI `user` field
            thread = threading.Thread(target=httpx.post, args=(url,), kwargs={"json": body, "timeout": 60})
            thread.start()
            threads.append(thread)
            wait_for(lambda: metric_samples(server.base_url)[("llm_queue_depth", ())] == depth)
    for thread in threads:
        thread.join(60)
    server.stop()
    events = spans_module.load_spans(server.settings.spans_out)
    tenant_of = {e["request_id"]: e["tenant"] for e in events if e.get("event") == "arrived"}
    admitted = [tenant_of[e["request_id"]] for e in events if e.get("event") == "admitted"]
    assert admitted == ["blocker", *expected]


def test_fair_queue_round_robin_and_cap():
    from collections import Counter

    from profiling.serving.engine.sequence import Sequence
    from profiling.serving.engine.waiting_queue import QueueFull, WaitingQueue

    def fill(queue):
        for i, tenant in enumerate(["a", "a", "a", "b", "b"]):
            queue.push(Sequence(f"{tenant}{i}", [1], 1, tenant=tenant, arrival_s=float(i)))

    fifo, fair = WaitingQueue("fifo", depth=5), WaitingQueue("fair", depth=5)
    fill(fifo)
    fill(fair)
    assert [s.tenant for s in fifo.pop(5, Counter())] == ["a", "a", "a", "b", "b"]
    assert [s.tenant for s in fair.pop(5, Counter())] == ["a", "b", "a", "b", "a"]
    capped = WaitingQueue("fair", depth=5, tenant_cap=1)
    fill(capped)
    assert [s.tenant for s in capped.pop(5, Counter({"a": 1}))] == ["b"]
    with pytest.raises(QueueFull):
        fill(fifo)
        fifo.push(Sequence("extra", [1], 1))


def test_min_tokens_masks_end_of_sequence(tiny_model):
    from profiling.serving.engine.sequence import Sequence
    from profiling.serving.engine.step_engine import StepEngine

    model, tokenizer = tiny_model
    engine = StepEngine(model, tokenizer.pad_token_id, [tokenizer.eos_token_id])
    logits = torch.zeros(2, len(tokenizer))
    logits[:, tokenizer.eos_token_id] = 10.0
    rows = [Sequence("r0", [1], 5, min_tokens=2), Sequence("r1", [1], 5)]
    tokens = engine.pick_tokens(logits, rows).tolist()
    assert tokens[0] != tokenizer.eos_token_id and tokens[1] == tokenizer.eos_token_id


# ---- spans ----------------------------------------------------------------------------------------------------------
def test_spans_give_a_chrome_trace_and_stage_durations(start, tmp_path):
    server = start(policy="continuous", max_batch=4)
    bodies = [{"prompt": p, "max_tokens": 6, "ignore_eos": True, "stream": True} for p in PROMPTS[:3]]

    async def streams():
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(body):
                async with client.stream("POST", f"{server.base_url}/v1/completions", json=body) as response:
                    return [line async for line in response.aiter_lines() if line.startswith("data: ")]
            return await asyncio.gather(*[one(b) for b in bodies])

    asyncio.run(streams())
    server.stop()
    trace_path = spans_module.write_chrome_trace(server.settings.spans_out, tmp_path / "serving.json.gz")
    import gzip

    trace = json.load(gzip.open(trace_path, "rt"))["traceEvents"]
    tids = {e["tid"] for e in trace if e.get("ph") == "X"}
    assert tids == {0, 1, 2, 3}  # the worker's steps + one track per request
    names = {e["name"] for e in trace if e.get("tid") == 1}
    assert {"request", "queued", "prefill", "decode", "chunk_sent", "done"} <= names
    stages = spans_module.stage_durations(server.settings.spans_out)
    assert len(stages) == 3 and (stages.status == "done").all()
    assert (stages.output_tokens == 6).all()
    for column in ("http_s", "queue_wait_s", "prefill_s", "decode_s", "stream_s", "ttft_s", "e2e_s"):
        assert (stages[column] >= 0).all(), column
    assert (stages.e2e_s >= stages.ttft_s).all()


# ---- the command line --------------------------------------------------------------------------------------------
def test_cli_flags_round_trip_settings():
    import argparse

    from profiling.serving.api.cli import add_arguments, settings_from_args

    settings = ServerSettings(model="tiny-random", port=0, policy="dynamic", max_batch=3, wait_window_ms=5.0,
                              queue_depth=7, tenant_policy="fair", tenant_cap=2, spans_out="s.jsonl")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert settings_from_args(parser.parse_args(settings.cli_args())) == settings


def test_sigterm_drains_in_flight_requests(tmp_path):
    import signal
    import subprocess
    import sys

    from profiling.model import provision

    model_dir = provision("tiny-random", tmp_path / "tiny-random")
    process = subprocess.Popen([sys.executable, "-m", "profiling.serving.api.cli", "--model", str(model_dir),
                                "--port", "0", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving "), line + process.stderr.read()
        base_url = line.split(" on ")[1].strip()
        body = {"prompt": "drain me", "max_tokens": 300, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=60) as response:
            lines = response.iter_lines()
            first_chunk(lines)
            process.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2][len("data: "):])["usage"]["completion_tokens"] == 300
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("quantize", ["int8_weight_only", "int8_dynamic"])
def test_server_serves_with_quantised_linears(start, tiny_model, quantize):
    from profiling import quantize as quantizers

    server = start(quantize=quantize, max_step_tokens=8)
    assert not any(isinstance(m, torch.nn.Linear) for m in server.service.model.modules())  # all swapped
    reply = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": PROMPTS[3], "max_tokens": 6,
                                                                  "ignore_eos": True, "return_token_ids": True},
                       timeout=60).json()
    if quantize == "int8_weight_only":  # exact against the same quantised model alone
        import copy

        model = copy.deepcopy(tiny_model[0])
        quantizers.quantize_int8_weight_only(model, torch.float32)
        assert reply["choices"][0]["token_ids"] == alone_tokens((model, tiny_model[1]), PROMPTS[3], 6)
    assert len(reply["choices"][0]["token_ids"]) == 6
    assert any(isinstance(m, torch.nn.Linear) for m in tiny_model[0].modules())  # the shared model is untouched


# ---- paths of the front end ------------------------------------------------------------------------------------
def test_requests_the_server_cannot_serve_answer_400_naming_the_field(start):
    server = start()
    url = f"{server.base_url}/v1/completions"
    context = server.service.context_tokens
    cases = [({"prompt": "hi", "max_tokens": 4, "n": 2}, "n"),
             ({"prompt": "hi", "max_tokens": 4, "min_tokens": 5}, "min_tokens"),
             ({"prompt": "hi", "max_tokens": 4, "min_tokens": -1}, "min_tokens"),
             ({"prompt": "hi", "max_tokens": 4, "temperature": -0.5}, "temperature"),
             ({"prompt": "", "max_tokens": 4}, "prompt"),
             ({"prompt": ["one", "two"], "max_tokens": 4}, "prompt"),
             ({"prompt": [5] * (context - 10), "max_tokens": 20}, "max_tokens")]
    for body, param in cases:
        reply = httpx.post(url, json=body, timeout=30)
        assert reply.status_code == 400, (body, reply.text)
        assert reply.json()["error"]["param"] == param, (body, reply.text)
    assert httpx.post(url, json={"prompt": "still fine", "max_tokens": 2}, timeout=30).status_code == 200


def test_draining_server_answers_503_and_finishes_what_runs(start, slow_steps):
    server = start(max_batch=2)
    url = f"{server.base_url}/v1/completions"
    result = {}

    def running_request():
        result["reply"] = httpx.post(url, json={"prompt": "in flight", "max_tokens": 20, "ignore_eos": True},
                                     timeout=60)

    runner = threading.Thread(target=running_request)
    runner.start()
    wait_for(lambda: metric_samples(server.base_url)[("llm_running_batch", ())] == 1)
    server.service.scheduler.stop()  # what SIGTERM does first: no new requests, the running ones drain
    refused = httpx.post(url, json={"prompt": "too late", "max_tokens": 2}, timeout=30)
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "service_unavailable"
    runner.join(60)
    assert result["reply"].status_code == 200 and result["reply"].json()["usage"]["completion_tokens"] == 20


def test_a_queued_request_whose_client_leaves_never_runs(start, slow_steps):
    server = start(max_batch=1)
    url = f"{server.base_url}/v1/completions"
    with httpx.stream("POST", url, json={"prompt": "blocker", "max_tokens": 1500, "ignore_eos": True,
                                         "stream": True}, timeout=30) as blocker:
        lines = blocker.iter_lines()  # kept: the blocker's stream stays open
        first_chunk(lines)
        with httpx.stream("POST", url, json={"prompt": "waits", "max_tokens": 5, "stream": True}, timeout=30):
            wait_for(lambda: metric_samples(server.base_url)[("llm_queue_depth", ())] == 1)
        wait_for(lambda: metric_samples(server.base_url)[("llm_queue_depth", ())] == 0)
        wait_for(lambda: metric_samples(server.base_url)[("llm_requests_total", (("status", "cancelled"),))] == 1)
    server.stop()
    events = spans_module.load_spans(server.settings.spans_out)
    admitted = {e["request_id"] for e in events if e.get("event") == "admitted"}
    assert len(admitted) == 1  # only the blocker ever ran


def test_a_non_streaming_client_that_leaves_cancels_its_request(start, slow_steps):
    server = start()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/completions", json={"prompt": "long", "max_tokens": 1500,
                                                              "ignore_eos": True}, timeout=1.0)
    wait_for(lambda: metric_samples(server.base_url)[("llm_requests_total", (("status", "cancelled"),))] == 1)
    assert metric_samples(server.base_url)[("llm_generated_tokens_total", ())] < 1500


def test_a_step_failing_mid_stream_ends_the_stream_with_an_error_chunk(start, tiny_model):
    server = start(linears="prepacked")  # a model of its own: no other test's server thread counts as a call
    calls = {"n": 0}

    def fail_on_fourth(module, args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("injected failure")

    handle = server.service.model.register_forward_pre_hook(fail_on_fourth)
    try:
        with httpx.stream("POST", f"{server.base_url}/v1/completions", timeout=30,
                          json={"prompt": "boom", "max_tokens": 10, "ignore_eos": True, "stream": True,
                                "return_token_ids": True}) as reply:
            payloads = sse_payloads(reply)
    finally:
        handle.remove()
    chunks = [p for p in payloads if isinstance(p, dict) and p.get("choices")]
    # three steps made tokens, the fourth failed; a busy client may get several tokens in one chunk, the last of
    # them even with the error: every one is sent before the error chunk
    assert sum(len(chunk["choices"][0]["token_ids"]) for chunk in chunks) == 3
    assert "injected failure" in payloads[-2]["error"]["message"] and payloads[-1] == "[DONE]"


def test_tokens_made_before_a_failure_are_sent_before_the_error_chunk(tiny_model):
    """A busy front end takes the last tokens and the failure in one batch of events: the tokens still go out, in a
    chunk of their own, then the error chunk and [DONE]."""
    from types import SimpleNamespace

    from profiling.serving.api import protocol
    from profiling.serving.api.app import _Reply
    from profiling.serving.engine.sequence import Sequence, TokenEvent

    async def stream_all() -> list[str]:
        seq = Sequence("r-1", [5, 6], max_tokens=10, events=asyncio.Queue())
        for token in (7, 8, 9):
            seq.events.put_nowait(TokenEvent(token))
        seq.events.put_nowait(TokenEvent(None, "error", error="injected failure"))
        service = SimpleNamespace(tokenizer=tiny_model[1], settings=SimpleNamespace(name="tiny-random"),
                                  spans=SimpleNamespace(request=lambda *args, **kwargs: None))
        body = protocol.CompletionRequest(prompt="x", max_tokens=10, stream=True, return_token_ids=True)
        return [event async for event in _Reply(service, seq, body, chat=False).stream()]

    events = asyncio.run(stream_all())
    assert events[-1] == "data: [DONE]\n\n" and len(events) == 3
    tokens, error = (json.loads(event.removeprefix("data: ")) for event in events[:2])
    assert tokens["choices"][0]["token_ids"] == [7, 8, 9] and tokens["choices"][0]["finish_reason"] is None
    assert tokens["choices"][0]["text"] == tiny_model[1].decode([7, 8, 9])
    assert "injected failure" in error["error"]["message"]


def test_end_of_sequence_ends_with_stop(start, tiny_model):
    server = start()
    eos = tiny_model[1].eos_token_id

    def prefer_eos(module, args, output):
        output.logits[..., eos] += 1e4

    handle = tiny_model[0].register_forward_hook(prefer_eos)
    try:
        reply = httpx.post(f"{server.base_url}/v1/completions", timeout=30,
                           json={"prompt": "stop soon", "max_tokens": 10, "min_tokens": 2,
                                 "return_token_ids": True}).json()
    finally:
        handle.remove()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["token_ids"][-1] == eos and eos not in choice["token_ids"][:-1]
    assert len(choice["token_ids"]) == 3  # two tokens below min_tokens, then end of sequence


def test_tenant_cap_holds_through_the_server(start, slow_steps):
    server = start(max_batch=4, tenant_policy="fair", tenant_cap=1)
    url = f"{server.base_url}/v1/completions"
    bodies = [{"prompt": f"noisy {i}", "max_tokens": 6, "ignore_eos": True, "user": "noisy"} for i in range(3)]
    bodies.append({"prompt": "quiet", "max_tokens": 6, "ignore_eos": True, "user": "quiet"})
    replies = asyncio.run(_staggered_requests(server.base_url, bodies, gap_s=0.0))
    assert all(r["usage"]["completion_tokens"] == 6 for r in replies)
    server.stop()
    steps = spans_module.step_table(server.settings.spans_out)
    assert steps.running.max() <= 2  # one noisy and one quiet at most, though the batch had room for four


def test_streamed_text_is_the_decoded_token_ids(start, tiny_model):
    server = start()
    body = {"prompt": PROMPTS[3], "max_tokens": 24, "ignore_eos": True}
    ids = httpx.post(f"{server.base_url}/v1/completions", json={**body, "return_token_ids": True},
                     timeout=30).json()["choices"][0]["token_ids"]
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json={**body, "stream": True},
                      timeout=30) as reply:
        text = "".join(p["choices"][0]["text"] for p in sse_payloads(reply) if isinstance(p, dict) and p["choices"])
    assert text == tiny_model[1].decode(ids)


def test_scheduler_preempts_the_newest_sequence_and_requeues_it_first():
    from profiling.serving.engine.block_manager import BlockManager
    from profiling.serving.engine.scheduler import Scheduler
    from profiling.serving.engine.sequence import Sequence, Status
    from profiling.serving.engine.waiting_queue import WaitingQueue

    blocks = BlockManager(num_blocks=4, block_size=2, prefix_caching=False)
    scheduler = Scheduler("continuous", 8, 0.0, WaitingQueue(), blocks=blocks, max_step_tokens=16)
    old, new, later = Sequence("old", [1, 2, 3], 8), Sequence("new", [4, 5, 6], 8), Sequence("later", [7], 4)
    for seq in (old, new, later):
        scheduler.add(seq)

    def run(step):  # what the worker does: the KV of the step's tokens is computed, each gets a next token
        for seq, tokens in zip(step.sequences, step.tokens):
            seq.num_computed_tokens += tokens
            seq.output_ids.append(9)

    first = scheduler.next_step()  # two 3-token prompts take the 4 blocks; `later` does not fit
    assert (first.kind, first.sequences, first.tokens) == ("prefill", [old, new], [3, 3])
    run(first)
    second = scheduler.next_step()  # the 4th token of each still has a slot in its 2nd block
    assert (second.kind, second.sequences) == ("decode", [old, new])
    assert scheduler.take_preempted() == []
    run(second)
    third = scheduler.next_step()  # old's 5th token needs a block: the newest sequence gives its blocks back
    assert third.sequences == [old] and len(old.block_table) == 3
    assert scheduler.take_preempted() == [new]
    assert new.status is Status.WAITING and new.num_computed_tokens == 0 and new.block_table == []
    assert scheduler.waiting.pop(2, {}) == [new, later]  # the preempted sequence waits at the front
