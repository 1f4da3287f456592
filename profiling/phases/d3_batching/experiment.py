"""D3 batching: who pays for whom? Batching buys throughput with latency; this measures how much.

1. Static sweep: for each batch size B, `warmup` untimed then `repeats` timed batches of the first B prompts, each
   sequence generating exactly `max_new_tokens` tokens. Every batch is tokenize -> prefill -> decode_step[i] ->
   detokenize, timed as StageClock spans. Rows: stage times (what D2 turns into roofline points), per request
   ttft/tpot/e2e, per batch throughput and padding waste.
2. Engine versus transformers' `model.generate`, side by side: at each compare batch size, every repeat also runs
   `generate` on the same input tensors (order alternating, so drift hits both), timing its first token and its
   decode phase with a streamer.
3. One short traced batch per batch size (prefill + a few decode steps), gzip Chrome trace, with its profiler
   overhead against the untraced steps.
4. Dynamic batcher: for each run setting, a producer thread enqueues requests at their arrival times (Poisson or
   burst) while this thread takes batches from the batcher and runs the engine on them; every timestamp is
   `time.perf_counter`, so queue wait, prefill and decode line up. Rows: per request queue_wait/ttft/tpot/e2e,
   per batch the achieved batch size, per run the throughput and wall time.
5. Telemetry samples utilisation in the background throughout (steps 1, 2 and 4) on the same clock.

Out of memory at one batch size (or in one dynamic batch) is recorded as a row (metric `oom`) and the sweep goes on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm
from transformers.generation.streamers import BaseStreamer

from ... import model as models
from ...batching import (DynamicBatcher, Request, burst_arrivals, padding_waste_ratio, poisson_arrivals,
                        start_producer, static_batch)
from ...config import ConfigError
from ...engine import encode_prompts, generate
from ...io import staged
from ...telemetry import EnergyMeter, Telemetry
from ...metrics import Measurements, decode_tok_per_s, output_tok_per_s, record_energy, record_generation
from ...timing import StageClock, sync, timing_method
from ...tracing import export_gzip_trace, profiled, write_empty_trace
from ...measure import OutOfMemoryGuard, RepeatPolicy, Run, render_prompt, repeat_until_tight

from . import NAME as PHASE
TIMELINE_COLUMNS = ["variant", "repeat", "request_id", "batch_index", "batch_size", "run_start_s", "arrival_s",
                    "launch_s", "first_token_s", "done_s", "output_tokens"]






def static_variant(batch_size: int) -> str:
    return f"static_b{batch_size}"


# ---- one batch through the engine ---------------------------------------------------------------------------
@dataclass
class BatchResult:
    """One batch's spans (clock: tokenize, prefill, decode_step[i], detokenize) and its shape."""

    clock: StageClock
    batch_size: int
    prompt_tokens: int  # tokens per sequence in the prefill, padding included
    output_tokens: int  # generated tokens per sequence
    padding_waste_ratio: float

    def at(self, name: str) -> float:
        """perf_counter time at which the last span `name` ended."""
        return self.clock.origin + self.clock.end_of(name)

    @property
    def last_decode_span(self) -> str:
        return f"decode_step[{self.output_tokens - 1}]" if self.output_tokens > 1 else "prefill"


def run_batch(model, tokenizer, texts: list[str], max_new_tokens: int, device: str,
              clock: StageClock | None = None) -> BatchResult:
    """Tokenize `texts` as one left-padded batch, generate `max_new_tokens` greedy tokens per sequence (fixed
    length), detokenize; every stage a span of `clock` (made now if not given)."""
    clock = clock or StageClock(device)
    with clock.span("tokenize"):
        input_ids, attention_mask = encode_prompts(tokenizer, texts, device)
    generation = generate(model, input_ids, attention_mask, max_new_tokens, clock=clock,
                          pad_token_id=tokenizer.pad_token_id)
    with clock.span("detokenize"):
        tokenizer.batch_decode(generation.tokens, skip_special_tokens=True)
    return BatchResult(clock, len(texts), int(input_ids.shape[1]), int(generation.tokens.shape[1]),
                       padding_waste_ratio(attention_mask))


