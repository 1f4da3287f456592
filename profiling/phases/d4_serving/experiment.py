"""D4 serving: what does a real inference service look like, and what makes one fast?

Every server runs as its own process on 127.0.0.1 — ours (`python -m profiling serve`, with the run's switches,
writing its server-side spans) or vLLM's OpenAI server (the reference, from .venv-reference when it exists). Runs
that share a server's switches share its process (variants.py groups them); each run is driven by the load
generator in this process, on the same machine (both share its cores; the report says so).

1. Offline baseline: the engine alone (no server) at each of offline_batch_sizes, after a prompt of the served
   length, timed with the one recorder (variant offline_b<B>): the service's TPOT is compared with the engine's
   step at the same batch size and context.
2. Our server (variants.py): the ablation (slab -> paged -> chunked prefill -> prefix caching -> the lever), the
   continuous policy at every rate of the capacity sweep, static and dynamic batching at the policy rate, the
   shared-prefix workload (prefix caching on and off), the long-prompt workload at each step budget, the tenants.
3. The reference server, once, with our switches where it has them (prefix caching, step budget, most sequences):
   the capacity sweep, the shared-prefix and the long-prompt workloads (a note when .venv-reference is missing).

Workloads: random (random prompts of prompt_tokens, output_tokens each, Poisson arrivals at the run's rate or all
at once); prefix (one shared system prompt of prefix_tokens + a question of question_tokens); long (`streams`
requests with long outputs at once, then `prompts` long prompts arriving one after another while they decode).

Writes measurements.csv (tidy, knobs server/policy/request_rate/tenant), requests.csv (one row per request, client
side, with its run's variant and workload), bench_results.json (one vLLM `bench serve` result per run),
spans.jsonl (our server's span events, each with its run's variant), meta.json (each run's switches), and one
Chrome trace per run of our server — all or nothing.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import math
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import psutil
import torch
from tqdm import tqdm

from ... import model as models
from ...engine import generate
from ...io import staged, write_json
from ...measure import Run, timed_loads
from ...metrics import Measurements, record_generation
from ...serving.bench import reference
from ...serving.engine.paged_runner import fused_decoder_runs, paged_attention_for
from ...serving.bench.loadgen import LoadSettings, first_model, random_prompts, run_load_async
from ...serving.api.settings import ServerSettings
from ...serving.engine.spans import load_spans, write_chrome_trace
from ...timing import timing_method
from . import NAME as PHASE
from .variants import Run as LoadRun
from .variants import SATURATED, load_name, our_runs, rate_name, reference_runs, resolve_rate

READY_TIMEOUT_S = 300


# ---- our server, as a process ------------------------------------------------------------------------------------
def server_threads(settings: dict, cfg: dict) -> int:
    """The torch threads of our server (and of the offline baseline it is compared with). auto: on the CPU, one
    physical core is left to the HTTP front end and the load generator, which share the machine (vLLM's CPU backend
    does the same): torch's threads spin-wait at every operator, so a busy core they share slows every step."""
    if cfg["server_threads"] != "auto":
        return int(cfg["server_threads"])
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return max(1, cores - 1) if settings["device"] == "cpu" else cores


def resolve_lever(cfg: dict, settings: dict) -> str:
    """The D5 lever our server applies when a run asks for it: the config's, or for auto the one that speeds up
    batches on this machine (bfloat16 where the CPU has AMX tiles, int8_dynamic on other CPUs, none on a GPU,
    whose dtype is already float16)."""
    lever = cfg["lever"]
    if lever != "auto":
        return "" if lever in ("", "none") else lever
    if settings["device"] != "cpu":
        return ""
    return "bfloat16" if "amx" in torch.backends.cpu.get_cpu_capability().lower() else "int8_dynamic"


