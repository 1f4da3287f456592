"""D2 bottlenecks: is slow inference always a lack of compute? The measurements the answer is built from.

1. Ceilings: the machine's roofs, measured now (profiling/ceilings.py): memory bandwidth (large copy), matmul
   FLOP/s and matrix-vector throughput in the dtype in use, the host cost of a tiny operator (on CUDA: an empty
   kernel launch) and, on CUDA, host <-> device copy bandwidth. Written to ceilings.json (the env record plus
   the ceilings) and, one row per timed repeat, to measurements.csv.
2. Batch sweep: for each batch size, untimed generations until the decode steps settle (at least `warmup`), then
   timed generations of `decode_steps` steps until the medians are tight (measure.RepeatPolicy, at most `repeats`)
   on a synthetic prompt of exactly `prompt_tokens` tokens per sequence (random token ids: the arithmetic does
   not depend on which tokens). Rows prefill_s and decode_step_s follow the shared timing contract
   (batch_size, prompt_tokens, step, use_cache), so the analysis turns them into roofline points.
3. Traces: after each batch size's timed runs, a short separate traced run (prefill + `trace_decode_steps`
   steps) exported as reports/traces/d2_bottlenecks/decode_b<B>.json.gz; its step times are recorded as variant
   traced_b<B> so the profiler's overhead can be shown.
4. Thread scaling (CPU only): prefill and decode steps at batch 1 with 1 torch thread versus all of the run's
   threads.
5. Linear-layer shape curve (linear_shapes.py): every linear layer's weight of the model timed at `linear_rows`
   rows, in each of `linear_dtypes`, by each of `linear_kernels` (F.linear; packed once for oneDNN); the CPU's
   bfloat16 instructions and the kernel the engine runs this model's linears with are recorded in meta.json.

An out-of-memory error at a batch size is recorded as a row (metric `oom`, value 1) and the sweep goes on; its
trace file is then an empty Chrome trace.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import ceilings as device_ceilings
from . import linear_shapes
from ... import model as models
from ...engine import generate
from ...io import staged, write_json
from ...shapes import Shapes
from ...timing import timing_method
from ...tracing import export_gzip_trace, profiled, write_empty_trace
from ...measure import OutOfMemoryGuard, RepeatPolicy, Run, repeat_until_tight
from ...metrics import Measurements, record_generation

from . import NAME as PHASE


def synthetic_prompts(vocab: int, batch: int, prompt_tokens: int, seed: int, device: str):
    """(input_ids, attention_mask) of `batch` prompts of exactly `prompt_tokens` random token ids, no padding."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab, (batch, prompt_tokens), generator=generator)
    return input_ids.to(device), torch.ones_like(input_ids).to(device)


def record_ceilings(rows: Measurements, measured: list) -> dict:
    """One row per timed repeat of each ceiling (metric <name>_s, seconds); returns name -> ceilings.json record."""
    for ceiling in measured:
        for repeat, seconds in enumerate(ceiling.seconds):
            rows.add("ceilings", repeat, f"{ceiling.name}_s", seconds, request_id=-1,
                     work_bytes=ceiling.work_bytes, work_flops=ceiling.work_flops, per_call=ceiling.per_call)
    return {ceiling.name: ceiling.record() for ceiling in measured}


def timed_generations(model, input_ids, attention_mask, cfg: dict, rows: Measurements, variant: str,
                      knobs: dict, desc: str, policy: RepeatPolicy) -> None:
    """Untimed generations until the decode steps settle, then timed generations of decode_steps + 1 tokens
    (prefill + decode_steps) until the median of their median decode steps and of their prefills is tight
    (`policy`: the run-wide adaptive block, the phase's warmup and repeats)."""
    new_tokens = cfg["decode_steps"] + 1
    policy.warm_up(lambda: generate(model, input_ids, attention_mask, new_tokens).clock)

    def timed(repeat: int) -> dict:
        generation = generate(model, input_ids, attention_mask, new_tokens)
        record_generation(rows, variant, repeat, generation.clock, int(generation.tokens.shape[1]),
                          request_ids=range(knobs["batch_size"]), **knobs)
        steps = [span.seconds for span in generation.clock.spans if span.name.startswith("decode_step[")]
        return {"decode_step_s": float(np.median(steps)), "prefill_s": generation.clock.seconds("prefill")}

    repeat_until_tight(timed, policy, desc=desc)


def traced_generation(model, input_ids, attention_mask, cfg: dict, device: str, trace_path, rows: Measurements,
                      variant: str, knobs: dict) -> None:
    """A short traced run (prefill + trace_decode_steps steps) exported as a gzip Chrome trace."""
    with profiled(device) as prof:
        generation = generate(model, input_ids, attention_mask, cfg["trace_decode_steps"] + 1)
    export_gzip_trace(prof, trace_path)
    record_generation(rows, variant, 0, generation.clock, int(generation.tokens.shape[1]),
                      request_ids=range(knobs["batch_size"]), **knobs)