def record_static_batch(rows: Measurements, variant: str, repeat: int, result: BatchResult, knobs: dict,
                        request_ids: list[int]) -> None:
    """Rows of one timed static batch: the recorder's rows (stage spans, per request ttft/tpot/e2e, which all
    requests of a static batch share, throughput), plus request rate, generate and decode tok/s, padding waste."""
    clock, batch = result.clock, result.batch_size
    timing = record_generation(rows, variant, repeat, clock, result.output_tokens, request_ids=request_ids, **knobs)
    ttft, e2e = timing["ttft_s"], timing["e2e_s"]
    prefill_start = next(span.start for span in clock.spans if span.name == "prefill")
    per_run = {
        "request_per_s": batch / e2e,
        "generate_tok_per_s": output_tok_per_s(batch * result.output_tokens,
                                               clock.end_of(result.last_decode_span) - prefill_start),
        "decode_tok_per_s": decode_tok_per_s(batch, result.output_tokens,
                                             clock.end_of(result.last_decode_span) - ttft),
        "padding_waste_ratio": result.padding_waste_ratio,
    }
    for metric, value in per_run.items():
        rows.add(variant, repeat, metric, value, request_id=-1, **knobs)


# ---- the reference: transformers' model.generate ------------------------------------------------------------
class TokenTimes(BaseStreamer):
    """A streamer that notes when `model.generate` hands each new token to the host (perf_counter seconds).
    generate first passes the prompt, then the new tokens of every step."""

    def __init__(self):
        self.prompt_seen = False
        self.times: list[float] = []

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def run_reference(model, tokenizer, input_ids, attention_mask, max_new_tokens: int, device: str) -> dict:
    """`model.generate` (greedy, exactly max_new_tokens tokens) on the given tensors, timed: seconds to the first
    token, seconds of the decode phase (first to last token), seconds in all."""
    streamer = TokenTimes()
    sync(device)
    start = time.perf_counter()
    model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                   min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                   streamer=streamer)
    sync(device)
    end = time.perf_counter()
    return {"ttft_s": streamer.times[0] - start, "decode_s": streamer.times[-1] - streamer.times[0],
            "generate_s": end - start, "output_tokens": len(streamer.times)}


def record_reference(rows: Measurements, batch_size: int, repeat: int, timing: dict, knobs: dict) -> None:
    variant = f"generate_b{batch_size}"
    tokens = timing["output_tokens"]
    rows.add(variant, repeat, "ttft_s", timing["ttft_s"], request_id=-1, **knobs)
    rows.add(variant, repeat, "generate_tok_per_s", output_tok_per_s(batch_size * tokens, timing["generate_s"]),
             request_id=-1, **knobs)
    rows.add(variant, repeat, "decode_tok_per_s", decode_tok_per_s(batch_size, tokens, timing["decode_s"]),
             request_id=-1, **knobs)
    rows.add(variant, repeat, "output_tokens", tokens, request_id=-1, **knobs)


# ---- 1 + 2: the static sweep with the side-by-side reference --------------------------------------------------
def timed_engine_batch(model, tokenizer, batch_texts: list[str], cfg: dict, device: str, origin: float,
                       repeat: int, rows: Measurements, timeline: list[dict], energy: EnergyMeter) -> tuple[int, float]:
    """One timed static batch through the engine, recorded (with its energy_j where a meter is readable); returns
    its prompt tokens per sequence (padded) and its e2e seconds."""
    batch_size = len(batch_texts)
    before = energy.read_j()
    result = run_batch(model, tokenizer, batch_texts, cfg["max_new_tokens"], device)
    joules = energy.joules_between(before, energy.read_j())
    knobs = {"batch_size": batch_size, "prompt_tokens": result.prompt_tokens,
             "max_new_tokens": cfg["max_new_tokens"], "use_cache": True}
    request_ids = list(range(batch_size))
    record_static_batch(rows, static_variant(batch_size), repeat, result, knobs, request_ids)
    record_energy(rows, static_variant(batch_size), repeat, joules, **knobs)
    add_timeline(timeline, static_variant(batch_size), repeat, 0, result, origin, request_ids, arrivals=None,
                 run_start=result.clock.origin)
    return result.prompt_tokens, result.at("detokenize") - result.clock.origin


