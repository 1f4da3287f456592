"""D2 analysis: roofline points with verdicts, the time breakdown by operator category, thread scaling.

Reads files only (never runs the model):
    D2's measurements.csv, meta.json (the model's shapes), ceilings.json (the measured roofs), its decode traces;
    the measurements.csv of the other phases that feed the roofline (FEEDS_ROOFLINE in their metadata).
Writes summary.csv, roofline.csv (one row per point), breakdown.csv (time by category per traced batch size and
stage), linear_shapes.csv (the linear-layer shape curve: shape_curve.py) and findings.json (the numbers the
report's text and the progress wall's line are generated from).

Roofline points. Every row with metric prefill_s or decode_step_s (the shared timing contract: batch_size,
prompt_tokens, step, use_cache) is one forward pass; its FLOPs and bytes come from the analytic model
(analysis/costs.py). Rows of one run (one repeat of one variant) and one stage are pooled into a point:
achieved FLOP/s = FLOPs / seconds of that run, the median over runs is the point's value, min and max its spread.
Traced runs are left out (the profiler slows them); so are D2's thread-scaling runs (they have their own table).

Verdict per point, against the measured ceilings:
    ridge      = matmul FLOP/s / memory bandwidth (FLOP per byte)
    roof       = min(matmul FLOP/s, intensity x bandwidth): the most the point could reach at its intensity
    roof share = achieved FLOP/s / roof
    overhead-bound  roof share < overhead_threshold (default 0.2): far below both roofs, so neither moving
                    bytes nor doing FLOPs explains the time; it goes to per-operator costs (Python, dispatch,
                    kernel launches, many small operators). 0.2 because a single large copy or matmul reaches
                    the roof by definition and a forward pass made of large operators gets within a few x of it;
                    below a fifth, at least 80% of the time is spent on neither resource.
    memory-bound    otherwise, when intensity < ridge (bytes limit it)
    compute-bound   otherwise (FLOPs limit it)
MFU = achieved FLOP/s / matmul FLOP/s; MBU = achieved bytes/s / memory bandwidth.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ...io import read_json, staged, write_json
from ...metrics import headline, per_repeat, profiler_overhead_ratio
from ...shapes import Shapes
from .costs import decode_context_tokens, decode_step_cost, prefill_cost
from .op_categories import CATEGORIES, category_table
from .roof import bandwidth_roof
from .shape_curve import curve_findings, curve_table
from ...stats import summary_table
from ...trace_ops import StageIndex, kernel_launches, load_events, stage_group, stage_spans

from . import NAME as PHASE

TIMING_METRICS = {"prefill_s": "prefill", "decode_step_s": "decode"}
HOST = "host (outside operators)"
TRACED_VARIANT = re.compile(r"(?<!un)traced")  # "traced", "traced_b4", but not "untraced"
COST_COLUMNS = ["flops", "bytes", "linear_flops", "attention_flops", "lm_head_flops", "weight_bytes",
                "kv_read_bytes", "kv_write_bytes", "activation_bytes"]


# ---- inputs --------------------------------------------------------------------------------------------------
def model_shapes(meta: dict) -> tuple[Shapes, int]:
    """The model's Shapes and bytes per element, as D2's meta.json recorded them."""
    return Shapes(**meta["notes"]["model_shapes"]), int(meta["notes"]["bytes_per_element"])


def _as_bool(value) -> bool:
    """use_cache as written in a CSV: True/False, "true"/"false", or missing (the contract: missing means true)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return True
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def timing_rows(measurements: pd.DataFrame, source: str) -> pd.DataFrame:
    """The untraced prefill_s / decode_step_s rows of one phase's measurements, one forward pass each, with
    columns source, variant, stage, repeat, request_id, batch_size, prompt_tokens, step, use_cache, seconds."""
    rows = measurements[measurements["metric"].isin(list(TIMING_METRICS))]
    rows = rows[~rows["variant"].astype(str).str.contains(TRACED_VARIANT)]
    if source == PHASE:
        rows = rows[rows["variant"].astype(str).str.fullmatch(r"b\d+")]  # the batch sweep, not thread scaling
    for column in ("batch_size", "prompt_tokens", "step", "use_cache", "request_id"):
        if column not in rows:
            rows = rows.assign(**{column: np.nan})
    rows = rows.dropna(subset=["batch_size", "prompt_tokens"])
    return pd.DataFrame({
        "source": source,
        "variant": rows["variant"].astype(str),
        "stage": rows["metric"].map(TIMING_METRICS),
        "repeat": rows["repeat"].astype(int),
        "request_id": rows["request_id"].fillna(-1).astype(int),
        "batch_size": rows["batch_size"].astype(int),
        "prompt_tokens": rows["prompt_tokens"].astype(int),
        "step": rows["step"],
        "use_cache": [_as_bool(v) for v in rows["use_cache"]],
        "seconds": rows["value"].astype(float),
    }).reset_index(drop=True)


