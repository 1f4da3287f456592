"""D3 KV cache: when does the KV cache save you, and when does it eat your memory?

Prompts of exact token counts (`prompt_lengths`) are cut by the tokenizer from real English text (SOURCE_TEXT,
repeated when a prompt is longer than it; no chat template). For each prompt length P:

1. Latency, batch 1, cache on then off. Short untimed runs (prefill + 2 decode steps) until their steps settle
   (at least `warmup`), then timed runs until the median decode step is tight (measure.RepeatPolicy; at most
   `repeats`, or `no_cache_repeats` without the cache). With the cache each decode step feeds only the newest token and reuses the stored keys/values; without
   it each step recomputes the whole sequence (P + i tokens), exactly as `use_cache=False` does. The runs without
   the cache may generate fewer tokens (`no_cache_max_new_tokens`) and repeat fewer times (`no_cache_repeats`),
   because each of their steps costs a whole prefill. The greedy tokens of both runs are compared.
2. Memory: after the first timed run of each setting, the bytes of the cache's key/value tensors (measured) and
   the formula's bytes (profiling/shapes.py) are recorded; on CUDA also the allocator's peak
   (`torch.cuda.max_memory_allocated`) minus what was allocated before the run. Each batch size B > 1 of
   `batch_sizes` adds one run per P with the cache on (the same prompt B times), right after the latency runs.
3. Traces: one short traced run per latency setting (prefill + `trace_decode_steps` steps), exported as a gzip
   Chrome trace; numbers come from the untraced runs only.

An out-of-memory error at one setting is recorded as a row (metric `oom`, value 1) and the sweep continues.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ... import model as models
from ...config import ConfigError
from ...engine import generate
from ...io import staged
from .variants import latency_variants, memory_batch_sizes, variant_name
from .kv_memory import bytes_per_token, cache_tensor_bytes, cached_positions
from ...shapes import Shapes, kv_cache_bytes, model_shapes
from ...metrics import Measurements, record_generation
from ...timing import timing_method
from ...tracing import export_gzip_trace, profiled, write_empty_trace
from ...measure import OutOfMemoryGuard, RepeatPolicy, Run, repeat_until_tight, timed_loads

from . import NAME as PHASE
WARMUP_NEW_TOKENS = 3  # a warm-up run: prefill + 2 decode steps, enough to touch every code path at that shape

# Real English prose (public domain: Charles Darwin, "On the Origin of Species", 1859, from the Introduction).
# Prompts are its first P tokens; it is repeated when a prompt needs more tokens than it has.
SOURCE_NAME = "Charles Darwin, On the Origin of Species (1859), Introduction"
SOURCE_TEXT = (
    "When on board H.M.S. 'Beagle,' as naturalist, I was much struck with certain facts in the distribution of "
    "the inhabitants of South America, and in the geological relations of the present to the past inhabitants of "
    "that continent. These facts seemed to me to throw some light on the origin of species, that mystery of "
    "mysteries, as it has been called by one of our greatest philosophers. On my return home, it occurred to me, "
    "in 1837, that something might perhaps be made out on this question by patiently accumulating and reflecting "
    "on all sorts of facts which could possibly have any bearing on it. After five years' work I allowed myself "
    "to speculate on the subject, and drew up some short notes; these I enlarged in 1844 into a sketch of the "
    "conclusions, which then seemed to me probable: from that period to the present day I have steadily pursued "
    "the same object. I hope that I may be excused for entering on these personal details, as I give them to "
    "show that I have not been hasty in coming to a decision.\n\n"
    "My work is now nearly finished; but as it will take me two or three more years to complete it, and as my "
    "health is far from strong, I have been urged to publish this Abstract. I have more especially been induced "
    "to do this, as Mr. Wallace, who is now studying the natural history of the Malay archipelago, has arrived "
    "at almost exactly the same general conclusions that I have on the origin of species. This Abstract, which "
    "I now publish, must necessarily be imperfect. I cannot here give references and authorities for my several "
    "statements; and I must trust to the reader reposing some confidence in my accuracy. No doubt errors will "
    "have crept in, though I hope I have always been cautious in trusting to good authorities alone.\n\n"
)


# ---- the settings grid (names in variants.py) ----------------------------------------------------------------
def new_tokens(cfg: dict, use_cache: bool) -> int:
    """Tokens generated per run: max_new_tokens with the cache; without it at most no_cache_max_new_tokens."""
    if use_cache:
        return cfg["max_new_tokens"]
    return min(cfg["no_cache_max_new_tokens"], cfg["max_new_tokens"])


def check_context(cfg: dict, max_positions: int) -> None:
    """Raise ConfigError when a prompt plus its generated tokens would not fit the model's context (tokens)."""
    if max_positions <= 0:  # the model does not say; nothing to check against
        return
    limit = max_positions - cfg["max_new_tokens"]
    too_long = [p for p in cfg["prompt_lengths"] if p > limit]
    if too_long:
        raise ConfigError(
            f"d3_kvcache.prompt_lengths: {too_long} {'is' if len(too_long) == 1 else 'are'} too long for this model. "
            f"Its context is max_position_embeddings = {max_positions} tokens and d3_kvcache.max_new_tokens = "
            f"{cfg['max_new_tokens']} of them are for generated tokens, so a prompt may have at most {limit} tokens.")


