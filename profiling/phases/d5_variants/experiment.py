"""D5 variants: which lever moves decode, and by how much? The measurements the variant table is built from.

Workload: the D1 request (a chat prompt, fixed output length, greedy) at each of `batch_sizes` (a batch of B
copies of the request, so there is no padding).

1. Build: each configured variant (variants.py) is built from the model files; a variant that cannot run here
   (CUDA-only on a CPU, or a build that fails) gets one `unavailable` row and its reason in meta.json, never a
   crash. Building (load + quantise) is `build_s`; the peak memory of build + warm-up is `peak_memory_bytes`.
2. Warm-up per batch size: untimed generations of WARMUP_NEW_TOKENS tokens until the decode steps settle, at least
   `warmup` (torch.compile compiles here): `warmup_s`, `warmup_calls`. A costly variant runs only at
   `costly_batch_sizes`: a compiled one (its decode step is compiled anew for each batch size, 30-60 s each on 2
   cores), one on fewer threads, or one named in `costly_variants`; meta.json's `not_run` says so.
3. Timed rounds per batch size until every variant's median decode step is tight (measure.RepeatPolicy: at least
   the run-wide min_repeats, at most `repeats`); each round runs every variant once, the reference included, in an
   order rotated by one each round, so slow drift of a shared machine falls on all variants alike. Every timed
   generation is recorded by metrics.record_generation; `energy_j` is added where a counter is readable.
4. Agreement with the reference, per batch size: greedy-token match rate over the request (`token_match_ratio`)
   and the max absolute difference of the first step's logits (`first_logit_max_abs_diff`).
5. Bytes: `step_weight_bytes` (weights one decode step reads, in the variant's own storage) and, per batch size,
   `step_kv_bytes` (key/value bytes a decode step reads, averaged over the request's steps).
6. Traces: one short traced run per variant (batch 1, prefill + `trace_decode_steps` steps) exported as a gzip
   Chrome trace; its rows carry traced = 1 so the profiler's overhead can be shown.

Rows of timed runs carry traced = 0. Times are seconds, memory and bytes are bytes, energy joules.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ...engine import encode_prompts
from ...io import staged
from ...measure import RepeatPolicy, Run, render_prompt, repeat_until_tight
from ...metrics import RUN_ROW, Measurements, record_generation
from ...model import load_tokenizer
from ...timing import StageClock, sync, timing_method
from ...tracing import export_gzip_trace, profiled, write_empty_trace
from . import variants as V
from .counters import EnergyMeter, PeakMemory

from . import LLAMA_CPP, VLLM
from . import NAME as PHASE


def rotated(names: list[str], shift: int) -> list[str]:
    """`names` rotated left by `shift` (the interleaving order of one timed round)."""
    shift %= len(names)
    return names[shift:] + names[:shift]


def batch_inputs(tokenizer, text: str, batch: int, device: str):
    """(input_ids, attention_mask) of `batch` copies of the request."""
    return encode_prompts(tokenizer, [text] * batch, device)


def kv_bytes_per_step(config, spec: V.Spec, batch: int, prompt_tokens: int, max_new_tokens: int) -> float:
    """Key/value bytes one decode step reads, averaged over the request's steps: all layers' keys and values of
    the context attended to (the whole cache length with a static cache, the tokens so far with a dynamic one)."""
    layers = config.num_hidden_layers
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if spec.cache == "static":
        context = prompt_tokens + max_new_tokens
    else:
        context = prompt_tokens + max_new_tokens / 2  # steps 1..n-1 attend to prompt + step tokens
    return 2 * layers * heads * head_dim * context * batch * V.kv_bytes_per_element(spec)


# ---- build and warm up -------------------------------------------------------------------------------------------
WARMUP_NEW_TOKENS = 4  # tokens of a warm-up generation: its first call pays the first-call costs (compilation
                      # included: a static cache keeps the timed runs' length), its last decode steps show they settled


def is_costly(name: str, spec: V.Spec, cfg: dict) -> bool:
    """A compiled variant (each batch size compiles its decode step anew), one on fewer threads, or one the config
    lists in `costly_variants`."""
    return spec.compile != "none" or bool(spec.threads) or name in cfg.get("costly_variants", [])


def batches_of(name: str, spec: V.Spec, cfg: dict) -> list[int]:
    """The batch sizes a variant runs at: all of `batch_sizes`, or for a costly variant those also in
    `costly_batch_sizes`."""
    if not is_costly(name, spec, cfg):
        return list(cfg["batch_sizes"])
    return [batch for batch in cfg["batch_sizes"] if batch in cfg["costly_batch_sizes"]]


def not_run_reason(name: str, spec: V.Spec, cfg: dict) -> str:
    """Why a costly variant has no row at a batch size outside `costly_batch_sizes`."""
    sizes = ", ".join(str(batch) for batch in cfg["costly_batch_sizes"]) or "none"
    if spec.compile != "none":
        why = "each batch size compiles the decode step anew"
    elif spec.threads:
        why = "thread scaling is read at the smallest batch"
    else:
        why = "listed in costly_variants, to keep the phase short"
    return f"run at batch {sizes} only (costly_batch_sizes): {why}"


def build_and_warm(name: str, settings: dict, device: str, inputs: dict, cfg: dict, rows: Measurements,
                   policy: RepeatPolicy):
    """Build variant `name` and run its warm-up generations at every batch size, inside one PeakMemory window.

    Returns (Built or None, reason or None, memory method). Rows: build_s, warmup_s per batch size,
    peak_memory_bytes, step_weight_bytes."""
    spec = V.spec_of(name)
    reason = V.unavailable_reason(spec, device)
    if reason is not None:
        return None, reason, None
    try:
        with PeakMemory(device) as peak:
            built = V.build(name, settings["model"], device)
            warm_s, warm_calls = {}, {}
            for batch, (input_ids, attention_mask) in inputs.items():
                if batch not in batches_of(name, spec, cfg):
                    continue
                sync(device)
                start = time.perf_counter()

                def call(input_ids=input_ids, attention_mask=attention_mask):
                    clock = StageClock(device)
                    built.generate(input_ids, attention_mask, min(WARMUP_NEW_TOKENS, cfg["max_new_tokens"]), clock,
                                   cache_new_tokens=cfg["max_new_tokens"])
                    return clock

                warm_calls[batch] = policy.warm_up(call)
                sync(device)
                warm_s[batch] = time.perf_counter() - start
    except Exception as error:  # noqa: BLE001 - any failure to build or run a variant is a row, not a crash
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        tqdm.write(f"d5 {name}: unavailable ({type(error).__name__}: {first_line})")
        return None, f"build or first run failed: {type(error).__name__}: {first_line}", None
    rows.add(name, 0, "build_s", built.build_s, request_id=RUN_ROW)
    rows.add(name, 0, "peak_memory_bytes", peak.delta_bytes, request_id=RUN_ROW)
    rows.add(name, 0, "step_weight_bytes", built.weight_bytes, request_id=RUN_ROW)
    for batch, seconds in warm_s.items():
        rows.add(name, 0, "warmup_s", seconds, request_id=RUN_ROW, batch_size=batch)
        rows.add(name, 0, "warmup_calls", warm_calls[batch], request_id=RUN_ROW, batch_size=batch)
    return built, None, peak.method


# ---- timed rounds ----------------------------------------------------------------------------------------------
def timed_rounds(built: dict, batch: int, input_ids, attention_mask, cfg: dict, device: str, rows: Measurements,
                 energy: EnergyMeter, knobs: dict, policy: RepeatPolicy) -> dict:
    """Rounds of one generation per variant in rotated order until every variant's median decode step is tight
    (`policy`); returns name -> tokens of its first timed generation (batch, max_new_tokens)."""
    names = list(built)
    first_tokens = {}

    def one_round(repeat: int) -> dict:
        figures = {}
        for name in rotated(names, repeat):
            clock = StageClock(device)
            before = energy.read_j()
            tokens = built[name].generate(input_ids, attention_mask, cfg["max_new_tokens"], clock)
            joules = energy.joules_between(before, energy.read_j())
            record_generation(rows, name, repeat, clock, int(tokens.shape[1]), request_ids=tuple(range(batch)),
                              **knobs, threads=torch.get_num_threads() if not built[name].spec.threads
                              else built[name].spec.threads)
            if joules is not None:
                rows.add(name, repeat, "energy_j", joules, request_id=RUN_ROW, **knobs)
            first_tokens.setdefault(name, tokens)
            steps = [span.seconds for span in clock.spans if span.name.startswith("decode_step[")]
            figures[name] = float(np.median(steps)) if steps else clock.end_of("prefill")
        return figures

    repeat_until_tight(one_round, policy, desc=f"d5 batch {batch}")
    return first_tokens


def record_agreement(built: dict, first_tokens: dict, input_ids, attention_mask, rows: Measurements,
                     knobs: dict) -> None:
    """token_match_ratio (share of generated tokens equal to the reference's, same positions) and
    first_logit_max_abs_diff (max |logit - reference logit| over the prefill's last position) per variant."""
    reference_tokens = first_tokens[V.REFERENCE]
    reference_logits = built[V.REFERENCE].first_logits(input_ids, attention_mask)
    for name, variant in built.items():
        match = (first_tokens[name] == reference_tokens).float().mean().item()
        logits = variant.first_logits(input_ids, attention_mask)
        diff = (logits - reference_logits).abs().max().item()
        rows.add(name, 0, "token_match_ratio", match, request_id=RUN_ROW, **knobs)
        rows.add(name, 0, "first_logit_max_abs_diff", diff, request_id=RUN_ROW, **knobs)


def traced_run(variant: V.Built, tokenizer, text: str, cfg: dict, device: str, trace_path, rows: Measurements,
               knobs: dict) -> None:
    """A short traced generation at batch 1 (prefill + trace_decode_steps steps) -> gzip Chrome trace."""
    input_ids, attention_mask = batch_inputs(tokenizer, text, 1, device)
    new_tokens = cfg["trace_decode_steps"] + 1
    clock = StageClock(device)
    with profiled(device) as prof:
        # The cache is as long as in the timed runs, so a compiled step is not recompiled under the profiler.
        tokens = variant.generate(input_ids, attention_mask, new_tokens, clock, cache_new_tokens=cfg["max_new_tokens"])
    export_gzip_trace(prof, trace_path)
    record_generation(rows, variant.name, 0, clock, int(tokens.shape[1]), **knobs)


# ---- the run -----------------------------------------------------------------------------------------------------
def run(settings: dict, measurements_path, meta_path, trace_paths: list) -> None:
    """Run D5; write measurements.csv, meta.json and one gzip trace per configured variant (in config order),
    all or nothing."""
    cfg = settings[PHASE]
    names = list(cfg["variants"])
    if V.REFERENCE not in names:
        names.insert(0, V.REFERENCE)
    if len(trace_paths) != len(cfg["variants"]):
        raise ValueError(f"{len(trace_paths)} trace paths for {len(cfg['variants'])} variants")
    trace_of = dict(zip(cfg["variants"], trace_paths))
    run_info = Run(PHASE, settings)
    device = run_info.precision.device
    rows = Measurements(PHASE)
    torch.manual_seed(settings["seed"])

    tokenizer = load_tokenizer(settings["model"])
    text = render_prompt(tokenizer, cfg["prompt"], cfg["chat_template"])
    inputs = {batch: batch_inputs(tokenizer, text, batch, device) for batch in cfg["batch_sizes"]}
    prompt_tokens = int(inputs[cfg["batch_sizes"][0]][0].shape[1])
    energy = EnergyMeter(device)
    policy = RepeatPolicy(settings, cfg)

    built, unavailable, memory_method = {}, {}, None
    for name in tqdm(names, desc="d5 build + warm-up", unit="variant"):
        variant, reason, method = build_and_warm(name, settings, device, inputs, cfg, rows, policy)
        if variant is None:
            unavailable[name] = reason
            rows.add(name, 0, "unavailable", 1, request_id=RUN_ROW)
            continue
        built[name] = variant
        memory_method = memory_method or method
    if V.REFERENCE not in built:
        raise RuntimeError(f"the reference could not be built: {unavailable.get(V.REFERENCE)}")

    outputs, not_run = {}, {}
    for batch, (input_ids, attention_mask) in inputs.items():
        knobs = {"batch_size": batch, "prompt_tokens": prompt_tokens, "max_new_tokens": cfg["max_new_tokens"],
                 "traced": 0}
        here = {name: variant for name, variant in built.items() if batch in batches_of(name, variant.spec, cfg)}
        for name, variant in built.items():
            if name not in here:
                reason = not_run_reason(name, variant.spec, cfg)
                not_run.setdefault(name, {"batch_sizes": [], "reason": reason})["batch_sizes"].append(batch)
        first_tokens = timed_rounds(here, batch, input_ids, attention_mask, cfg, device, rows, energy, knobs, policy)
        record_agreement(here, first_tokens, input_ids, attention_mask, rows, {"batch_size": batch})
        for name, variant in here.items():
            kv = kv_bytes_per_step(variant.model.config, variant.spec, batch, prompt_tokens, cfg["max_new_tokens"])
            rows.add(name, 0, "step_kv_bytes", kv, request_id=RUN_ROW, batch_size=batch)
        if batch == cfg["batch_sizes"][0]:
            first_tokens_b1 = first_tokens
            outputs = {name: tokenizer.decode(tokens[0], skip_special_tokens=True)
                       for name, tokens in first_tokens.items()}

    # the peers get the same prompt ids (one copy per sequence) and are checked against the reference's tokens
    ids = [int(token) for token in inputs[cfg["batch_sizes"][0]][0][0]]
    reference_tokens = [int(token) for token in first_tokens_b1[V.REFERENCE][0]]
    vllm = vllm_offline(settings, cfg, ids, rows, reference_tokens, built[V.REFERENCE].weight_bytes)
    llama_cpp = llama_cpp_yardstick(settings, cfg, ids, rows, reference_tokens)

    with staged(measurements_path, meta_path, *trace_paths) as (measurements_tmp, meta_tmp, *trace_tmps):
        trace_tmp_of = dict(zip(cfg["variants"], trace_tmps))
        for name in tqdm(cfg["variants"], desc="d5 traces", unit="variant"):
            if name not in built:
                write_empty_trace(trace_tmp_of[name], f"variant {name} unavailable: {unavailable[name]}")
                continue
            knobs = {"batch_size": 1, "prompt_tokens": prompt_tokens,
                     "max_new_tokens": cfg["trace_decode_steps"] + 1, "traced": 1}
            traced_run(built[name], tokenizer, text, cfg, device, trace_tmp_of[name], rows, knobs)
        rows.write(measurements_tmp)
        run_info.write_meta(meta_tmp, {
            "timing_method": timing_method(device),
            "reference": V.REFERENCE,
            "variants": {name: variant.describe() for name, variant in built.items()},
            "unavailable": unavailable,
            "not_run": not_run,  # variant -> {batch_sizes: [...], reason}: built, but not run at those batch sizes
            "traces": {name: str(trace_of[name]).rsplit("/", 1)[-1] for name in cfg["variants"]},
            "prompt": cfg["prompt"],
            "prompt_text": text,
            "prompt_tokens": prompt_tokens,
            "batch_inputs": "B copies of the request (no padding)",
            "interleaving": "each timed round runs every variant once, order rotated by one per round",
            "repeat_policy": policy.describe(),
            "outputs_batch1": outputs,
            "memory_method": memory_method,
            "energy_method": energy.method,
            "energy_unavailable_reason": energy.reason,
            "energy": energy.note(),
            "vllm_offline": vllm,
            "llama_cpp": llama_cpp,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda_capability": list(torch.cuda.get_device_capability()) if device.startswith("cuda") else None,
            "bytes_note": "step_weight_bytes: weights read per decode step in the variant's own storage (int8 = "
                          "1 byte + scales; embedding rows not counted, a tied lm_head counted once)",
        })


# ---- the yardsticks from .venv-reference: vLLM and llama.cpp ------------------------------------------------------
LLAMA_CPP_CACHE = Path("resources") / "llama_cpp"  # requantised GGUFs (git-ignored), one per source file and type


def token_match(tokens: list[int], reference_tokens: list[int]) -> float:
    """Share of positions where `tokens` equal the reference's greedy tokens, over the shorter of the two."""
    length = min(len(tokens), len(reference_tokens))
    return sum(a == b for a, b in zip(tokens[:length], reference_tokens[:length])) / length if length else float("nan")


def record_vllm(result: dict, rows: Measurements, prompt_tokens: int, reference_tokens: list[int],
                weight_bytes: float) -> None:
    """Rows of one vLLM mode's run (vllm_offline.py's JSON): per batch size and repeat prefill_s, e2e_s,
    decode_step_s (one decode step of all B sequences), output_tok_per_s; once startup_s and warmup_s; at the
    smallest batch token_match_ratio against our reference's greedy tokens; step_weight_bytes."""
    mode = result["mode"]
    constants = {"mode": mode, "batch_size": None}
    rows.add(VLLM, 0, "startup_s", result["startup_s"], request_id=RUN_ROW, **constants)
    rows.add(VLLM, 0, "warmup_s", result["warmup_s"], request_id=RUN_ROW, **constants)
    rows.add(VLLM, 0, "step_weight_bytes", weight_bytes, request_id=RUN_ROW, **constants)
    for entry in result["results"]:
        knobs = {"mode": mode, "batch_size": entry["batch_size"], "prompt_tokens": prompt_tokens,
                 "max_new_tokens": result["output_tokens"], "traced": 0}
        for repeat, timed in enumerate(entry["repeats"]):
            for metric in ("prefill_s", "e2e_s", "decode_step_s", "output_tok_per_s"):
                rows.add(VLLM, repeat, metric, timed[metric], request_id=RUN_ROW, **knobs)
    smallest = min(result["results"], key=lambda entry: entry["batch_size"])
    rows.add(VLLM, 0, "token_match_ratio", token_match(smallest["tokens"], reference_tokens), request_id=RUN_ROW,
             mode=mode, batch_size=smallest["batch_size"])


def vllm_offline(settings: dict, cfg: dict, ids: list[int], rows: Measurements, reference_tokens: list[int],
                 reference_weight_bytes: float) -> dict:
    """vLLM's offline `LLM.generate` on the same request at every batch size, once per configured mode (compiled:
    its default with torch.compile; eager), when .venv-reference has vLLM; otherwise (or when a mode fails) a
    note, never an error. Returns meta's entry: version, and per mode measured or its note."""
    from ...model import local_model_dir
    from ...serving.bench import reference

    peer = cfg.get("reference") or {}
    if not peer.get("enabled"):
        return {"measured": False, "note": "disabled in the config"}
    if not peer.get("vllm_modes"):
        return {"measured": False, "note": "no mode in d5_variants.reference.vllm_modes"}
    available, why = reference.reference_available()
    if not available:
        return {"measured": False, "note": why}
    model_dir = local_model_dir(settings["model"])
    if model_dir is None:
        return {"measured": False, "note": f"no local directory of {settings['model']} for vLLM to load"}
    # vLLM loads the same safetensors in the run's dtype: the reference's float32 bytes, scaled to that dtype
    weight_bytes = reference_weight_bytes * torch.tensor([], dtype=getattr(torch, settings["dtype"])).element_size() / 4
    modes = {}
    for mode in tqdm(peer["vllm_modes"], desc="d5 vLLM", unit="mode"):
        # the run's threads, bound to its cores; the engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0): with
        # the engine in a process of its own, its spinning threads on every core starve the caller's process
        ref = reference.ReferenceSettings(dtype=settings["dtype"], enforce_eager=mode == "eager",
                                          omp_threads_bind=f"0-{torch.get_num_threads() - 1}",
                                          extra_env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
        try:
            result = reference.run_offline(model_dir, [ids], cfg["batch_sizes"], peer["output_tokens"], ref,
                                           repeats=peer["repeats"])
        except (reference.ReferenceServerError, OSError, subprocess.SubprocessError) as error:
            modes[mode] = {"measured": False, "note": f"vLLM's offline run ({mode}) failed: {str(error)[-800:]}"}
            continue
        record_vllm(result, rows, len(ids), reference_tokens, weight_bytes)
        modes[mode] = {"measured": True, "startup_s": result["startup_s"]}
        version = result["vllm_version"]
    if not any(entry["measured"] for entry in modes.values()):
        return {"measured": False, "note": "; ".join(entry["note"] for entry in modes.values()), "modes": modes}
    return {"measured": True, "version": version, "modes": modes, "output_tokens": peer["output_tokens"],
            "threads": torch.get_num_threads(), "weight_bytes_note": "the reference's weights in the run's dtype"}


def record_llama_cpp(result: dict, rows: Measurements, reference_tokens: list[int]) -> None:
    """Rows of llama_cpp_bench.py's JSON: per quant type, batch size and repeat every decode_step_s (one step of
    all B sequences, with its `step`), prefill_s and output_tok_per_s (B x tokens / (prefill + steps)); once per
    quant type load_model_s, quantize_s, step_weight_bytes; at the smallest batch token_match_ratio against our
    reference's greedy tokens."""
    for model in result["models"]:
        constants = {"quant": model["quant"], "batch_size": None}
        rows.add(LLAMA_CPP, 0, "load_model_s", model["load_s"], request_id=RUN_ROW, **constants)
        rows.add(LLAMA_CPP, 0, "quantize_s", model["quantize_s"], request_id=RUN_ROW, **constants)
        rows.add(LLAMA_CPP, 0, "step_weight_bytes", model["step_weight_bytes"], request_id=RUN_ROW, **constants)
        for entry in model["results"]:
            knobs = {"quant": model["quant"], "batch_size": entry["batch_size"],
                     "prompt_tokens": result["prompt_tokens"], "max_new_tokens": result["output_tokens"],
                     "traced": 0, "threads": result["threads"]}
            for repeat, timed in enumerate(entry["repeats"]):
                rows.add(LLAMA_CPP, repeat, "prefill_s", timed["prefill_s"], request_id=RUN_ROW, **knobs)
                for step, seconds in enumerate(timed["decode_step_s"], start=1):
                    rows.add(LLAMA_CPP, repeat, "decode_step_s", seconds, request_id=RUN_ROW, step=step, **knobs)
                e2e = timed["prefill_s"] + sum(timed["decode_step_s"])
                rows.add(LLAMA_CPP, repeat, "output_tok_per_s", entry["batch_size"] * len(timed["tokens"]) / e2e,
                         request_id=RUN_ROW, **knobs)
        smallest = min(model["results"], key=lambda entry: entry["batch_size"])
        rows.add(LLAMA_CPP, 0, "token_match_ratio", token_match(smallest["repeats"][0]["tokens"], reference_tokens),
                 request_id=RUN_ROW, quant=model["quant"], batch_size=smallest["batch_size"])


def llama_cpp_yardstick(settings: dict, cfg: dict, ids: list[int], rows: Measurements,
                        reference_tokens: list[int]) -> dict:
    """llama.cpp on the GGUF the model package ships, requantised by llama.cpp to each configured type, the same
    request's token ids at every batch size and the run's threads, when .venv-reference has llama-cpp-python;
    otherwise (or when it fails) a note, never an error. Returns meta's entry."""
    from ...config import EMBEDDED_MODEL
    from ...model import find_smollm2_gguf
    from ...serving.bench import reference

    peer = cfg.get("reference") or {}
    if not peer.get("enabled"):
        return {"measured": False, "note": "disabled in the config"}
    if not peer.get("llama_cpp_quants"):
        return {"measured": False, "note": "no type in d5_variants.reference.llama_cpp_quants"}
    if settings["model"] != EMBEDDED_MODEL:
        return {"measured": False, "note": f"llama.cpp needs a GGUF; only {EMBEDDED_MODEL} ships one"}
    available, why = reference.llama_cpp_available()
    if not available:
        return {"measured": False, "note": why}
    threads = torch.get_num_threads()
    tqdm.write(f"d5 llama.cpp: {', '.join(peer['llama_cpp_quants'])} at {threads} threads")
    try:
        result = reference.run_llama_cpp(find_smollm2_gguf(), ids, LLAMA_CPP_CACHE, cfg["batch_sizes"],
                                         peer["output_tokens"], threads, peer["repeats"], peer["llama_cpp_quants"])
    except (reference.ReferenceServerError, OSError, subprocess.SubprocessError) as error:
        return {"measured": False, "note": f"llama.cpp's run failed: {str(error)[-800:]}"}
    record_llama_cpp(result, rows, reference_tokens)
    failed = result.get("failed", {})
    return {"measured": bool(result["models"]), "version": result["llama_cpp_version"], "build": result["build"].split(" ")[0],
            "build_detail": result["build"],
            "system_info": result["system_info"], "threads": threads, "output_tokens": result["output_tokens"],
            "source": result["source"], "failed": failed,
            "files": {model["quant"]: {"file": model["file"], "tensor_bytes": model["tensor_bytes"],
                                       "types": model["types"], "tied_embeddings": model["tied_embeddings"],
                                       "model_size_bytes": model["model_size_bytes"]}
                      for model in result["models"]},
            **({} if result["models"] else {"note": "; ".join(f"{q}: {why}" for q, why in failed.items())})}


# ---- command line (python -m profiling d5_variants) --------------------------------------------------------------
def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    parser.add_argument("--measurements", required=True)
    parser.add_argument("--meta", required=True)
    parser.add_argument("--traces", nargs="+", required=True, help="one trace path per variant, in config order")


def cli(args) -> None:
    run(args.settings, args.measurements, args.meta, args.traces)