def with_costs(rows: pd.DataFrame, shapes: Shapes, bytes_per_element: int) -> pd.DataFrame:
    """Each forward pass's analytic FLOPs and bytes (analysis/costs.py) added as columns, plus `context`:
    the keys its queries attend to."""
    records = []
    for row in rows.itertuples(index=False):
        if row.stage == "prefill":
            cost = prefill_cost(shapes, row.batch_size, row.prompt_tokens, bytes_per_element, row.use_cache)
            context = row.prompt_tokens
        else:
            cached = decode_context_tokens(row.prompt_tokens, int(row.step))
            cost = decode_step_cost(shapes, row.batch_size, cached, bytes_per_element, row.use_cache)
            context = cached + 1
        record = cost.record()
        records.append({**{name: record[name] for name in COST_COLUMNS}, "context": context})
    return pd.concat([rows, pd.DataFrame(records, index=rows.index, columns=COST_COLUMNS + ["context"])], axis=1)


# ---- roofline --------------------------------------------------------------------------------------------------
def ceiling_values(ceilings: dict) -> dict:
    """The two roofs: peak_flop_per_s (the fastest matmul repeat) and bandwidth_bytes_per_s, the machine's one
    bandwidth roof (roof.bandwidth_roof: the highest repeat of any bandwidth ceiling, the one D5 uses too);
    `bandwidth_source` names the ceiling it came from.

    A roof is the best the machine sustained in this run, as STREAM reports the best time: other processes can
    only slow a repeat down, so the median of a noisy machine would put measured points above their roof."""
    bandwidth = bandwidth_roof(ceilings)
    return {"peak_flop_per_s": max(ceilings["ceilings"]["matmul"]["flop_per_s_range"]),
            "bandwidth_bytes_per_s": bandwidth["bytes_per_s"], "bandwidth_source": bandwidth["source"]}


def verdict(intensity: float, achieved_flop_per_s: float, peak_flop_per_s: float, bandwidth: float,
            overhead_threshold: float) -> tuple[str, float, float]:
    """(verdict, roof FLOP/s at this intensity, achieved share of that roof); see the module docstring."""
    roof = min(peak_flop_per_s, intensity * bandwidth)
    share = achieved_flop_per_s / roof
    if share < overhead_threshold:
        return "overhead-bound", roof, share
    if intensity < peak_flop_per_s / bandwidth:
        return "memory-bound", roof, share
    return "compute-bound", roof, share


POINT_KEYS = ["source", "variant", "stage", "batch_size", "prompt_tokens", "use_cache"]