def timed_reference(model, tokenizer, input_ids, attention_mask, cfg: dict, device: str, repeat: int,
                    rows: Measurements) -> None:
    """One timed `model.generate` call on the same input tensors as the engine's batch, recorded."""
    batch_size = int(input_ids.shape[0])
    timing = run_reference(model, tokenizer, input_ids, attention_mask, cfg["max_new_tokens"], device)
    knobs = {"batch_size": batch_size, "prompt_tokens": int(input_ids.shape[1]),
             "max_new_tokens": cfg["max_new_tokens"]}
    record_reference(rows, batch_size, repeat, timing, knobs)


def static_sweep(model, tokenizer, texts: list[str], cfg: dict, device: str, origin: float, rows: Measurements,
                 timeline: list[dict], policy: RepeatPolicy, energy: EnergyMeter) -> dict:
    """Run the static sweep, with `model.generate` beside the engine at the compare sizes: per batch size, warm-up
    until the decode steps settle, then timed repeats until the median e2e is tight (`policy`). Returns
    {"prompt_tokens": {batch_size: padded prompt tokens}, "oom_batch_sizes": [sizes that ran out of memory]}."""
    max_new = cfg["max_new_tokens"]
    prompt_tokens, oom_sizes = {}, []
    for batch_size in cfg["batch_sizes"]:
        batch_texts = static_batch(texts, batch_size)
        compare = batch_size in cfg["compare_batch_sizes"]
        with OutOfMemoryGuard(device) as oom:
            input_ids, attention_mask = encode_prompts(tokenizer, batch_texts, device)
            def warm_up_call():
                if compare:
                    run_reference(model, tokenizer, input_ids, attention_mask, max_new, device)
                return run_batch(model, tokenizer, batch_texts, max_new, device).clock

            policy.warm_up(warm_up_call)

            def timed(repeat: int) -> dict:
                reference_first = compare and repeat % 2 == 1  # alternate the order, so drift hits both alike
                if reference_first:
                    timed_reference(model, tokenizer, input_ids, attention_mask, cfg, device, repeat, rows)
                prompt_tokens[batch_size], e2e_s = timed_engine_batch(model, tokenizer, batch_texts, cfg, device,
                                                                      origin, repeat, rows, timeline, energy)
                if compare and not reference_first:
                    timed_reference(model, tokenizer, input_ids, attention_mask, cfg, device, repeat, rows)
                return {"e2e_s": e2e_s}

            repeat_until_tight(timed, policy, desc=f"d3 static b{batch_size}")
        if oom.hit:
            oom.record(rows, static_variant(batch_size), batch_size=batch_size, max_new_tokens=max_new)
            oom_sizes.append(batch_size)
            prompt_tokens.pop(batch_size, None)
    return {"prompt_tokens": prompt_tokens, "oom_batch_sizes": oom_sizes}


def add_timeline(timeline: list[dict], variant: str, repeat: int, batch_index: int, result: BatchResult,
                 origin: float, request_ids: list[int], arrivals: list[float] | None, run_start: float) -> None:
    """One timeline row per request of a batch: its arrival, launch, first token and completion, in seconds since
    `origin` (the experiment's perf_counter start; telemetry uses the same). Static batches arrive at launch."""
    launch = result.clock.origin
    for index, request_id in enumerate(request_ids):
        arrival = launch if arrivals is None else arrivals[index]
        timeline.append({
            "variant": variant, "repeat": repeat, "request_id": request_id, "batch_index": batch_index,
            "batch_size": result.batch_size, "run_start_s": run_start - origin, "arrival_s": arrival - origin,
            "launch_s": launch - origin, "first_token_s": result.at("prefill") - origin,
            "done_s": result.at("detokenize") - origin, "output_tokens": result.output_tokens,
        })


