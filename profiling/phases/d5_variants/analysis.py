"""D5 analysis: the variant table, the timelines side by side, and the next directions ranked by headroom.

Reads D5's measurements.csv, meta.json and traces, D2's ceilings.json (the bandwidth roof; optional) and the
model's config file (its shapes name the linear layers). Never runs the model. Writes:

    summary.csv     statistics of every timed metric per variant and batch size (stats.summary_table)
    variants.csv    the variant table: one row per variant and batch size (see `variant_table`)
    step_split.csv  where the decode step of the best variant and of the reference goes (step_split.rows)
    findings.json   key numbers, the timelines, the step split and the ranked directions (the report words them)

Definitions (seconds, bytes, bytes/s, joules):
    step_p50_s             median over the timed generations of each one's median decode step (the D5 reference
                           step: D5's own request and output length, so not D1's step); ci95: bootstrap of that
                           median; repeats = n; step_half_width_ratio = the CI's half-width / the median
    speedup                decode only: reference step p50 / variant step p50 (> 1 is faster), bootstrap 95% CI
    e2e_speedup            end to end (prefill + decode + one-off per request costs): reference e2e p50 / variant
                           e2e p50, bootstrap 95% CI; a variant can win decode and lose end to end
    decode_tok_per_s       batch / step_p50_s
    achieved_bandwidth     step_weight_bytes / step_p50_s (weights in the variant's own storage, as gpt-fast)
    roof_share             achieved_bandwidth / roof; roof = the highest bandwidth in D2's ceilings.json
    one_off_s              build_s + (warmup_s - warmup calls x e2e p50): loading, quantising, compiling, first calls
    energy_per_token_j     energy_j / (batch x output_tokens), median over repeats
    host_overhead_share    host time / decode step wall time, from a trace (step_split.host_share: the wall time
                           outside kernels; compiled variants are built with Inductor's kernel profiling on, so
                           their fused kernels count as kernels, and Dynamo's guards and wrappers as host time)
    step_split             per decode step of the traced run (batch 1), for the best variant at the smallest batch
                           and the reference: kernel seconds by operator category, host seconds between kernels
                           (they add up to the step's wall time), the weight bytes the linear layers read and the
                           bandwidth they reach (bytes / their kernel seconds) against the roof; its verdict key
                           `biggest` is the part that takes the most seconds (step_split.py)
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ...io import read_json, staged, write_json
from ...metrics import energy_per_token, headline, per_repeat, profiler_overhead_ratio
from ...stats import bootstrap_ratio_ci, precision, summarize, summary_table
from ...trace_ops import operator_table, stage_spans  # the one import of the trace helpers
from ..d2_bottlenecks.roof import bandwidth_roof as roof_bandwidth  # the machine's one roof
from . import NAME as PHASE
from . import REFERENCE, VLLM, step_split
from .yardsticks import PEERS, yardsticks

ENGINE_STAGE = r"^(tokenize|prefill|decode_step\[\d+\]|detokenize)$"  # the engine's span labels
STEP_INDEX = re.compile(r"\[\d+\]$")


# ---- reading -----------------------------------------------------------------------------------------------------
def timed_rows(measurements: pd.DataFrame) -> pd.DataFrame:
    """Rows of the untraced runs and the per-variant constants (traced != 1)."""
    traced = measurements["traced"] if "traced" in measurements else pd.Series(0, index=measurements.index)
    return measurements[traced.fillna(0) != 1]


def values(rows: pd.DataFrame, variant: str, metric: str, batch: int | None = None) -> list[float]:
    """Every value of `metric` for `variant` (and batch size, when given)."""
    selected = rows[(rows["variant"] == variant) & (rows["metric"] == metric)]
    if batch is not None:
        selected = selected[selected["batch_size"] == batch]
    return selected["value"].astype(float).tolist()


def one_value(rows: pd.DataFrame, variant: str, metric: str, batch: int | None = None) -> float:
    """The median of `metric` (NaN when absent)."""
    found = values(rows, variant, metric, batch)
    return float(np.median(found)) if found else float("nan")


# ---- the variant table -------------------------------------------------------------------------------------------
def of_setting(rows: pd.DataFrame, variant: str, batch: int) -> pd.DataFrame:
    """The rows of one variant at one batch size."""
    return rows[(rows["variant"] == variant) & (rows["batch_size"] == batch)]


def warmup_calls(rows: pd.DataFrame, variant: str, batch: int, warmup: int) -> float:
    """Untimed warm-up generations the variant ran at `batch` (the experiment records them; older runs: `warmup`)."""
    made = one_value(rows, variant, "warmup_calls", batch)
    return warmup if math.isnan(made) else made


def variant_row(rows: pd.DataFrame, variant: str, batch: int, roof: float, warmup: int,
                policy: dict | None = None) -> dict:
    """One row of the variant table (see the module docstring for every definition)."""
    setting, reference = of_setting(rows, variant, batch), of_setting(rows, REFERENCE, batch)
    steps = per_repeat(setting, "decode_step_s")  # one value per timed generation: its median step
    reference_steps = per_repeat(reference, "decode_step_s")
    stats = summarize(steps)
    speedup, speedup_low, speedup_high = bootstrap_ratio_ci(reference_steps, steps)
    e2e = per_repeat(setting, "e2e_s")
    e2e_speedup, e2e_low, e2e_high = bootstrap_ratio_ci(per_repeat(reference, "e2e_s"), e2e)
    step_p50 = stats.get("p50", float("nan"))
    weight_bytes = one_value(rows, variant, "step_weight_bytes")
    kv_bytes = one_value(rows, variant, "step_kv_bytes", batch)
    achieved = weight_bytes / step_p50
    e2e_p50 = float(np.median(e2e)) if e2e else float("nan")
    warmup_s = one_value(rows, variant, "warmup_s", batch)
    build_s = one_value(rows, variant, "build_s")
    energy = [joules / (batch * tokens) for joules, tokens in zip(
        per_repeat(setting, "energy_j"), per_repeat(setting, "output_tokens"))]
    reference_step = float(np.median(reference_steps)) if reference_steps else float("nan")
    reference_bytes = one_value(rows, REFERENCE, "step_weight_bytes")
    threads = setting["threads"].dropna() if "threads" in setting else pd.Series(dtype=float)
    return {
        "variant": variant, "batch_size": batch, "available": True,
        "step_p50_s": step_p50, "step_ci95_low_s": stats.get("ci95_low"), "step_ci95_high_s": stats.get("ci95_high"),
        "step_p90_s": stats.get("p90"), "step_cv": stats.get("cv"),
        "steps_n": len(values(rows, variant, "decode_step_s", batch)),
        "repeats": stats.get("n", 0), "step_half_width_ratio": stats.get("half_width_ratio"),
        "at_cap": precision(steps, policy)["at_cap"],
        "speedup": speedup, "speedup_ci95_low": speedup_low, "speedup_ci95_high": speedup_high,
        "e2e_p50_s": e2e_p50,
        "e2e_speedup": e2e_speedup, "e2e_speedup_ci95_low": e2e_low, "e2e_speedup_ci95_high": e2e_high,
        "prefill_p50_s": one_value(rows, variant, "prefill_s", batch),
        "output_tok_per_s": one_value(rows, variant, "output_tok_per_s", batch),
        "decode_tok_per_s": batch / step_p50,
        "threads": int(threads.median()) if len(threads) else None,
        "peak_memory_bytes": one_value(rows, variant, "peak_memory_bytes"),
        "build_s": build_s, "warmup_s": warmup_s,
        "one_off_s": build_s + max(0.0, warmup_s - warmup_calls(rows, variant, batch, warmup) * e2e_p50),
        "step_weight_bytes": weight_bytes, "step_kv_bytes": kv_bytes,
        "bytes_ratio": weight_bytes / reference_bytes, "time_ratio": step_p50 / reference_step,
        "achieved_bandwidth_bytes_per_s": achieved,
        "achieved_bandwidth_with_kv_bytes_per_s": (weight_bytes + kv_bytes) / step_p50,
        "roof_bytes_per_s": roof, "roof_share": achieved / roof,
        "token_match_ratio": one_value(rows, variant, "token_match_ratio", batch),
        "first_logit_max_abs_diff": one_value(rows, variant, "first_logit_max_abs_diff", batch),
        "energy_per_token_j": float(np.median(energy)) if energy else float("nan"),
        "reason": "",
    }


def variant_table(measurements: pd.DataFrame, meta: dict, roof: float, batch_sizes: list[int],
                  warmup: int, policy: dict | None = None) -> pd.DataFrame:
    """One row per variant (config order) and batch size; an unavailable variant has one row per batch size with
    available False and its reason, and so has a variant at a batch size it did not run at (meta's `not_run`)."""
    rows = timed_rows(measurements)
    unavailable = meta["notes"].get("unavailable", {})
    not_run = meta["notes"].get("not_run", {})
    table = []
    for variant in variant_order(measurements):
        for batch in batch_sizes:
            if variant in unavailable:
                table.append({"variant": variant, "batch_size": batch, "available": False,
                              "reason": unavailable[variant]})
            elif batch in not_run.get(variant, {}).get("batch_sizes", []):
                table.append({"variant": variant, "batch_size": batch, "available": False,
                              "reason": not_run[variant]["reason"]})
            else:
                table.append(variant_row(rows, variant, batch, roof, warmup, policy))
    return pd.DataFrame(table)


def variant_order(measurements: pd.DataFrame) -> list[str]:
    """Variants in the order the experiment ran them (the reference first; the yardsticks' rows are not variants)."""
    names = [name for name in dict.fromkeys(measurements["variant"]) if name not in PEERS]
    return [REFERENCE] + [name for name in names if name != REFERENCE]


def best_variant(table: pd.DataFrame, batch: int) -> str:
    """The available variant with the highest speed-up at `batch` (the reference when none is faster)."""
    rows = table[(table["batch_size"] == batch) & table["available"]].dropna(subset=["speedup"])
    return str(rows.sort_values("speedup", ascending=False).iloc[0]["variant"])


# ---- timelines ---------------------------------------------------------------------------------------------------
def enclosing_stages(spans: pd.DataFrame) -> dict:
    """Annotation name -> the engine stage group (prefill, decode_step, …) whose span contains most of its
    occurrences, for annotations nested inside the engine's spans (e.g. a compiled graph's "## Call
    CompiledFxGraph … ##"): the operators under them belong to that stage."""
    engine = spans[spans["name"].str.match(ENGINE_STAGE)]
    votes: dict = {}
    for _, span in spans[~spans["name"].str.match(ENGINE_STAGE)].iterrows():
        inside = engine[(engine["start_s"] <= span["start_s"])
                        & (engine["start_s"] + engine["seconds"] >= span["start_s"] + span["seconds"])]
        if len(inside):
            group = STEP_INDEX.sub("", inside.iloc[-1]["name"])
            votes.setdefault(span["name"], []).append(group)
    return {name: max(set(groups), key=groups.count) for name, groups in votes.items()}


def timeline(trace_path) -> dict:
    """From one variant's trace: decode steps, operators per step, seconds per step (span wall), host-overhead
    share (step_split.host_share) and operator self seconds per step by operator name (CPU operators; on CUDA
    kernels too)."""
    spans = stage_spans(trace_path)
    decode = spans[spans["name"].str.startswith("decode_step[")]
    steps = len(decode)
    if steps == 0:
        return {"decode_steps": 0}
    operators = operator_table(trace_path)
    operators["stage"] = operators["stage"].replace(enclosing_stages(spans))
    in_decode = operators[operators["stage"] == "decode_step"].groupby(["device", "op"], as_index=False).agg(
        calls=("calls", "sum"), self_s=("self_s", "sum"))
    cpu = in_decode[in_decode["device"] == "cpu"]
    wall = float(decode["seconds"].sum())
    per_op = (in_decode.groupby(["device", "op"])["self_s"].sum() / steps)
    return {
        "decode_steps": steps,
        "step_wall_s": wall / steps,
        "operators_per_step": float(cpu["calls"].sum()) / steps,
        "host_overhead_share": step_split.host_share(trace_path),
        "kernels_per_step": float(in_decode.loc[in_decode["device"] == "cuda", "calls"].sum()) / steps,
        "op_self_s_per_step": {f"{device}:{op}": float(s) for (device, op), s in per_op.items()},
    }


def moved_operators(reference: dict, best: dict, top: int) -> list[dict]:
    """The `top` operators whose self seconds per decode step changed most between two timelines."""
    ops_a, ops_b = reference.get("op_self_s_per_step", {}), best.get("op_self_s_per_step", {})
    moved = [{"op": op, "reference_s": ops_a.get(op, 0.0), "best_s": ops_b.get(op, 0.0),
              "delta_s": ops_b.get(op, 0.0) - ops_a.get(op, 0.0)} for op in set(ops_a) | set(ops_b)]
    return sorted(moved, key=lambda row: abs(row["delta_s"]), reverse=True)[:top]


# ---- directions --------------------------------------------------------------------------------------------------
def directions(table: pd.DataFrame, timelines: dict, best: str, batch_sizes: list[int], roof: dict,
               threads_variant: str = "threads_1") -> list[dict]:
    """The limits found, ranked by measured headroom in seconds per output token (largest first), each mapped to
    one of the plan's three lines with the numbers that motivate it."""
    small, large = min(batch_sizes), max(batch_sizes)
    at = table.set_index(["variant", "batch_size"])
    best_row, reference_row = at.loc[(best, small)], at.loc[(REFERENCE, small)]
    found = []
    if not math.isnan(roof["bytes_per_s"]):
        floor_s = best_row["step_weight_bytes"] / roof["bytes_per_s"]
        found.append({
            "limit": "bandwidth", "line": "kernel",
            "headroom_s_per_token": best_row["step_p50_s"] - floor_s,
            "numbers": {"batch_size": int(small), "reference_roof_share": reference_row["roof_share"],
                        "best_roof_share": best_row["roof_share"], "best_variant": best,
                        "step_s": best_row["step_p50_s"], "roof_floor_s": floor_s,
                        "roof_bytes_per_s": roof["bytes_per_s"], "roof_source": roof["source"]}})
    best_timeline = timelines.get(best, {})
    if best_timeline.get("decode_steps"):
        share = best_timeline["host_overhead_share"]
        found.append({
            "limit": "host_overhead", "line": "systems",
            "headroom_s_per_token": share * best_row["step_p50_s"],
            "numbers": {"best_variant": best, "host_overhead_share": share,
                        "reference_host_overhead_share": timelines.get(REFERENCE, {}).get("host_overhead_share"),
                        "operators_per_step": round(best_timeline["operators_per_step"])}})
    # batching: the best variant among those that ran at the largest batch too (a costly one may not have)
    at_both = set(table.loc[(table["batch_size"] == large) & table["available"], "variant"])
    batched = best if best in at_both else best_variant(table[table["variant"].isin(at_both)], small)
    if large != small and batched in at_both:
        small_row, large_row = at.loc[(batched, small)], at.loc[(batched, large)]
        per_token_small = 1.0 / small_row["decode_tok_per_s"]
        per_token_large = 1.0 / large_row["decode_tok_per_s"]
        found.append({
            "limit": "batching", "line": "serving",
            "headroom_s_per_token": per_token_small - per_token_large,
            "numbers": {"best_variant": batched, "small_batch": small, "large_batch": large,
                        "small_batch_decode_tok_per_s": small_row["decode_tok_per_s"],
                        "large_batch_decode_tok_per_s": large_row["decode_tok_per_s"],
                        "batch_gain": per_token_small / per_token_large, "ideal_gain": large / small}})
    if (threads_variant, small) in at.index and at.loc[(threads_variant, small)]["available"]:
        found.append(thread_scaling_direction(at.loc[(threads_variant, small)], reference_row))
    for item in found:  # the variant whose headroom it is
        item["variant"] = item["numbers"].get("variant", item["numbers"].get("best_variant", best))
    return sorted(found, key=lambda item: item["headroom_s_per_token"], reverse=True)


def thread_scaling_direction(one_thread: pd.Series, all_threads: pd.Series) -> dict:
    """What thread scaling can still give the reference (the variant the 1-thread run is a copy of): with T
    threads in use, perfect scaling would make a step one_thread_step / T; the headroom is the all-thread step
    minus that (never below 0), seconds per token at batch 1. The gain already taken (1 thread -> T) is not
    headroom."""
    threads = all_threads.get("threads")
    threads = int(threads) if threads is not None and threads == threads and threads > 0 else 1
    perfect = one_thread["step_p50_s"] / threads
    return {"limit": "thread_scaling", "line": "systems",
            "headroom_s_per_token": max(0.0, all_threads["step_p50_s"] - perfect),
            "numbers": {"variant": REFERENCE, "threads": threads, "one_thread_step_s": one_thread["step_p50_s"],
                        "all_threads_step_s": all_threads["step_p50_s"], "perfect_scaling_step_s": perfect,
                        "scaling": one_thread["step_p50_s"] / all_threads["step_p50_s"],
                        "efficiency": one_thread["step_p50_s"] / all_threads["step_p50_s"] / threads}}


# ---- where the decode step goes ----------------------------------------------------------------------------------
def step_splits(traces: dict, best: str, shapes, roof: dict) -> dict:
    """variant -> step_split.summary of its trace, for the best variant and the reference (those with a trace that
    has decode steps), best first."""
    splits = {}
    for name in dict.fromkeys([best, REFERENCE]):
        split = step_split.step_split(traces[name], shapes) if name in traces else None
        if split is not None:
            splits[name] = step_split.summary(split, roof["bytes_per_s"])
    return splits


def step_split_findings(splits: dict, best: str) -> dict | None:
    """findings.json's step_split (None when the best variant has no traced decode step): the variants shown (best
    first), the parts in table order (those with time in some variant), each variant's summary (by_variant; its
    `biggest` is the verdict key)."""
    if best not in splits:
        return None
    parts = [part for part in step_split.PARTS if any(entry["parts_s"][part] > 0 for entry in splits.values())]
    return {"best": best, "reference": REFERENCE, "variants": list(splits), "parts": parts + [step_split.HOST],
            "by_variant": splits}


def step_split_table(splits: dict) -> pd.DataFrame:
    """step_split.csv: step_split.rows of every variant in `splits` (only the header without any)."""
    table = [row for name, entry in splits.items() for row in step_split.rows(name, entry)]
    return pd.DataFrame(table, columns=step_split.COLUMNS)


# ---- findings ----------------------------------------------------------------------------------------------------
def fastest_at(table: pd.DataFrame, batch: int) -> str | None:
    """The available variant with the highest end-to-end output tok/s at `batch` (None when none has one)."""
    rows = table[(table["batch_size"] == batch) & table["available"]].dropna(subset=["output_tok_per_s"])
    return None if rows.empty else str(rows.sort_values("output_tok_per_s", ascending=False).iloc[0]["variant"])


def against_vllm(measurements: pd.DataFrame, table: pd.DataFrame) -> list[dict]:
    """Per vLLM mode and batch size: vLLM's offline output tok/s (end to end, prefill included; median over its
    repeats) against our fastest variant's at that batch size, and their ratio (ours / vLLM's)."""
    vllm = measurements[(measurements["variant"] == VLLM) & (measurements["metric"] == "output_tok_per_s")]
    vllm = vllm.assign(mode=vllm["mode"].fillna("") if "mode" in vllm else "")
    rows = []
    for (mode, batch), group in vllm.groupby(["mode", "batch_size"], sort=False):
        batch = int(batch)
        fastest = fastest_at(table, batch)
        ours = table[(table["variant"] == fastest) & (table["batch_size"] == batch)]
        tok_per_s = float(ours["output_tok_per_s"].iloc[0]) if len(ours) else float("nan")
        theirs = float(group["value"].median())
        rows.append({"mode": mode or None, "batch_size": batch, "variant": fastest,
                     "repeats": int(ours["repeats"].iloc[0]) if len(ours) else 0, "vllm_repeats": len(group),
                     "vllm_tok_per_s": theirs, "best_tok_per_s": tok_per_s, "ratio": tok_per_s / theirs})
    return rows


def findings(measurements: pd.DataFrame, meta: dict, table: pd.DataFrame, roof: dict, timelines: dict,
             batch_sizes: list[int], cfg: dict, splits: dict) -> dict:
    small = min(batch_sizes)
    best = best_variant(table, small)
    ranked = directions(table, timelines, best, batch_sizes, roof)
    at = table.set_index(["variant", "batch_size"])
    timed = timed_rows(measurements)
    best_b1 = timed[(timed["variant"] == best) & (timed["batch_size"] == small)]
    reference_b1 = timed[(timed["variant"] == REFERENCE) & (timed["batch_size"] == small)]
    labelled = measurements.assign(variant=np.where(measurements.get("traced", 0) == 1,
                                                    measurements["variant"] + "@traced", measurements["variant"]))
    return {
        "reference": REFERENCE,
        "best_variant": best,
        "batch_sizes": batch_sizes,
        "costly_batch_sizes": cfg.get("costly_batch_sizes", batch_sizes),
        "best_speedup_b1": float(at.loc[(best, small), "speedup"]),
        "best_speedup_b1_ci95": [float(at.loc[(best, small), "speedup_ci95_low"]),
                                 float(at.loc[(best, small), "speedup_ci95_high"])],
        "best_token_match_ratio_b1": float(at.loc[(best, small), "token_match_ratio"]),
        "best_roof_share_b1": float(at.loc[(best, small), "roof_share"]),
        "reference_roof_share_b1": float(at.loc[(REFERENCE, small), "roof_share"]),
        "roof_bytes_per_s": roof["bytes_per_s"],
        "roof_source": roof["source"],
        "roof_note": None if roof["source"] else "no D2 ceilings.json: roof shares are not computed",
        "targets": {"speedup_b1": cfg.get("target_speedup", 2.5), "roof_share_b1": cfg.get("target_roof_share", 0.7)},
        "unavailable": meta["notes"].get("unavailable", {}),
        # costly variants (compiled, fewer threads) not run at some batch sizes: variant -> those batch sizes
        "not_run": {name: entry["batch_sizes"] for name, entry in meta["notes"].get("not_run", {}).items()},
        "energy_note": meta["notes"].get("energy_unavailable_reason"),
        # joules per output token of the best variant at the smallest batch, or the meter that is missing
        "energy": {**energy_per_token(best_b1, meta["notes"].get("energy", {})),
                   "variant": best, "batch_size": small},
        "memory_method": meta["notes"].get("memory_method"),
        "cpu_capability": meta["notes"].get("cpu_capability"),
        "cuda_capability": meta["notes"].get("cuda_capability"),
        "profiler_overhead_ratio": {name: profiler_overhead_ratio(labelled, f"{name}@traced", name)
                                    for name in timelines},
        "timelines": {name: {k: v for k, v in t.items() if k != "op_self_s_per_step"}
                      for name, t in timelines.items()},
        "timeline_comparison": {
            "reference": REFERENCE, "best": best,
            "moved_operators": moved_operators(timelines.get(REFERENCE, {}), timelines.get(best, {}),
                                               cfg.get("top_ops", 8))},
        "step_split": step_split_findings(splits, best),
        "directions": ranked,
        "vllm_offline": {**meta["notes"].get("vllm_offline", {"measured": False}),
                         "against_best": against_vllm(measurements, table)},
        "yardsticks": yardsticks(measurements, meta, cfg, table, roof["bytes_per_s"], batch_sizes),
        "headlines": [
            headline(f"decode step b{small} (reference)", per_repeat(reference_b1, "decode_step_s"), "s", "lower"),
            headline(f"decode step b{small} (best variant)", per_repeat(best_b1, "decode_step_s"), "s", "lower"),
            headline(f"output tok/s b{small} (best variant)", per_repeat(best_b1, "output_tok_per_s"), "tok/s",
                     "higher")],  # labels stay the same across runs, so runs compare; best_variant names it
    }


def traces_by_variant(meta: dict, traces: list) -> dict:
    """variant -> trace path, matched by the file names meta.json lists for each variant."""
    by_name = {Path(path).name: path for path in traces}
    return {variant: by_name[name] for variant, name in meta["notes"].get("traces", {}).items() if name in by_name}


def analyze(settings: dict, measurements_path, meta_path, ceilings_path, traces: list, summary_path,
            variants_table_path, findings_path, step_split_path=None) -> None:
    """Write summary.csv, variants.csv, findings.json and (when given a path) step_split.csv from D5's files (and
    D2's ceilings.json when given). `traces` are the experiment's trace paths (matched to variants through
    meta.json); with traces, the model's config file gives its shapes (settings["model"])."""
    cfg = settings[PHASE]
    measurements = pd.read_csv(measurements_path)
    meta = read_json(meta_path)
    ceilings = read_json(ceilings_path) if ceilings_path and Path(ceilings_path).exists() else None
    roof = roof_bandwidth(ceilings)
    batch_sizes = [int(b) for b in cfg["batch_sizes"]]
    table = variant_table(measurements, meta, roof["bytes_per_s"], batch_sizes, cfg["warmup"],
                          meta["notes"].get("repeat_policy"))
    traced = traces_by_variant(meta, traces)
    timelines = {name: timeline(path) for name, path in traced.items()}
    timelines = {name: t for name, t in timelines.items() if t.get("decode_steps")}
    shapes = step_split.model_shapes(settings["model"]) if timelines else None
    splits = step_splits(traced, best_variant(table, min(batch_sizes)), shapes, roof) if timelines else {}
    by = ["variant", *[knob for knob in ("quant", "mode") if knob in measurements], "batch_size", "metric"]
    summary = summary_table(timed_rows(measurements), by, settings["cv_warn"])  # the peers' settings apart
    outputs = [summary_path, variants_table_path, findings_path] + ([step_split_path] if step_split_path else [])
    with staged(*outputs) as (summary_tmp, table_tmp, findings_tmp, *split_tmp):
        summary.to_csv(summary_tmp, index=False)
        table.to_csv(table_tmp, index=False)
        write_json(findings_tmp, findings(measurements, meta, table, roof, timelines, batch_sizes, cfg, splits))
        for path in split_tmp:
            step_split_table(splits).to_csv(path, index=False)


# ---- command line (python -m profiling d5_variants_analysis) -----------------------------------------------------
def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    parser.add_argument("--measurements", required=True)
    parser.add_argument("--meta", required=True)
    parser.add_argument("--ceilings", default=None, help="D2's ceilings.json (the bandwidth roof); optional")
    parser.add_argument("--traces", nargs="+", required=True, help="the experiment's traces (one per variant)")
    parser.add_argument("--summary", required=True)
    parser.add_argument("--variants-table", required=True)
    parser.add_argument("--findings", required=True)
    parser.add_argument("--step-split", default=None, help="step_split.csv: where the best variant's step goes")


def cli(args) -> None:
    analyze(args.settings, args.measurements, args.meta, args.ceilings, args.traces, args.summary,
            args.variants_table, args.findings, args.step_split)