def roofline_points(forwards: pd.DataFrame, roofs: dict, overhead_threshold: float,
                    cv_warn: float = float("inf")) -> pd.DataFrame:
    """One row per point (source, variant, stage, batch_size, prompt_tokens, use_cache): the median over runs
    of achieved FLOP/s and bytes/s, their range, MFU, MBU, intensity, roof, roof share and verdict; has_spread
    (more than one run) and noisy (the runs' time CV above `cv_warn`: the rows the report marks ⚠)."""
    peak, bandwidth = roofs["peak_flop_per_s"], roofs["bandwidth_bytes_per_s"]
    points = []
    for keys, group in forwards.groupby(POINT_KEYS, sort=True):
        runs = group.groupby(["repeat", "request_id"]).agg(
            seconds=("seconds", "sum"), flops=("flops", "sum"), bytes=("bytes", "sum"), forwards=("seconds", "size"))
        flop_rate = runs["flops"] / runs["seconds"]
        byte_rate = runs["bytes"] / runs["seconds"]
        forwards_total = len(group)
        intensity = group["flops"].sum() / group["bytes"].sum()
        achieved_flops, achieved_bytes = float(flop_rate.median()), float(byte_rate.median())
        label, roof, share = verdict(intensity, achieved_flops, peak, bandwidth, overhead_threshold)
        seconds_per_forward = runs["seconds"] / runs["forwards"]
        seconds_cv = float(runs["seconds"].std(ddof=1) / runs["seconds"].mean()) if len(runs) > 1 else float("nan")
        points.append({
            **dict(zip(POINT_KEYS, keys)),
            "runs": len(runs),
            "forwards_per_run": float(runs["forwards"].median()),
            "context_min": int(group["context"].min()),
            "context_max": int(group["context"].max()),
            "seconds_per_forward": float(seconds_per_forward.median()),
            "seconds_cv": seconds_cv,
            "has_spread": len(runs) > 1,
            "noisy": bool(seconds_cv > cv_warn),
            **{f"{name}_per_forward": float(group[name].sum() / forwards_total) for name in COST_COLUMNS},
            "intensity": float(intensity),
            "achieved_flop_per_s": achieved_flops,
            "flop_per_s_low": float(flop_rate.min()),
            "flop_per_s_high": float(flop_rate.max()),
            "achieved_bytes_per_s": achieved_bytes,
            "bytes_per_s_low": float(byte_rate.min()),
            "bytes_per_s_high": float(byte_rate.max()),
            "mfu": achieved_flops / peak,
            "mbu": achieved_bytes / bandwidth,
            "roof_flop_per_s": roof,
            "roof_share": share,
            "verdict": label,
        })
    if not points:  # no timing rows at all (every batch size out of memory): an empty table with its key columns
        return pd.DataFrame(columns=POINT_KEYS + ["verdict", "mfu", "mbu", "roof_share", "seconds_cv", "has_spread",
                                                  "noisy"])
    return pd.DataFrame(points)


# ---- time breakdown from the traces --------------------------------------------------------------------------
def breakdown_table(trace_path, shapes: Shapes, batch_size: int) -> pd.DataFrame:
    """Time per forward by operator category in the prefill and decode-step spans of one trace, plus the host
    time outside operators (span wall time minus operator self time): rows batch_size, stage, device, category,
    self_s (all spans of the stage), calls (aten operators, or kernels on cuda), per_forward_s, share_of_wall,
    forwards."""
    spans = stage_spans(trace_path)
    if spans.empty:
        return pd.DataFrame()
    spans = spans.assign(stage=spans["name"].map(stage_group))
    categories = category_table(trace_path, shapes)
    rows = []
    for stage in ("prefill", "decode_step"):
        spans_of_stage = spans[spans["stage"] == stage]
        if spans_of_stage.empty:
            continue
        wall, forwards = float(spans_of_stage["seconds"].sum()), len(spans_of_stage)
        in_stage = categories[categories["stage"] == stage]
        cpu = in_stage[in_stage["device"] == "cpu"].set_index("category")
        gpu = in_stage[in_stage["device"] == "cuda"].set_index("category")
        # (device, category, seconds, operator or kernel calls)
        seconds = [("cpu", category, float(cpu["self_s"].get(category, 0.0)), int(cpu["calls"].get(category, 0)))
                   for category in CATEGORIES]
        seconds.append(("cpu", HOST, max(wall - float(cpu["self_s"].sum()), 0.0), 0))
        seconds += [("cuda", category, float(row.self_s), int(row.calls)) for category, row in gpu.iterrows()]
        rows += [{"stage": stage, "device": device, "category": category, "self_s": value, "calls": calls,
                  "wall_s": wall, "forwards": forwards} for device, category, value, calls in seconds]
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    table["per_forward_s"] = table["self_s"] / table["forwards"]
    table["share_of_wall"] = table["self_s"] / table["wall_s"]
    table.insert(0, "batch_size", batch_size)
    return table