# ---- 3: one short traced batch per batch size ---------------------------------------------------------------
def traced_batches(model, tokenizer, texts: list[str], cfg: dict, device: str, trace_paths: list,
                   oom_sizes: list[int], rows: Measurements) -> None:
    """One traced batch per batch size (prefill + trace_decode_steps decode steps) into its trace file; its spans
    are recorded as variant traced_b<B>, so the analysis can measure the profiler's overhead."""
    traced_new = cfg["trace_decode_steps"] + 1
    for batch_size, path in zip(cfg["batch_sizes"], trace_paths):
        if batch_size in oom_sizes:
            write_empty_trace(path, f"batch {batch_size} ran out of memory")
            continue
        batch_texts = static_batch(texts, batch_size)
        with OutOfMemoryGuard(device) as oom:
            with profiled(device) as prof:
                with torch.profiler.record_function("batch[0]"):
                    result = run_batch(model, tokenizer, batch_texts, traced_new, device)
        if oom.hit:
            oom.release()
            write_empty_trace(path, f"batch {batch_size} ran out of memory")
            continue
        export_gzip_trace(prof, path)
        record_generation(rows, f"traced_b{batch_size}", 0, result.clock, result.output_tokens,
                          request_ids=range(batch_size), batch_size=batch_size, prompt_tokens=result.prompt_tokens,
                          max_new_tokens=traced_new)


# ---- 4: the dynamic batcher under arrival processes ---------------------------------------------------------
@dataclass(frozen=True)
class DynamicSetting:
    """One dynamic run's setting: how requests arrive and how the batcher groups them."""

    arrival: str  # "poisson" or "burst"
    rate_req_per_s: float | None  # Poisson rate; None for a burst
    requests: int
    wait_window_ms: float
    max_batch: int

    @property
    def variant(self) -> str:
        load = f"poisson_{self.rate_req_per_s:g}rps" if self.arrival == "poisson" else f"burst_{self.requests}req"
        return f"dyn_{load}_w{self.wait_window_ms:g}ms_cap{self.max_batch}"

    def knobs(self) -> dict:
        return {"arrival": self.arrival, "rate_req_per_s": self.rate_req_per_s, "wait_window_ms": self.wait_window_ms,
                "max_batch": self.max_batch}

    def arrivals(self, seed: int) -> list[float]:
        """Arrival times in seconds from the run's start. Same seed -> same arrivals for every window and cap, so
        the grid compares batchers on identical traffic."""
        if self.arrival == "poisson":
            return poisson_arrivals(self.rate_req_per_s, self.requests, seed)
        return burst_arrivals(self.requests)


def dynamic_settings(dynamic: dict) -> list[DynamicSetting]:
    """The dynamic runs, in order: the window x max-batch grid at the grid's Poisson rate, no batching (cap 1 at
    the operating window, so it differs from the operating point only in its cap) and the operating point at that
    rate, then the rate sweep and the burst at the operating point.
    A setting listed twice is run once."""
    rate, requests = float(dynamic["rate_req_per_s"]), dynamic["requests"]
    window, cap = float(dynamic["operating_window_ms"]), dynamic["operating_max_batch"]
    settings = [DynamicSetting("poisson", rate, requests, float(grid_window), grid_cap)
                for grid_cap in dynamic["max_batches"] for grid_window in dynamic["wait_windows_ms"]]
    settings.append(DynamicSetting("poisson", rate, requests, window, 1))  # no batching: the baseline
    settings.append(DynamicSetting("poisson", rate, requests, window, cap))  # the operating point
    settings += [DynamicSetting("poisson", float(sweep_rate), requests, window, cap)
                 for sweep_rate in dynamic["rates_req_per_s"]]
    if dynamic["burst_requests"] > 0:
        settings.append(DynamicSetting("burst", None, dynamic["burst_requests"], window, cap))
    return list(dict.fromkeys(settings))