def batch_sweep(model, vocab: int, cfg: dict, settings: dict, device: str, threads: int, rows: Measurements,
                trace_paths: dict) -> list[int]:
    """Timed and traced generations at each batch size; returns the batch sizes that ran out of memory."""
    out_of_memory = []
    prompt_tokens = cfg["prompt_tokens"]
    for batch in tqdm(cfg["batch_sizes"], desc="d2 batch sizes", unit="batch"):
        knobs = {"batch_size": batch, "prompt_tokens": prompt_tokens, "max_new_tokens": cfg["decode_steps"] + 1,
                 "use_cache": True, "threads": threads}
        with OutOfMemoryGuard(device) as oom:
            input_ids, attention_mask = synthetic_prompts(vocab, batch, prompt_tokens, settings["seed"], device)
            timed_generations(model, input_ids, attention_mask, cfg, rows, f"b{batch}", knobs, f"d2 batch {batch}",
                              RepeatPolicy(settings, cfg))
            traced_knobs = {**knobs, "max_new_tokens": cfg["trace_decode_steps"] + 1}
            traced_generation(model, input_ids, attention_mask, cfg, device, trace_paths[batch], rows,
                              f"traced_b{batch}", traced_knobs)
        if oom.hit:
            out_of_memory.append(batch)
            oom.record(rows, f"b{batch}", **knobs)
            write_empty_trace(trace_paths[batch], f"batch {batch} ran out of memory")
    return out_of_memory


def thread_scaling(model, vocab: int, cfg: dict, settings: dict, device: str, all_threads: int,
                   rows: Measurements) -> list[int]:
    """CPU only: batch-1 generations at 1 thread and at all threads; returns the thread counts measured."""
    if not device.startswith("cpu") or not cfg["thread_scaling"] or all_threads < 2:
        return []
    counts = [all_threads, 1]
    input_ids, attention_mask = synthetic_prompts(vocab, 1, cfg["prompt_tokens"], settings["seed"], device)
    try:
        for count in tqdm(counts, desc="d2 thread scaling", unit="setting"):
            torch.set_num_threads(count)
            knobs = {"batch_size": 1, "prompt_tokens": cfg["prompt_tokens"],
                     "max_new_tokens": cfg["decode_steps"] + 1, "use_cache": True, "threads": count}
            timed_generations(model, input_ids, attention_mask, cfg, rows, f"threads_{count}", knobs,
                              f"d2 {count} thread(s)", RepeatPolicy(settings, cfg))
    finally:
        torch.set_num_threads(all_threads)
    return counts


def run(settings: dict, measurements_path, meta_path, ceilings_path, trace_paths: list) -> None:
    """Run the D2 measurements; write measurements.csv, meta.json, ceilings.json and one trace per batch size
    (all or nothing). `trace_paths` are in the order of the config's batch_sizes."""
    cfg = settings[PHASE]
    if len(trace_paths) != len(cfg["batch_sizes"]):
        raise ValueError(f"{len(trace_paths)} trace paths for {len(cfg['batch_sizes'])} batch sizes")
    run_info = Run(PHASE, settings)
    device, dtype = run_info.precision.device, run_info.precision.torch_dtype
    rows = Measurements(PHASE)
    torch.manual_seed(settings["seed"])

    with staged(measurements_path, meta_path, ceilings_path, *trace_paths) as (measurements_tmp, meta_tmp,
                                                                              ceilings_tmp, *trace_tmps):
        with tqdm(total=4 + device.startswith("cuda"), desc="d2 ceilings", unit="ceiling") as bar:
            measured = device_ceilings.measure_all(device, dtype, cfg, progress=bar)
        ceilings = record_ceilings(rows, measured)

        model = models.load_model(settings["model"], run_info.precision)
        shapes = Shapes.from_config(model.config)
        traces = dict(zip(cfg["batch_sizes"], trace_tmps))
        out_of_memory = batch_sweep(model, shapes.vocab, cfg, settings, device, run_info.threads, rows, traces)
        thread_counts = thread_scaling(model, shapes.vocab, cfg, settings, device, run_info.threads, rows)
        linear_out_of_memory = linear_shapes.measure(model, cfg, settings, device, run_info.threads, rows)

        rows.write(measurements_tmp)
        write_json(ceilings_tmp, {**run_info.env, "ceilings": ceilings})
        run_info.write_meta(meta_tmp, {
            "timing_method": timing_method(device),
            "model_shapes": asdict(shapes),
            "bytes_per_element": torch.empty((), dtype=dtype).element_size(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "weights_bytes": models.weight_bytes(model),
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "prompt": f"{cfg['prompt_tokens']} random token ids per sequence (seed {settings['seed']}), no padding",
            "traces": {str(batch): Path(path).name for batch, path in zip(cfg["batch_sizes"], trace_paths)},
            "out_of_memory_batch_sizes": out_of_memory,
            "thread_counts": thread_counts,
            "repeat_policy": RepeatPolicy(settings, cfg).describe(),
            "linear_shapes": {
                "isa": linear_shapes.cpu_isa(),
                "engine_kernel": linear_shapes.engine_kernel(model),  # prepacked | aten | small_batch | None (GPU)
                "small_batch_max_rows": linear_shapes.small_batch.MAX_ROWS,  # rows up to which cpu_linears uses it
                "repeat_policy": linear_shapes.repeat_policy(settings, cfg).describe(),
                "out_of_memory": linear_out_of_memory,
            },
        })


# ---- command line (python -m profiling d2_bottlenecks) ------------------------------------------------------------
def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    parser.add_argument("--measurements", required=True)
    parser.add_argument("--meta", required=True)
    parser.add_argument("--ceilings", required=True)
    parser.add_argument("--traces", nargs="+", required=True, help="one trace path per batch size, in config order")


def cli(args) -> None:
    run(args.settings, args.measurements, args.meta, args.ceilings, args.traces)
