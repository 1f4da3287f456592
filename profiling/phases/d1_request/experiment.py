"""D1 request anatomy: what does one request compute, and how long does each stage take?

1. Loads: `load_repeats` fresh loads of the model and the tokenizer (after one untimed load that warms the
   file cache), each timed.
2. Requests: untimed warm-up requests until the decode steps settle (measure.RepeatPolicy: at least `warmup`),
   then timed ones until the medians of the decode step, TTFT and e2e are tight (at least the run-wide
   min_repeats, at most `repeats`). Each request is
   tokenize -> prefill -> decode_step[1..n-1] -> detokenize, every stage a StageClock span.
3. A separate short traced run (prefill + `trace_decode_steps` steps, loads included) under torch.profiler,
   exported as a gzip Chrome trace. Its spans are recorded as variant "traced", so the profiler's overhead
   (traced versus untraced step time) can be measured.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from ... import model as models
from ...engine import encode_prompts, generate
from ...io import staged
from ...metrics import Measurements, record_energy, record_generation
from ...telemetry import EnergyMeter
from ...timing import StageClock, sync, timing_method
from ...tracing import export_gzip_trace, profiled
from ...measure import RepeatPolicy, Run, render_prompt, repeat_until_tight, timed_loads

from . import NAME as PHASE


def one_request(model, tokenizer, text: str, max_new_tokens: int, settings: dict, device: str,
                clock: StageClock | None = None, generator: torch.Generator | None = None):
    """Run one request end to end; return (clock, generated token ids, decoded text)."""
    clock = clock or StageClock(device)
    with clock.span("tokenize"):
        input_ids, attention_mask = encode_prompts(tokenizer, [text], device)
    generation = generate(
        model, input_ids, attention_mask, max_new_tokens, clock=clock, generator=generator,
        do_sample=settings["do_sample"], temperature=settings["temperature"], top_k=settings["top_k"],
        eos_token_id=tokenizer.eos_token_id if settings["stop_at_eos"] else None,
        pad_token_id=tokenizer.pad_token_id,
    )
    with clock.span("detokenize"):
        output_text = tokenizer.decode(generation.tokens[0], skip_special_tokens=True)
    return clock, generation.tokens[0], output_text, int(input_ids.shape[1])


def run(settings: dict, measurements_path, meta_path, trace_path) -> None:
    """Run the D1 experiment and write measurements.csv, meta.json and the gzip trace (all or nothing)."""
    cfg = settings[PHASE]
    run_info = Run(PHASE, settings)
    device = run_info.precision.device
    rows = Measurements(PHASE)
    torch.manual_seed(settings["seed"])
    generator = torch.Generator(device=device).manual_seed(settings["seed"]) if cfg["do_sample"] else None

    # 1. Loads: one untimed (file cache, imports), then load_repeats timed fresh loads.
    timed_loads(settings["model"], run_info)
    for repeat in tqdm(range(cfg["load_repeats"]), desc="d1 loads", unit="load"):
        model, tokenizer, load_model_s, load_tokenizer_s = timed_loads(settings["model"], run_info)
        rows.add("untraced", repeat, "load_model_s", load_model_s, request_id=-1)
        rows.add("untraced", repeat, "load_tokenizer_s", load_tokenizer_s, request_id=-1)

    text = render_prompt(tokenizer, cfg["prompt"], cfg["chat_template"])
    max_new = cfg["max_new_tokens"]

    # 2. Requests: warm-up until the decode steps settle, then timed repeats until the medians are tight.
    policy = RepeatPolicy(settings, cfg)
    warmup_calls = policy.warm_up(lambda: one_request(model, tokenizer, text, max_new, cfg, device,
                                                      generator=generator)[0])
    last = {}
    energy = EnergyMeter(device)

    def timed_request(repeat: int) -> dict:
        before = energy.read_j()
        clock, tokens, last["text"], last["prompt_tokens"] = one_request(model, tokenizer, text, max_new, cfg,
                                                                         device, generator=generator)
        joules = energy.joules_between(before, energy.read_j())
        knobs = {"batch_size": 1, "prompt_tokens": last["prompt_tokens"], "max_new_tokens": max_new}
        figures = record_generation(rows, "untraced", repeat, clock, len(tokens), **knobs)
        record_energy(rows, "untraced", repeat, joules, **knobs)
        steps = [span.seconds for span in clock.spans if span.name.startswith("decode_step[")]
        return {"decode_step_s": float(np.median(steps)) if steps else figures["e2e_s"], "e2e_s": figures["e2e_s"],
                "ttft_s": figures["ttft_s"]}

    repeats_made = repeat_until_tight(timed_request, policy, desc="d1 requests")
    output_text, prompt_tokens = last["text"], last["prompt_tokens"]

    # 3. Traced run: short, separate, loads included so the trace shows the whole request's life.
    traced_new = cfg["trace_decode_steps"] + 1
    with staged(measurements_path, meta_path, trace_path) as (measurements_tmp, meta_tmp, trace_tmp):
        sync(device)
        traced_start = time.perf_counter()
        with profiled(device) as prof:
            clock = StageClock(device)
            traced_model, traced_tokenizer, _, _ = timed_loads(settings["model"], run_info, clock)
            request_clock = StageClock(device)
            _, tokens, _, _ = one_request(traced_model, traced_tokenizer, text, traced_new, cfg, device,
                                          clock=request_clock, generator=generator)
        traced_wall_s = time.perf_counter() - traced_start
        knobs = {"batch_size": 1, "prompt_tokens": prompt_tokens, "max_new_tokens": traced_new}
        rows.add("traced", 0, "load_model_s", clock.seconds("load_model"), request_id=-1)
        rows.add("traced", 0, "load_tokenizer_s", clock.seconds("load_tokenizer"), request_id=-1)
        record_generation(rows, "traced", 0, request_clock, len(tokens), **knobs)
        export_gzip_trace(prof, trace_tmp)
        rows.write(measurements_tmp)
        run_info.write_meta(meta_tmp, {
            "timing_method": timing_method(device),
            "prompt": cfg["prompt"],
            "prompt_text": text,
            "prompt_tokens": prompt_tokens,
            "output_text": output_text,
            "weights_bytes": models.weight_bytes(model),
            "parameters": sum(p.numel() for p in model.parameters()),
            "model_config": {key: getattr(model.config, key, None) for key in (
                "model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "max_position_embeddings")},
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "traced_wall_s": traced_wall_s,
            "repeat_policy": policy.describe(),
            "warmup_calls": warmup_calls,
            "repeats_made": repeats_made,
            "energy": energy.note(),
            "trace_decode_steps": cfg["trace_decode_steps"],
        })


# ---- command line (python -m profiling d1_request) ----------------------------------------------------------------
def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    parser.add_argument("--measurements", required=True)
    parser.add_argument("--meta", required=True)
    parser.add_argument("--trace", required=True)


def cli(args) -> None:
    run(args.settings, args.measurements, args.meta, args.trace)
