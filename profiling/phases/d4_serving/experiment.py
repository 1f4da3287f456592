"""D4 serving: what does a real inference service look like, and how does it hold up under load?

Every run starts a server as its own process on 127.0.0.1 — ours (`python -m profiling serve`, with the run's
scheduling and tenant policy, writing its server-side spans) or vLLM's OpenAI server (the reference, from
.venv-reference when it exists) — waits until it answers, drives it with the load generator (random prompts of
`prompt_tokens` tokens, `output_tokens` tokens each, Poisson arrivals at the run's rate or all at once), and stops
it. The client runs in this process on the same machine as the server (both share its cores; the report says so).

1. Offline baseline: the engine alone (no server) at batch 1 on the same prompt length and output length, timed
   with the one recorder (variant offline_b1): the service's TPOT is compared with its decode step.
2. Our server: every policy at the policy-comparison rate; the continuous policy at every rate of rates_req_per_s;
   the tenant runs (one noisy tenant, admission fifo then fair).
3. The reference server at every rate of rates_req_per_s (skipped with a note when .venv-reference is missing).

Writes measurements.csv (tidy, knobs server/policy/request_rate/tenant), requests.csv (one row per request, client
side), bench_results.json (one vLLM `bench serve` result per run), spans.jsonl (our server's span events, each
with its run's variant), meta.json, and one Chrome trace per run of our server — all or nothing.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
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
from ...serving import reference
from ...serving.bench.loadgen import LoadSettings, random_prompts, run_load
from ...serving.api.settings import ServerSettings
from ...serving.engine.spans import load_spans, write_chrome_trace
from ...timing import timing_method
from . import NAME as PHASE
from .variants import Run as LoadRun
from .variants import our_runs, reference_runs

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


def server_settings(settings: dict, cfg: dict, run: LoadRun, spans_path: Path) -> ServerSettings:
    """Our server's settings for one run (port 0: the OS picks a free one)."""
    tenants = cfg["tenants"]
    return ServerSettings(
        model=settings["model"], device=settings["device"], dtype=settings["dtype"],
        threads=server_threads(settings, cfg),
        port=0, policy=run.policy, max_batch=tenants["max_batch"] if run.tenants else cfg["max_batch"],
        wait_window_ms=cfg["wait_window_ms"][run.policy], queue_depth=cfg["queue_depth"],
        tenant_policy=run.tenant_policy, tenant_cap=tenants["tenant_cap"] if run.tenant_policy == "fair" else 0,
        max_tokens_limit=max(cfg["output_tokens"], 16), spans_out=str(spans_path)).check()


@contextlib.contextmanager
def our_server(server: ServerSettings, log_path: Path):
    """Start `python -m profiling serve` with `server`, yield its base URL once it answers, stop it (SIGTERM:
    it drains, then exits) on leaving. Its output goes to `log_path`."""
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
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        reader.join(timeout=5)


def load_settings(cfg: dict, run: LoadRun, seed: int) -> LoadSettings:
    """The load of one run: the tenant runs use their own request count and noisy-tenant mix."""
    tenants = cfg["tenants"]
    return LoadSettings(
        num_requests=tenants["requests"] if run.tenants else cfg["requests"], prompt_tokens=cfg["prompt_tokens"],
        output_tokens=cfg["output_tokens"], request_rate=run.rate, burstiness=cfg["burstiness"],
        tenants=dict(tenants["mix"]) if run.tenants else {"default": 1.0}, slo_ttft_ms=cfg["slo_ttft_s"] * 1e3,
        slo_tpot_ms=cfg["slo_tpot_s"] * 1e3, seed=seed, warmup_requests=cfg["warmup_requests"])


# ---- the offline baseline ----------------------------------------------------------------------------------------
def offline_baseline(settings: dict, cfg: dict, run_info: Run, tokenizer, rows: Measurements) -> None:
    """The engine alone at batch 1: `offline_repeats` timed generations (after one warm-up) of output_tokens
    tokens on a random prompt of prompt_tokens tokens — the decode step the service's TPOT is compared with."""
    model, _, _, _ = timed_loads(settings["model"], run_info)
    torch.set_num_threads(server_threads(settings, cfg))  # the same threads as the server it is compared with
    prompt, length = random_prompts(tokenizer, 1, cfg["prompt_tokens"], settings["seed"] + 1)[0]
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(run_info.precision.device)
    mask = torch.ones_like(ids)
    knobs = {"server": "engine", "policy": "offline", "batch_size": 1, "prompt_tokens": int(ids.shape[1]),
             "max_new_tokens": cfg["output_tokens"], "threads": torch.get_num_threads()}
    generate(model, ids, mask, cfg["output_tokens"])
    for repeat in range(cfg["offline_repeats"]):
        generation = generate(model, ids, mask, cfg["output_tokens"])
        record_generation(rows, "offline_b1", repeat, generation.clock, int(generation.tokens.shape[1]), **knobs)
    del model
    gc.collect()