# ---- prompts ---------------------------------------------------------------------------------------------------
def prompt_ids(tokenizer, length: int, text: str = SOURCE_TEXT) -> list[int]:
    """The first `length` token ids of `text` (repeated as often as needed), without special tokens."""
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    repeats = -(-length // len(text_ids))  # ceiling division
    return (text_ids * repeats)[:length]


def batch_of(ids: list[int], batch_size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of `batch_size` copies of one prompt: no padding, every row P tokens."""
    input_ids = torch.tensor([ids] * batch_size, dtype=torch.long, device=device)
    return input_ids, torch.ones_like(input_ids)


# ---- memory ----------------------------------------------------------------------------------------------------
class AllocatorPeak:
    """Peak bytes the CUDA caching allocator handed out during a block, above what was allocated at its start.

    Created just before the block (it resets the peak counter); `delta_bytes()` after it. On the CPU torch keeps
    no such counter, so `delta_bytes()` is None there.
    """

    def __init__(self, device: str):
        self.start_bytes = None
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_bytes = torch.cuda.memory_allocated()

    def delta_bytes(self) -> int | None:
        if self.start_bytes is None:
            return None
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - self.start_bytes






# ---- one setting -----------------------------------------------------------------------------------------------
class Setting:
    """One point of the grid: prompt length (tokens), cache on/off, batch size, tokens to generate."""

    def __init__(self, prompt_tokens: int, use_cache: bool, batch_size: int, max_new_tokens: int):
        self.prompt_tokens = prompt_tokens
        self.use_cache = use_cache
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.variant = variant_name(prompt_tokens, use_cache, batch_size)

    def knobs(self) -> dict:
        """The knob columns every row of this setting carries (the shared data contract)."""
        return {"prompt_tokens": self.prompt_tokens, "use_cache": self.use_cache, "batch_size": self.batch_size,
                "max_new_tokens": self.max_new_tokens}


def record_memory(rows: Measurements, setting: Setting, generation, shapes: Shapes, bytes_per_element: int,
                  peak_delta_bytes: int | None) -> None:
    """Rows of the cache's size after one run: positions held, measured tensor bytes, the formula's bytes, and
    (CUDA only) the allocator's peak delta."""
    knobs = setting.knobs()
    output_tokens = int(generation.tokens.shape[1])
    positions = cached_positions(setting.prompt_tokens, output_tokens) if setting.use_cache else 0
    analytic = kv_cache_bytes(shapes, positions, setting.batch_size, bytes_per_element)
    rows.add(setting.variant, 0, "kv_cache_positions_tokens", positions, request_id=-1, **knobs)
    rows.add(setting.variant, 0, "kv_cache_bytes", cache_tensor_bytes(generation.cache), request_id=-1, **knobs)
    rows.add(setting.variant, 0, "kv_cache_analytic_bytes", analytic, request_id=-1, **knobs)
    if peak_delta_bytes is not None:
        rows.add(setting.variant, 0, "peak_alloc_delta_bytes", peak_delta_bytes, request_id=-1, **knobs)


def measure_setting(model, ids: list[int], setting: Setting, policy: RepeatPolicy, device: str,
                    rows: Measurements, shapes: Shapes, bytes_per_element: int, progress) -> torch.Tensor | None:
    """Warm up until the short runs' decode steps settle, then time runs of one setting until the median
    per-token time is tight (`policy`: at most the setting's repeats); record timing rows for every run and memory
    rows for the first. Returns the first run's tokens (batch, new tokens), or None when the setting ran out of
    memory."""
    first_tokens = None
    with OutOfMemoryGuard(device) as oom:
        input_ids, attention_mask = batch_of(ids, setting.batch_size, device)
        policy.warm_up(lambda: generate(model, input_ids, attention_mask,
                                        min(WARMUP_NEW_TOKENS, setting.max_new_tokens),
                                        use_cache=setting.use_cache).clock)

        def timed(repeat: int) -> dict:
            nonlocal first_tokens
            peak = AllocatorPeak(device)
            generation = generate(model, input_ids, attention_mask, setting.max_new_tokens,
                                  use_cache=setting.use_cache)
            record_generation(rows, setting.variant, repeat, generation.clock, int(generation.tokens.shape[1]),
                              request_ids=range(setting.batch_size), **setting.knobs())
            if repeat == 0:
                record_memory(rows, setting, generation, shapes, bytes_per_element, peak.delta_bytes())
                first_tokens = generation.tokens
            steps = [span.seconds for span in generation.clock.spans if span.name.startswith("decode_step[")]
            progress.update(1)
            return {"decode_step_s": float(np.median(steps)) if steps else generation.clock.seconds("prefill")}

        repeat_until_tight(timed, policy, desc=setting.variant)
    if oom.hit:
        oom.record(rows, setting.variant, **setting.knobs())
        return None
    return first_tokens


def traced_run(model, ids: list[int], setting: Setting, decode_steps: int, device: str, trace_path,
               rows: Measurements) -> dict:
    """A short traced run (prefill + `decode_steps` steps) exported to `trace_path`, its spans recorded as variant
    traced_<variant>. Out of memory: an empty trace that says so, and {"oom": True}."""
    with OutOfMemoryGuard(device) as oom:
        input_ids, attention_mask = batch_of(ids, setting.batch_size, device)
        with profiled(device) as prof:
            generation = generate(model, input_ids, attention_mask, decode_steps + 1, use_cache=setting.use_cache)
        export_gzip_trace(prof, trace_path)
        record_generation(rows, f"traced_{setting.variant}", 0, generation.clock, int(generation.tokens.shape[1]),
                          **{**setting.knobs(), "max_new_tokens": decode_steps + 1})
    if oom.hit:
        oom.release()
        write_empty_trace(trace_path, f"{setting.variant}: out of memory")
        return {"oom": True}
    return {}


# ---- the experiment --------------------------------------------------------------------------------------------
def check_trace_paths(cfg: dict, paths: list) -> dict:
    """Map each latency variant to the trace path given for it (file name `<variant>.json.gz`)."""
    by_variant = {Path(p).name.removesuffix(".json.gz"): p for p in paths}
    expected = latency_variants(cfg)
    if sorted(by_variant) != sorted(expected):
        raise ValueError(f"trace paths {sorted(by_variant)} do not match the settings {expected}")
    return by_variant


def run(settings: dict, measurements_path, meta_path, traces: list) -> None:
    """Run the D3 KV-cache experiment; write measurements.csv, meta.json and one trace per latency setting
    (all or nothing)."""
    cfg = settings["d3_kvcache"]
    trace_for = check_trace_paths(cfg, traces)
    # The prompt lengths are checked against the model's context before anything is measured.
    shapes = model_shapes(models.model_source(settings["model"]))
    check_context(cfg, shapes.max_positions)

    run_info = Run(PHASE, settings)
    device = run_info.precision.device
    rows = Measurements(PHASE)
    torch.manual_seed(settings["seed"])
    model, tokenizer, load_model_s, load_tokenizer_s = timed_loads(settings["model"], run_info)
    rows.add("load", 0, "load_model_s", load_model_s, request_id=-1)
    rows.add("load", 0, "load_tokenizer_s", load_tokenizer_s, request_id=-1)
    bytes_per_element = next(model.parameters()).element_size()
    prompts = {p: prompt_ids(tokenizer, p) for p in cfg["prompt_lengths"]}

    latency = [(Setting(p, use_cache, 1, new_tokens(cfg, use_cache)),
                cfg["repeats"] if use_cache else cfg["no_cache_repeats"])
               for p in cfg["prompt_lengths"] for use_cache in (True, False)]
    memory = [Setting(p, True, b, cfg["max_new_tokens"])
              for b in memory_batch_sizes(cfg) for p in cfg["prompt_lengths"]]
    total_runs = sum(repeats for _, repeats in latency) + len(memory) + len(latency)
    progress = tqdm(total=total_runs, desc="d3 kv cache", unit="run")

    # 1. Latency (batch 1), cache on then off, per prompt length; the greedy tokens of both are compared.
    first_tokens = {}
    for setting, repeats in latency:
        progress.set_postfix_str(setting.variant)
        policy = RepeatPolicy(settings, {"repeats": repeats, "warmup": cfg["warmup"]})
        first_tokens[setting.variant] = measure_setting(model, prompts[setting.prompt_tokens], setting, policy,
                                                        device, rows, shapes, bytes_per_element, progress)
    tokens_match = {}
    for p in cfg["prompt_lengths"]:
        on, off = first_tokens[variant_name(p, True, 1)], first_tokens[variant_name(p, False, 1)]
        if on is not None and off is not None:
            tokens_match[str(p)] = bool(torch.equal(on[:, :off.shape[1]], off))

    # 2. Memory: one timed run per prompt length at each larger batch size, cache on, after the same short
    #    warm-up as every setting (its timing rows are roofline points for D2, so they follow the same rules).
    for setting in memory:
        progress.set_postfix_str(setting.variant)
        measure_setting(model, prompts[setting.prompt_tokens], setting,
                        RepeatPolicy(settings, {"repeats": 1, "warmup": cfg["warmup"]}), device, rows, shapes,
                        bytes_per_element, progress)

    # 3. Traces: one short traced run per latency setting, then write everything at once.
    with staged(measurements_path, meta_path, *trace_for.values()) as temps:
        measurements_tmp, meta_tmp, trace_temps = temps[0], temps[1], dict(zip(trace_for, temps[2:]))
        traced = {}
        for setting, _ in latency:
            progress.set_postfix_str(f"traced {setting.variant}")
            traced[setting.variant] = traced_run(model, prompts[setting.prompt_tokens], setting,
                                                 cfg["trace_decode_steps"], device, trace_temps[setting.variant], rows)
            progress.update(1)
        progress.close()
        rows.write(measurements_tmp)
        shortest = min(cfg["prompt_lengths"])
        run_info.write_meta(meta_tmp, {
            "timing_method": timing_method(device),
            "memory_method": ("torch.cuda.max_memory_allocated() - memory_allocated() before the run, after "
                              "reset_peak_memory_stats()" if device.startswith("cuda") else
                              "CPU: torch keeps no allocator peak counter; only the cache tensors' bytes are measured"),
            "source_text": SOURCE_NAME,
            "prompt_preview": tokenizer.decode(prompts[shortest]),
            "source_text_tokens": len(tokenizer(SOURCE_TEXT, add_special_tokens=False)["input_ids"]),
            "new_tokens": {"cache_on": new_tokens(cfg, True), "cache_off": new_tokens(cfg, False)},
            "warmup_new_tokens": WARMUP_NEW_TOKENS,
            "tokens_match": tokens_match,
            "weights_bytes": models.weight_bytes(model),
            "parameters": sum(p.numel() for p in model.parameters()),
            "bytes_per_element": bytes_per_element,
            "kv_bytes_per_token": bytes_per_token(shapes, bytes_per_element),
            "shapes": {"layers": shapes.layers, "heads": shapes.heads, "kv_heads": shapes.kv_heads,
                       "head_dim": shapes.head_dim, "hidden": shapes.hidden, "max_positions": shapes.max_positions},
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "traces": {variant: {"file": f"traces/d3_kvcache/{variant}.json.gz", **times}
                       for variant, times in traced.items()},
        })


# ---- command line (python -m profiling d3_kvcache) ----------------------------------------------------------------
def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    parser.add_argument("--measurements", required=True)
    parser.add_argument("--meta", required=True)
    parser.add_argument("--traces", nargs="+", required=True, help="one <variant>.json.gz per latency setting")


def cli(args) -> None:
    run(args.settings, args.measurements, args.meta, args.traces)