def serve(model, tokenizer, texts: list[str], setting: DynamicSetting, max_new_tokens: int, device: str,
          origin: float, seed: int, repeat: int, rows: Measurements, timeline: list[dict]) -> None:
    """One dynamic run: a producer thread puts requests into the batcher at their arrival times; this thread
    takes each launched batch and runs it through the engine. Writes per request, per batch and per run rows."""
    variant = setting.variant
    knobs = {**setting.knobs(), "max_new_tokens": max_new_tokens}
    requests = [Request(request_id, texts[request_id % len(texts)]) for request_id in range(setting.requests)]
    batcher = DynamicBatcher(setting.max_batch, setting.wait_window_ms / 1000.0, clock=time.perf_counter)
    run_start = time.perf_counter()
    producer = start_producer(batcher, requests, setting.arrivals(seed), run_start)
    batch_index, served, generated, last_done = 0, 0, 0, run_start
    while (batch := batcher.next_batch()) is not None:
        clock = StageClock(device)  # its origin is the launch time
        ids = [request.request_id for request in batch]
        with OutOfMemoryGuard(device) as oom:
            result = run_batch(model, tokenizer, [request.payload for request in batch], max_new_tokens, device,
                               clock=clock)
        if oom.hit:
            oom.record(rows, variant, repeat, batch_index=batch_index, batch_size=len(batch), **knobs)
            batch_index += 1
            continue
        done = result.at("detokenize")
        record_generation(rows, variant, repeat, clock, result.output_tokens, request_ids=ids,
                          waited_s=[clock.origin - request.arrival_s for request in batch], per_run=False,
                          **knobs, batch_size=len(batch), batch_index=batch_index)
        rows.add(variant, repeat, "achieved_batch_size", len(batch), request_id=-1, batch_index=batch_index,
                 **knobs)
        add_timeline(timeline, variant, repeat, batch_index, result, origin, ids,
                     arrivals=[request.arrival_s for request in batch], run_start=run_start)
        served += len(batch)
        generated += len(batch) * result.output_tokens
        last_done = max(last_done, done)
        batch_index += 1
    producer.join()
    wall = last_done - run_start
    rows.add(variant, repeat, "wall_s", wall, request_id=-1, **knobs)
    rows.add(variant, repeat, "output_tok_per_s", output_tok_per_s(generated, wall), request_id=-1, **knobs)
    rows.add(variant, repeat, "request_per_s", served / wall if wall > 0 else float("nan"),  # out-of-memory
             request_id=-1, **knobs)                                                           # batches excluded


# ---- the whole experiment -----------------------------------------------------------------------------------
def check_settings(cfg: dict) -> None:
    """What the schema cannot say: enough distinct prompts for the largest batch, compare sizes in the sweep."""
    if len(set(cfg["prompts"])) < max(cfg["batch_sizes"]):
        raise ConfigError(f"d3_batching.prompts: a static batch of {max(cfg['batch_sizes'])} needs that many distinct "
                          f"prompts; {len(set(cfg['prompts']))} are configured. Add prompts or lower batch_sizes.")
    missing = [size for size in cfg["compare_batch_sizes"] if size not in cfg["batch_sizes"]]
    if missing:
        raise ConfigError(f"d3_batching.compare_batch_sizes: {missing} not in batch_sizes {cfg['batch_sizes']}; "
                          "each compare size must also be a static batch size.")