# ---- the experiment ------------------------------------------------------------------------------------------------
def run(settings: dict, measurements_path, meta_path, requests_path, bench_path, spans_path, traces: list) -> None:
    """Run every load run; write the data contract files and one trace per run of our server (all or nothing)."""
    cfg = settings[PHASE]
    ours, theirs = our_runs(cfg), reference_runs(cfg)
    trace_for = {Path(path).name.removesuffix(".json.gz"): path for path in traces}
    if sorted(trace_for) != sorted(run.variant for run in ours):
        raise ValueError(f"trace paths {sorted(trace_for)} do not match the runs {[r.variant for r in ours]}")
    run_info = Run(PHASE, settings)
    rows = Measurements(PHASE)
    tokenizer = models.load_tokenizer(settings["model"])
    offline_baseline(settings, cfg, run_info, tokenizer, rows)

    work = Path(tempfile.mkdtemp(prefix="d4-serving-"))
    requests, bench, spans, notes = [], [], [], {"runs": {}}
    progress = tqdm(total=len(ours) + len(theirs), desc="d4 serving", unit="run")

    def drive(run: LoadRun, base_url: str, repeat: int = 0) -> None:
        load = load_settings(cfg, run, settings["seed"])
        result = run_load(base_url, None, load, tokenizer, label=run.variant)
        result.add_rows(rows, run.variant, repeat, run.server, run.policy)
        frame = result.requests_frame()
        requests.append(frame.assign(variant=run.variant, server=run.server, policy=run.policy,
                                     request_rate=run.rate))
        bench.append({"variant": run.variant, "server": run.server, "policy": run.policy, **result.result})
        notes["runs"][run.variant] = {"server": run.server, "policy": run.policy, "request_rate": run.rate,
                                      "tenant_policy": run.tenant_policy, "duration_s": result.duration_s,
                                      "failed": int((~frame["success"]).sum())}
        progress.update(1)

    for load_run in ours:
        progress.set_postfix_str(load_run.variant)
        run_spans = work / f"{load_run.variant}.jsonl"
        server = server_settings(settings, cfg, load_run, run_spans)
        notes.setdefault("servers", {})[load_run.variant] = server.as_dict()
        with our_server(server, work / f"{load_run.variant}.log") as base_url:
            drive(load_run, base_url)
        spans += [{**event, "variant": load_run.variant} for event in load_spans(run_spans)]

    available, why = reference.reference_available()
    notes["reference"] = {"available": available, "note": why}
    model_dir = models.local_model_dir(settings["model"])
    if available and cfg["reference"]["enabled"] and theirs and model_dir is not None:
        ref = reference.ReferenceSettings(dtype=run_info.precision.dtype, enforce_eager=cfg["reference"]["enforce_eager"],
                                          max_model_len=cfg["reference"]["max_model_len"],
                                          log_path=work / "vllm.log")
        try:
            notes["reference"]["version"] = reference.reference_version(ref)
            started = time.perf_counter()
            with reference.reference_server(model_dir, ref) as base_url:
                notes["reference"]["startup_s"] = time.perf_counter() - started
                for load_run in theirs:
                    progress.set_postfix_str(load_run.variant)
                    drive(load_run, base_url)
        except (reference.ReferenceServerError, RuntimeError) as error:  # the reference is optional: a note
            notes["reference"].update(available=False, note=f"vLLM's server failed: {str(error)[-1500:]}")
    elif available:
        notes["reference"].update(available=False, note="the reference is disabled in the config, or the model "
                                                        "has no local directory vLLM can load")
    progress.close()

    with staged(measurements_path, meta_path, requests_path, bench_path, spans_path, *trace_for.values()) as temps:
        measurements_tmp, meta_tmp, requests_tmp, bench_tmp, spans_tmp, *trace_tmps = temps
        rows.write(measurements_tmp)
        pd.concat(requests, ignore_index=True).to_csv(requests_tmp, index=False)
        write_json(bench_tmp, bench)
        with open(spans_tmp, "w") as f:
            for event in spans:
                f.write(json.dumps(event) + "\n")
        for variant, trace_tmp in zip(trace_for, trace_tmps):
            write_chrome_trace(work / f"{variant}.jsonl", trace_tmp)
        run_info.write_meta(meta_tmp, {
            **notes,
            "timing_method": timing_method(run_info.precision.device) + "; client and servers on one machine",
            "client": "profiling.serving.bench.loadgen (httpx, streaming /v1/completions, perf_counter)",
            "cpu_count": os.cpu_count(),
            "server_threads": server_threads(settings, cfg),
            "slo_ttft_s": cfg["slo_ttft_s"], "slo_tpot_s": cfg["slo_tpot_s"],
        })


# ---- command line (python -m profiling d4_serving) ---------------------------------------------------------------
def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    for name in ("measurements", "meta", "requests", "bench", "spans"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--traces", nargs="+", required=True, help="one <variant>.json.gz per run of our server")


def cli(args) -> None:
    run(args.settings, args.measurements, args.meta, args.requests, args.bench, args.spans, args.traces)