def server_settings(settings: dict, cfg: dict, run: LoadRun, spans_path: Path) -> ServerSettings:
    """Our server's settings for one run (port 0: the OS picks a free one)."""
    tenants = cfg["tenants"]
    dtype = "bfloat16" if run.lever == "bfloat16" else settings["dtype"]
    quantize = run.lever if run.lever.startswith("int8") else "none"
    return ServerSettings(
        model=settings["model"], device=settings["device"], dtype=dtype, quantize=quantize,
        linears=run.linears or settings.get("cpu_linears", "small_batch"),
        threads=server_threads(settings, cfg), port=0, policy=run.policy,
        max_batch=tenants["max_batch"] if run.workload == "tenants" else cfg["max_batch"],
        kv_cache=run.kv_cache, kv_block_size=cfg["kv_block_size"], kv_cache_mib=cfg["kv_cache_mib"],
        max_step_tokens=run.max_step_tokens, prefix_cache=run.prefix_cache,
        wait_window_ms=cfg["wait_window_ms"][run.policy], queue_depth=cfg["queue_depth"],
        tenant_policy=run.tenant_policy, tenant_cap=tenants["tenant_cap"] if run.tenant_policy == "fair" else 0,
        max_tokens_limit=max(cfg["output_tokens"], cfg["long_prompts"]["stream_output_tokens"], 16),
        spans_out=str(spans_path)).check()


def reference_args(cfg: dict) -> list[str]:
    """vLLM's switches that match our server's defaults: prefix caching, chunked prefill under the same step
    budget, the same most sequences."""
    args = ["--enable-prefix-caching", "--max-num-seqs", str(cfg["max_batch"])]
    if cfg["max_step_tokens"]:
        args += ["--enable-chunked-prefill", "--max-num-batched-tokens", str(cfg["max_step_tokens"])]
    return args


@contextlib.contextmanager
def our_server(server: ServerSettings, log_path: Path):
    """Start `python -m profiling serve` with `server`, yield its base URL once it answers, stop it on leaving
    (SIGTERM: it drains, then exits; SIGKILL when the run was interrupted). Its output goes to `log_path`."""
    command = [sys.executable, "-m", "profiling", "serve", *server.cli_args()]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()
    base_url: list[str] = []

    def read() -> None:
        with open(log_path, "a") as log:
            for line in process.stdout:
                log.write(line)
                lines.append(line)
                if line.startswith("serving ") and " on http://" in line:
                    base_url.append(line.rsplit(" on ", 1)[1].strip())
                    ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.wait(0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "".join(lines[-25:])
                raise RuntimeError(f"our server did not start (exit {process.poll()}):\n{tail}")
        yield base_url[0]
        drain_s = 60  # a finished run: the server drains (nothing should be left) and exits
    except BaseException:
        drain_s = 0  # an interrupted or failed run: its results are discarded, so nothing is worth waiting for
        raise
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM if drain_s else signal.SIGKILL)
            try:
                process.wait(timeout=drain_s or None)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        reader.join(timeout=5)