def run(settings: dict, measurements_path, meta_path, timeline_path, telemetry_path, trace_paths: list) -> None:
    """Run the D3 batching experiment; write measurements.csv, meta.json, timeline.csv, telemetry.csv and one
    trace per batch size (all or nothing)."""
    cfg = settings["d3_batching"]
    check_settings(cfg)
    if len(trace_paths) != len(cfg["batch_sizes"]):
        raise ValueError(f"need one trace path per batch size {cfg['batch_sizes']}, got {len(trace_paths)}")
    run_info = Run(PHASE, settings)
    device = run_info.precision.device
    torch.manual_seed(settings["seed"])
    rows = Measurements(PHASE)
    load_clock = StageClock(device)
    with load_clock.span("load_model"):
        model = models.load_model(settings["model"], run_info.precision)
    with load_clock.span("load_tokenizer"):
        tokenizer = models.load_tokenizer(settings["model"])
    for stage in ("load_model", "load_tokenizer"):
        rows.add("load", 0, f"{stage}_s", load_clock.seconds(stage), request_id=-1)
    texts = [render_prompt(tokenizer, prompt, cfg["chat_template"]) for prompt in cfg["prompts"]]
    timeline: list[dict] = []
    dynamic = cfg["dynamic"]
    settings_list = dynamic_settings(dynamic)

    origin = time.perf_counter()
    with Telemetry(cfg["telemetry_hz"], device, origin=origin) as telemetry:
        policy, energy = RepeatPolicy(settings, cfg), EnergyMeter(device)
        static = static_sweep(model, tokenizer, texts, cfg, device, origin, rows, timeline, policy, energy)
        # Warm the dynamic run's sequence length and batch shapes once (untimed).
        run_batch(model, tokenizer, texts[:1], dynamic["max_new_tokens"], device)
        for setting in tqdm(settings_list, desc="d3 dynamic runs", unit="run"):
            for repeat in range(dynamic["repeats"]):
                serve(model, tokenizer, texts, setting, dynamic["max_new_tokens"], device, origin,
                      settings["seed"] + repeat, repeat, rows, timeline)
    samples = telemetry.samples()

    targets = [*trace_paths]
    with staged(measurements_path, meta_path, timeline_path, telemetry_path, *targets) as temps:
        measurements_tmp, meta_tmp, timeline_tmp, telemetry_tmp, *trace_tmps = temps
        traced_batches(model, tokenizer, texts, cfg, device, trace_tmps, static["oom_batch_sizes"], rows)
        rows.write(measurements_tmp)
        pd.DataFrame(timeline, columns=TIMELINE_COLUMNS).to_csv(timeline_tmp, index=False)
        samples.to_csv(telemetry_tmp, index=False)
        sample_times = samples["t_s"].drop_duplicates()
        run_info.write_meta(meta_tmp, {
            "timing_method": timing_method(device),
            "repeat_policy": policy.describe(),
            "energy": energy.note(),
            "prompts": cfg["prompts"],
            "prompt_texts": texts,
            "static_prompt_tokens": static["prompt_tokens"],
            "oom_batch_sizes": static["oom_batch_sizes"],
            "dynamic_variants": [setting.variant for setting in settings_list],
            "reference": "transformers model.generate(do_sample=False, min_new_tokens=max_new_tokens, streamer)",
            "telemetry_backend": telemetry.backend,
            "telemetry_samples": int(sample_times.size),
            "telemetry_hz_achieved": float((sample_times.size - 1) / (sample_times.max() - sample_times.min()))
            if sample_times.size > 1 else float("nan"),
            "parameters": sum(p.numel() for p in model.parameters()),
        })


# ---- command line (python -m profiling d3_batching) ---------------------------------------------------------------
def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    parser.add_argument("--measurements", required=True)
    parser.add_argument("--meta", required=True)
    parser.add_argument("--timeline", required=True, help="per-request timestamps (static and dynamic batches)")
    parser.add_argument("--telemetry", required=True, help="utilisation time series")
    parser.add_argument("--traces", nargs="+", required=True, help="one trace per batch size, in config order")


def cli(args) -> None:
    run(args.settings, args.measurements, args.meta, args.timeline, args.telemetry, args.traces)