def _union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of [start, end) intervals (in the intervals' unit)."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def gpu_timeline(trace_path) -> list[dict]:
    """CUDA only (empty list on a CPU trace): per stage, from the kernel timeline of the trace:
    gpu_busy_share (union of kernel intervals launched in the stage's spans / the spans' wall time),
    kernels_per_forward (launches per forward pass), memcpy_per_forward and memcpy_bytes_per_forward
    (host <-> device copies), and their directions."""
    events = load_events(trace_path)
    kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not any(e.get("cat") == "kernel" for e in events):
        return []
    annotations = [e for e in events if e.get("cat") == "user_annotation"]
    index = StageIndex(annotations)
    launches = kernel_launches(events)
    by_stage: dict = {}
    for event in kernels:
        launch = launches.get(event.get("args", {}).get("correlation"))
        stage = index.stage_at(launch["pid"], launch["tid"], launch["ts"]) if launch else None
        if stage:
            by_stage.setdefault(stage_group(stage), []).append(event)
    results = []
    for stage in ("prefill", "decode_step"):
        spans = [e for e in annotations if stage_group(e["name"]) == stage]
        if not spans:
            continue
        wall_us = sum(e["dur"] for e in spans)
        events_in_stage = by_stage.get(stage, [])
        busy_us = _union_length([(e["ts"], e["ts"] + e["dur"]) for e in events_in_stage])
        copies = [e for e in events_in_stage if e.get("cat") == "gpu_memcpy"]
        results.append({
            "stage": stage,
            "forwards": len(spans),
            "gpu_busy_share": busy_us / wall_us if wall_us else float("nan"),
            "kernels_per_forward": sum(e.get("cat") == "kernel" for e in events_in_stage) / len(spans),
            "memcpy_per_forward": len(copies) / len(spans),
            "memcpy_bytes_per_forward": sum(float(e.get("args", {}).get("bytes", 0)) for e in copies) / len(spans),
            "memcpy_kinds": sorted({e["name"] for e in copies}),
        })
    return results


# ---- thread scaling and profiler overhead --------------------------------------------------------------------
def thread_scaling_table(measurements: pd.DataFrame) -> pd.DataFrame:
    """Per thread count and stage: median seconds (prefill, or one decode step pooled over steps and repeats),
    min, max, n, and the speed-up of each count over 1 thread."""
    rows = measurements[measurements["variant"].astype(str).str.startswith("threads_")
                        & measurements["metric"].isin(list(TIMING_METRICS))]
    if rows.empty:
        return pd.DataFrame()
    table = (rows.assign(stage=rows["metric"].map(TIMING_METRICS))
             .groupby(["stage", "threads"], as_index=False)["value"]
             .agg(p50_s="median", min_s="min", max_s="max", n="size"))
    table["threads"] = table["threads"].astype(int)
    one_thread = table[table["threads"] == 1].set_index("stage")["p50_s"]
    table["speedup"] = table["stage"].map(one_thread) / table["p50_s"]
    table["efficiency"] = table["speedup"] / table["threads"]
    return table


def profiler_overhead(measurements: pd.DataFrame) -> dict:
    """Per batch size: median traced decode step / median untraced decode step of the same steps."""
    steps = measurements[measurements["metric"] == "decode_step_s"]
    ratios = {}
    traced_variants = [v for v in set(steps["variant"].astype(str)) if re.fullmatch(r"traced_b\d+", v)]
    for variant in sorted(traced_variants, key=lambda v: int(v.removeprefix("traced_b"))):
        match = re.fullmatch(r"traced_b(\d+)", variant)
        ratio = profiler_overhead_ratio(measurements, variant, f"b{match.group(1)}")
        if np.isfinite(ratio):
            ratios[match.group(1)] = ratio
    return ratios


# ---- findings --------------------------------------------------------------------------------------------------
def _point(points: pd.DataFrame, source: str, stage: str, batch: int | None = None) -> dict | None:
    """The first matching point (smallest batch when `batch` is None), as a dict."""
    rows = points[(points["source"] == source) & (points["stage"] == stage) & points["use_cache"]]
    if batch is not None:
        rows = rows[rows["batch_size"] == batch]
    if rows.empty:
        return None
    return rows.sort_values(["batch_size", "prompt_tokens"]).iloc[0].to_dict()


def headline_figures(measurements: pd.DataFrame) -> list[dict]:
    """Per-repeat samples of the phase's headline figures: the batch-1 decode step (each run's mean step, as the
    roofline point's time per forward counts it) and the copy bandwidth (each repeat's bytes/s)."""
    copies = measurements[(measurements["variant"] == "ceilings") & (measurements["metric"] == "memory_bandwidth_s")]
    steps = measurements[(measurements["variant"] == "b1") & (measurements["metric"] == "decode_step_s")]
    return [headline("decode step (batch 1, synthetic prompt)",
                     steps.groupby(["repeat", "request_id"])["value"].mean().tolist(), "s", "lower"),
            headline("copy bandwidth", copies["work_bytes"] / copies["value"], "bytes/s", "higher")]


def best_prefill(points: pd.DataFrame) -> dict | None:
    """The prefill point with the highest achieved FLOP/s among every phase's points (its `source` names the
    phase), so "the best prefill" is the best one this run measured; None without prefill points."""
    prefills = points[points["stage"] == "prefill"] if len(points) else points
    return prefills.sort_values("achieved_flop_per_s").iloc[-1].to_dict() if len(prefills) else None


def verdict_matrix(points: pd.DataFrame) -> dict:
    """Verdict counts by stage (rows) and batch size (columns): the compact view of every roofline point."""
    if points.empty:
        return {"batch_sizes": [], "rows": []}
    batches = sorted(int(b) for b in points["batch_size"].unique())
    rows = []
    for stage in sorted(points["stage"].unique(), key=lambda name: (name != "prefill", name)):
        of_stage = points[points["stage"] == stage]
        cells = [{verdict: int(count) for verdict, count in
                  of_stage[of_stage["batch_size"] == batch]["verdict"].value_counts().sort_index().items()}
                 for batch in batches]
        rows.append({"stage": stage, "cells": cells})
    return {"batch_sizes": batches, "rows": rows}


def findings(points: pd.DataFrame, breakdown: pd.DataFrame, ceilings: dict, roofs: dict, threads: pd.DataFrame,
             overhead: dict, gpu: dict, sources: list[str], overhead_threshold: float,
             cv_warn: float, headlines: list[dict], linear_shapes: dict | None = None) -> dict:
    """The key numbers and verdicts the report's text is generated from."""
    others = [source for source in sources if source != PHASE]
    decode = _point(points, PHASE, "decode", 1) or _point(points, PHASE, "decode") or next(
        (point for point in (_point(points, source, "decode") for source in others) if point), None)
    prefill = best_prefill(points)
    largest_decode = points[(points["source"] == PHASE) & (points["stage"] == "decode")]
    largest_decode = largest_decode.sort_values("batch_size").iloc[-1].to_dict() if len(largest_decode) else None

    host, top_category, operators_per_forward = {}, {}, {}
    if not breakdown.empty:
        cpu = breakdown[breakdown["device"] == "cpu"]
        for (batch, stage), group in cpu.groupby(["batch_size", "stage"]):
            key = f"{stage}_b{batch}"
            host[key] = float(group.loc[group["category"] == HOST, "share_of_wall"].sum())
            operators_per_forward[key] = float(group["calls"].sum() / group["forwards"].iloc[0])
            ops = group[group["category"] != HOST].sort_values("share_of_wall", ascending=False).iloc[0]
            top_category[key] = {"category": ops["category"], "share_of_wall": float(ops["share_of_wall"])}
    decode_host = host.get(f"decode_step_b{decode['batch_size']}") if decode else None
    verdict_counts = points["verdict"].value_counts().to_dict() if len(points) else {}
    noisy = points[points["noisy"]] if len(points) else points
    not_compute_bound = int((points["verdict"] != "compute-bound").sum()) if len(points) else 0
    return {
        "ridge_flop_per_byte": roofs["peak_flop_per_s"] / roofs["bandwidth_bytes_per_s"],
        **roofs,
        "ceilings": ceilings["ceilings"],
        "decode_point": decode,
        "prefill_point": prefill,
        "largest_batch_decode_point": largest_decode,
        "points": points.to_dict(orient="records"),
        "verdict_counts": verdict_counts,
        # the answer to "is slow inference always a lack of compute?": "no" when a point is limited by anything else
        "lack_of_compute_answer": "yes" if len(points) and not_compute_bound == 0 else "no",
        "points_not_compute_bound": not_compute_bound,
        "verdict_matrix": verdict_matrix(points),
        "host_outside_operators_share": host,
        "decode_host_share": decode_host,
        "operators_per_forward": operators_per_forward,
        "decode_operators_per_step": operators_per_forward.get(f"decode_step_b{decode['batch_size']}")
        if decode else None,
        "top_category": top_category,
        "thread_scaling": threads.to_dict(orient="records"),
        "profiler_overhead_ratio": overhead,
        "gpu": gpu,
        "sources": sources,
        "overhead_threshold": overhead_threshold,
        "noisy_points": len(noisy),
        # a point above a roof means the machine ran faster while that point was timed than while the ceilings
        # were (other processes, clocks): the roofs are measurements too, and this run's were noisy
        "points_above_roof": int((points["roof_share"] > 1).sum()) if len(points) else 0,
        "cv_warn": cv_warn,
        "headlines": headlines,
        "linear_shapes": linear_shapes,  # the shape curve's numbers and verdict keys (shape_curve.py); None: not run
    }


def analyze(settings: dict, measurements_path, meta_path, ceilings_path, trace_paths: list, source_paths: list,
            summary_path, roofline_path, breakdown_path, findings_path, linear_shapes_path) -> None:
    """Read every input, compute the tables and findings, and write them (all or nothing). `source_paths`: the
    measurements.csv of the other phases whose timed forwards become roofline points (each named by its folder)."""
    cfg = settings[PHASE]
    measurements = pd.read_csv(measurements_path)
    meta, ceilings = read_json(meta_path), read_json(ceilings_path)
    shapes, bytes_per_element = model_shapes(meta)
    roofs = ceiling_values(ceilings)

    sources = {PHASE: measurements}
    for path in source_paths:
        sources[Path(path).parent.name] = pd.read_csv(path)
    forwards = pd.concat([timing_rows(frame, name) for name, frame in sources.items()], ignore_index=True)
    forwards = with_costs(forwards, shapes, bytes_per_element)
    points = roofline_points(forwards, roofs, cfg["overhead_threshold"], settings["cv_warn"])

    traces = dict(zip(cfg["batch_sizes"], trace_paths))
    breakdown = pd.concat([breakdown_table(path, shapes, batch) for batch, path in traces.items()],
                          ignore_index=True)
    gpu = {str(batch): gpu_timeline(path) for batch, path in traces.items()}
    gpu = {batch: stats for batch, stats in gpu.items() if stats}
    threads = thread_scaling_table(measurements)
    overhead = profiler_overhead(measurements)
    summary = summary_table(measurements[measurements["metric"] != "oom"],
                            [c for c in ("variant", "metric", "batch_size", "threads", "step", "rows")
                             if c in measurements], settings["cv_warn"])
    linear = meta["notes"].get("linear_shapes") or {}
    curve = curve_table(measurements, roofs["bandwidth_bytes_per_s"], linear.get("repeat_policy"))
    curve_env = {**meta["env"], **(linear.get("isa") or {})}
    for key in ("engine_kernel", "small_batch_max_rows"):  # absent in runs measured before they were recorded
        if key in linear:
            curve_env[key] = linear[key]
    curve_verdict = curve_findings(curve, measurements, curve_env, cfg["linear_jump_ratio"])

    with staged(summary_path, roofline_path, breakdown_path, findings_path, linear_shapes_path) as temps:
        summary_tmp, roofline_tmp, breakdown_tmp, findings_tmp, linear_tmp = temps
        summary.to_csv(summary_tmp, index=False)
        points.to_csv(roofline_tmp, index=False)
        breakdown.to_csv(breakdown_tmp, index=False)
        curve.to_csv(linear_tmp, index=False)
        write_json(findings_tmp, findings(points, breakdown, ceilings, roofs, threads, overhead, gpu, list(sources),
                                          cfg["overhead_threshold"], settings["cv_warn"],
                                          headline_figures(measurements), curve_verdict))


# ---- command line (python -m profiling d2_bottlenecks_analysis) ---------------------------------------------------
def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    for name in ("measurements", "meta", "ceilings", "summary", "roofline", "breakdown", "findings", "linear-shapes"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--traces", nargs="+", required=True, help="D2 decode traces, one per batch size in order")
    parser.add_argument("--sources", nargs="*", default=[],
                        help="other phases' measurements.csv whose timed forwards become roofline points")


def cli(args) -> None:
    analyze(args.settings, args.measurements, args.meta, args.ceilings, args.traces, args.sources,
            args.summary, args.roofline, args.breakdown, args.findings, args.linear_shapes)