def workload(cfg: dict, run: LoadRun, tokenizer, seed: int, warm: bool = False) -> tuple[LoadSettings, dict]:
    """The load of one run: its settings and run_load_async's prompts (and, for the long-prompt workload, its
    arrival times and output lengths). The warm-up prompts come last (spare ones that share no prefix). Prompts
    are drawn from `seed` and the workload and rate, so runs at one load (ours, vLLM's, each ablation step) see
    the same prompts, and two runs on one server never share a prompt (the prefix cache would serve the second)."""
    load = load_name(run.load) if run.load is not None else rate_name(run.rate)
    seed += zlib.crc32(f"{run.workload}@{load}".encode()) % 100_000
    tenants, slo = cfg["tenants"], {"slo_ttft_ms": cfg["slo_ttft_s"] * 1e3, "slo_tpot_ms": cfg["slo_tpot_s"] * 1e3}
    common = {"burstiness": cfg["burstiness"], "seed": seed, "warmup_requests": 0 if warm else cfg["warmup_requests"],
              **slo}
    spare = max(cfg["warmup_requests"], 1)
    if run.workload == "prefix":
        shared = cfg["shared_prefix"]
        system, _ = random_prompts(tokenizer, 1, shared["prefix_tokens"], seed + 7)[0]
        questions = random_prompts(tokenizer, shared["requests"], shared["question_tokens"], seed + 8)
        prompts = [(f"{system}\n{text}", len(tokenizer(f"{system}\n{text}").input_ids)) for text, _ in questions]
        load = LoadSettings(num_requests=shared["requests"], prompt_tokens=shared["prefix_tokens"],
                            output_tokens=shared["output_tokens"], request_rate=run.rate, **common)
        return load, {"prompts": prompts + random_prompts(tokenizer, spare, shared["question_tokens"], seed + 9)}
    if run.workload == "long":
        long = cfg["long_prompts"]
        streams = random_prompts(tokenizer, long["streams"], cfg["prompt_tokens"], seed + 10)
        prompts = random_prompts(tokenizer, long["prompts"] + spare, long["prompt_tokens"], seed + 11)
        count = long["streams"] + long["prompts"]
        load = LoadSettings(num_requests=count, prompt_tokens=cfg["prompt_tokens"],
                            output_tokens=long["output_tokens"], request_rate=math.inf, **common)
        arrivals = [0.0] * long["streams"] + [long["arrive_after_s"] + i * long["gap_s"]
                                              for i in range(long["prompts"])]
        outputs = [long["stream_output_tokens"]] * long["streams"] + [long["output_tokens"]] * long["prompts"]
        return load, {"prompts": streams + prompts, "arrivals": arrivals, "output_tokens": outputs}
    count = tenants["requests"] if run.workload == "tenants" else cfg["requests"]
    load = LoadSettings(num_requests=count, prompt_tokens=cfg["prompt_tokens"], output_tokens=cfg["output_tokens"],
                        request_rate=run.rate, tenants=dict(tenants["mix"]) if run.workload == "tenants"
                        else {"default": 1.0}, **common)
    return load, {"prompts": random_prompts(tokenizer, count + spare, cfg["prompt_tokens"], seed)}


# ---- the offline baseline ----------------------------------------------------------------------------------------
OFFLINE_WARMUP_TOKENS = 16  # prompt tokens of the untimed first call at each batch size


def offline_baseline(settings: dict, cfg: dict, run_info: Run, tokenizer, rows: Measurements) -> None:
    """The engine alone at each of offline_batch_sizes: `offline_repeats` timed generations of
    offline_decode_steps tokens from B copies of a random prompt of the served length (`prompt_tokens`), so each
    step attends to as many keys as the service's steps do — the decode step the service's TPOT is compared with,
    at the batch size the service ran. The first call at each batch size (allocations, oneDNN primitives) is an
    untimed warm-up on the prompt's last OFFLINE_WARMUP_TOKENS tokens, which costs a fraction of a full prefill."""
    model, _, _, _ = timed_loads(settings["model"], run_info)
    torch.set_num_threads(server_threads(settings, cfg))  # the same threads as the server it is compared with
    prompt, _ = random_prompts(tokenizer, 1, cfg["prompt_tokens"], settings["seed"] + 1)[0]
    for batch in cfg["offline_batch_sizes"]:
        ids = tokenizer([prompt] * batch, return_tensors="pt")["input_ids"].to(run_info.precision.device)
        mask = torch.ones_like(ids)
        knobs = {"server": "engine", "policy": "offline", "batch_size": batch, "prompt_tokens": int(ids.shape[1]),
                 "max_new_tokens": cfg["offline_decode_steps"] + 1, "threads": torch.get_num_threads()}
        warm = ids[:, -OFFLINE_WARMUP_TOKENS:]
        generate(model, warm, torch.ones_like(warm), 2)
        for repeat in range(cfg["offline_repeats"]):
            generation = generate(model, ids, mask, cfg["offline_decode_steps"] + 1)
            record_generation(rows, f"offline_b{batch}", repeat, generation.clock, int(generation.tokens.shape[1]),
                              request_ids=tuple(range(batch)), **knobs)
    del model
    gc.collect()


# ---- the experiment ------------------------------------------------------------------------------------------------
def run(settings: dict, measurements_path, meta_path, requests_path, bench_path, spans_path, traces: list) -> None:
    """Run every load run; write the data contract files and one trace per run of our server (all or nothing)."""
    cfg = settings[PHASE]
    lever = resolve_lever(cfg, settings)
    ours = [replace(run, lever=lever if run.lever else "") for run in our_runs(cfg)]
    order = list(dict.fromkeys(run.server_key for run in ours))
    ours.sort(key=lambda run: order.index(run.server_key))  # one server process per set of switches
    theirs = reference_runs(cfg)
    trace_for = {Path(path).name.removesuffix(".json.gz"): path for path in traces}
    if sorted(trace_for) != sorted(run.variant for run in ours):
        raise ValueError(f"trace paths {sorted(trace_for)} do not match the runs {[r.variant for r in ours]}")
    run_info = Run(PHASE, settings)
    rows = Measurements(PHASE)
    tokenizer = models.load_tokenizer(settings["model"])
    offline_baseline(settings, cfg, run_info, tokenizer, rows)

    work = Path(tempfile.mkdtemp(prefix="d4-serving-"))
    requests, bench, spans, notes = [], [], [], {"runs": {}, "lever": lever, "servers": {}}
    progress = tqdm(total=len(ours) + len(theirs), desc="d4 serving", unit="run")
    saturated = {}  # server -> requests / duration of its run with every request at once (req/s)

    def drive(run: LoadRun, base_url: str, warm: bool) -> tuple[float, float]:
        """One run against a started server; returns its window (perf_counter seconds, the servers' clock too)
        from its first timed request (its warm-up requests are outside it) to its end. The first run on a server
        sends the warm-up requests first; a `warm` server (one that has served a run) needs none. Random-workload
        rates are shares of our server's saturated rate (its saturated run comes first)."""
        run = resolve_rate(run, saturated.get("ours"))
        load, script = workload(cfg, run, tokenizer, settings["seed"], warm)
        model_name = first_model(base_url)
        result = asyncio.run(run_load_async(base_url, model_name, load, label=run.variant, **script))
        result.add_rows(rows, run.variant, 0, run.server, run.policy)
        frame = result.requests_frame()
        requests.append(frame.assign(variant=run.variant, server=run.server, policy=run.policy,
                                     workload=run.workload, request_rate=run.rate))
        bench.append({"variant": run.variant, "server": run.server, "policy": run.policy, **result.result})
        notes["runs"][run.variant] = {**asdict(run), "duration_s": result.duration_s,
                                      "failed": int((~frame["success"]).sum())}
        if run.load == SATURATED and run.workload == "random":
            saturated[run.server] = int(frame["success"].sum()) / result.duration_s
            notes["saturated_req_per_s"] = dict(saturated)
        progress.update(1)
        return result.start_s, time.perf_counter()

    for key, group in itertools.groupby(ours, key=lambda run: run.server_key):
        group = list(group)
        first = group[0].variant
        progress.set_postfix_str(first)
        server = server_settings(settings, cfg, group[0], work / f"{first}.server.jsonl")
        started = time.perf_counter()
        windows = {}
        with our_server(server, work / f"{first}.log") as base_url:
            startup_s = time.perf_counter() - started
            for index, load_run in enumerate(group):
                notes["servers"][load_run.variant] = {**server.as_dict(), "startup_s": startup_s}
                windows[load_run.variant] = drive(load_run, base_url, warm=index > 0)
        for variant, events in split_spans(load_spans(work / f"{first}.server.jsonl"), windows).items():
            write_jsonl(work / f"{variant}.jsonl", events)
            spans += [{**event, "variant": variant} for event in events]

    if cfg["reference"]["enabled"] and theirs:
        available, why = reference.reference_available()  # imports vLLM in .venv-reference: seconds, so only here
    else:
        available, why = False, "the reference is disabled in the config"
    notes["reference"] = {"available": available, "note": why}
    model_dir = models.local_model_dir(settings["model"])
    if available and model_dir is not None:
        ref = reference.ReferenceSettings(dtype=run_info.precision.dtype, enforce_eager=cfg["reference"]["enforce_eager"],
                                          max_model_len=cfg["reference"]["max_model_len"],
                                          log_path=work / "vllm.log", extra_args=reference_args(cfg))
        try:
            notes["reference"]["version"] = reference.reference_version(ref)
            notes["reference"]["args"] = reference_args(cfg)
            started = time.perf_counter()
            with reference.reference_server(model_dir, ref) as base_url:
                notes["reference"]["startup_s"] = time.perf_counter() - started
                for index, load_run in enumerate(theirs):
                    progress.set_postfix_str(load_run.variant)
                    drive(load_run, base_url, warm=index > 0)
        except (reference.ReferenceServerError, RuntimeError) as error:  # the reference is optional: a note
            notes["reference"].update(available=False, note=f"vLLM's server failed: {str(error)[-1500:]}")
    elif available:
        notes["reference"].update(available=False, note="the model has no local directory vLLM can load")
    progress.close()

    with staged(measurements_path, meta_path, requests_path, bench_path, spans_path, *trace_for.values()) as temps:
        measurements_tmp, meta_tmp, requests_tmp, bench_tmp, spans_tmp, *trace_tmps = temps
        rows.write(measurements_tmp)
        pd.concat(requests, ignore_index=True).to_csv(requests_tmp, index=False)
        write_json(bench_tmp, bench)
        write_jsonl(spans_tmp, spans)
        for variant, trace_tmp in zip(trace_for, trace_tmps):
            write_chrome_trace(work / f"{variant}.jsonl", trace_tmp)
        # the paged runs' decode attention (serving/engine/paged_runner.py): kernel, or sdpa where it cannot run
        paged_attention = paged_attention_for(ServerSettings.paged_attention, run_info.precision.device,
                                              getattr(torch, run_info.precision.dtype))[0]
        run_info.write_meta(meta_tmp, {
            **notes,
            "timing_method": timing_method(run_info.precision.device) + "; client and servers on one machine",
            "client": "profiling.serving.bench.loadgen (httpx, streaming /v1/completions, perf_counter)",
            "cpu_count": os.cpu_count(),
            "server_threads": server_threads(settings, cfg),
            "paged_attention": paged_attention,
            # and their steps of decodes alone: our fused C decoder layer where it runs (it needs the attention
            # kernel and our small-batch linears), else transformers' modules
            "decoder": fused_decoder_runs(ServerSettings.decoder, paged_attention,
                                          settings.get("cpu_linears", "small_batch")),
            "slo_ttft_s": cfg["slo_ttft_s"], "slo_tpot_s": cfg["slo_tpot_s"],
        })



def split_spans(events: list[dict], windows: dict[str, tuple[float, float]]) -> dict[str, list[dict]]:
    """One server's span events split by run: a request goes to the run whose window holds its arrival, a step to
    the run whose window holds its start (perf_counter is the machine's monotonic clock, shared by both
    processes); each run's events start with the server's meta event."""
    meta = [event for event in events if event["kind"] == "meta"]
    arrival = {e["request_id"]: e["t"] for e in events if e["kind"] == "request" and e["event"] == "arrived"}

    def run_of(event: dict) -> str | None:
        t = event["start"] if event["kind"] == "step" else arrival.get(event.get("request_id"), event.get("t"))
        return next((variant for variant, (start, end) in windows.items() if start <= t <= end), None)

    split = {variant: list(meta) for variant in windows}
    for event in events:
        if event["kind"] != "meta" and (variant := run_of(event)) is not None:
            split[variant].append(event)
    return split


def write_jsonl(path: Path, events: list[dict]) -> None:
    with open(path, "w") as f:
        for event in events:
            f.write(json.dumps(event) + "\n")


# ---- command line (python -m profiling d4_serving) ---------------------------------------------------------------
def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    for name in ("measurements", "meta", "requests", "bench", "spans"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--traces", nargs="+", required=True, help="one <variant>.json.gz per run of our server")


def cli(args) -> None:
    run(args.settings, args.measurements, args.meta, args.requests, args.bench, args.spans, args.traces)
