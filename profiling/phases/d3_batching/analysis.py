"""D3 batching analysis: the batch table, the dynamic-run table, goodput, utilisation, and who pays for whom.

Reads measurements.csv, timeline.csv and telemetry.csv (never the model); writes summary.csv, batch_table.csv,
dynamic_table.csv and findings.json, the numbers the report's sentences (and the progress wall's lines) quote.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ...io import staged, write_json
from ...metrics import energy_meter, energy_per_token, meta_notes, headline, per_repeat, profiler_overhead_ratio
from ...stats import precision, summary_table


def _values(frame: pd.DataFrame, variant: str, metric: str) -> pd.Series:
    return frame.loc[(frame["variant"] == variant) & (frame["metric"] == metric), "value"]


def _median(values: pd.Series) -> float:
    return float(values.median()) if len(values) else float("nan")


def _percentile(values: pd.Series, p: float) -> float:
    return float(np.percentile(values, p)) if len(values) else float("nan")


PADDING_SMALL = 0.2  # a padding share below this is "a small waste" (prompts of similar length)
UTILISATION_RISE = 0.1  # utilisation rising by more than this share (absolute) means batching put idle time to work
WINDOW_BATCH_CHANGE = 0.05  # the mean batch "changed" when it moved by more than this share of its value
WINDOW_LATENCY_CHANGE = 0.05  # p95 e2e "changed" when it moved by more than this share of its value
STEP_JUMP = 1.5  # a decode step at the next batch size this many times the batch-1 step is a jump (D2's shape curve)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator and math.isfinite(denominator) else float("nan")


# ---- utilisation over time spans ------------------------------------------------------------------------------
def utilisation_series(telemetry: pd.DataFrame, metric: str) -> pd.Series:
    """One value per sample time (seconds): the metric averaged over cores for per-core metrics."""
    rows = telemetry[telemetry["metric"] == metric]
    return rows.groupby("t_s")["value"].mean()


def mean_in_spans(series: pd.Series, spans: list[tuple[float, float]]) -> float:
    """Mean of the samples whose time falls inside any (start_s, end_s) span; NaN when none does."""
    if series.empty or not spans:
        return float("nan")
    times = series.index.to_numpy()
    inside = np.zeros(len(times), dtype=bool)
    for start, end in spans:
        inside |= (times >= start) & (times <= end)
    return float(series[inside].mean()) if inside.any() else float("nan")


def variant_spans(timeline: pd.DataFrame, variant: str, whole_run: bool) -> list[tuple[float, float]]:
    """Time spans (seconds) of a variant: each batch's launch -> done, or for a dynamic run (whole_run) the run's
    start -> its last completion (idle time included: utilisation under that load)."""
    rows = timeline[timeline["variant"] == variant]
    if whole_run:
        return [(group["run_start_s"].min(), group["done_s"].max()) for _, group in rows.groupby("repeat")]
    batches = rows.drop_duplicates(["repeat", "batch_index"])
    return list(zip(batches["launch_s"], batches["done_s"]))


def utilisation_metric(telemetry: pd.DataFrame) -> str:
    """The utilisation the tables show: GPU utilisation when NVML sampled it, else the share of all cores this
    process used (else, from an older telemetry file, the machine's CPU busy share)."""
    for metric in ("gpu_util_ratio", "process_cpu_ratio"):
        if (telemetry["metric"] == metric).any():
            return metric
    return "cpu_busy_ratio"


# ---- static sweep -------------------------------------------------------------------------------------------
def every_request(per_batch: pd.Series, batch_size: int) -> pd.Series:
    """Latencies of every request from one value per static batch: each of the B requests of a batch has its
    batch's time (they share one prefill and one end), so percentiles "over every request" weigh each batch B
    times. The input holds one row per batch (one_row_per_static_batch)."""
    return pd.Series(np.repeat(per_batch.to_numpy(dtype=float), batch_size))


def batch_table(measurements: pd.DataFrame, timeline: pd.DataFrame, telemetry: pd.DataFrame,
                policy: dict | None = None) -> pd.DataFrame:
    """One row per static batch size: throughput (median and spread over repeats), latency percentiles over the
    requests of every repeat, padding waste, ratios against the smallest batch, and utilisation; an `oom` status
    for a size that ran out of memory."""
    static = measurements[measurements["variant"].str.startswith("static_b")]
    utilisation = utilisation_series(telemetry, utilisation_metric(telemetry))
    rows = []
    for batch_size in sorted(static["batch_size"].dropna().unique()):
        variant = f"static_b{int(batch_size)}"
        if len(_values(static, variant, "oom")):
            rows.append({"batch_size": int(batch_size), "status": "oom", "repeats": 0})
            continue
        throughput = _values(static, variant, "output_tok_per_s")
        e2e = every_request(_values(static, variant, "e2e_s"), int(batch_size))
        ttft = every_request(_values(static, variant, "ttft_s"), int(batch_size))
        rows.append({
            "batch_size": int(batch_size),
            "status": "ok",
            "repeats": int(throughput.size),
            "requests": int(e2e.size),
            "output_tok_per_s_half_width_ratio": precision(throughput.tolist(), policy)["half_width_ratio"],
            "at_cap": precision(throughput.tolist(), policy)["at_cap"],
            "prompt_tokens": int(static.loc[static["variant"] == variant, "prompt_tokens"].median()),
            "padding_waste_ratio": _median(_values(static, variant, "padding_waste_ratio")),
            "output_tok_per_s_p50": _median(throughput),
            "output_tok_per_s_min": float(throughput.min()),
            "output_tok_per_s_max": float(throughput.max()),
            "output_tok_per_s_cv": float(throughput.std(ddof=1) / throughput.mean()) if throughput.size > 1 else 0.0,
            "request_per_s_p50": _median(_values(static, variant, "request_per_s")),
            "ttft_p50_s": _median(ttft),
            "ttft_p95_s": _percentile(ttft, 95),
            "tpot_p50_s": _median(_values(static, variant, "tpot_s")),
            "e2e_p50_s": _median(e2e),
            "e2e_p95_s": _percentile(e2e, 95),
            "e2e_min_s": float(e2e.min()),
            "e2e_max_s": float(e2e.max()),
            "prefill_p50_s": _median(_values(static, variant, "prefill_s")),
            "decode_step_p50_s": _median(_values(static, variant, "decode_step_s")),
            "decode_tok_per_s_p50": _median(_values(static, variant, "decode_tok_per_s")),
            "energy_per_token_j": energy_per_token(static[static["variant"] == variant], {})["per_token_j"],
            "utilisation_mean_ratio": mean_in_spans(utilisation, variant_spans(timeline, variant, whole_run=False)),
            "profiler_overhead_ratio": profiler_overhead_ratio(measurements, f"traced_b{int(batch_size)}",
                                                               f"static_b{int(batch_size)}"),
        })
    table = pd.DataFrame(rows)
    ok = table[table["status"] == "ok"]
    if len(ok):
        base = ok.iloc[0]  # the smallest batch size that ran
        table["base_batch_size"] = int(base["batch_size"])
        table["above_base"] = table["batch_size"] > int(base["batch_size"])
        table["throughput_ratio"] = table["output_tok_per_s_p50"] / base["output_tok_per_s_p50"]
        table["e2e_p95_ratio"] = table["e2e_p95_s"] / base["e2e_p95_s"]
        table["ttft_p50_ratio"] = table["ttft_p50_s"] / base["ttft_p50_s"]
    return table


def engine_vs_generate(measurements: pd.DataFrame, target: float) -> list[dict]:
    """At each compare batch size: engine and generate decode tok/s (medians over repeats), their ratio (and the
    min-max of the ratio over paired repeats), and whether it meets `target`."""
    results = []
    generate_variants = sorted({v for v in measurements["variant"] if v.startswith("generate_b")},
                               key=lambda v: int(v.removeprefix("generate_b")))
    for variant in generate_variants:
        batch_size = int(variant.removeprefix("generate_b"))
        row = {"batch_size": batch_size}
        for metric in ("decode_tok_per_s", "generate_tok_per_s"):
            engine = measurements[(measurements["variant"] == f"static_b{batch_size}")
                                  & (measurements["metric"] == metric)].set_index("repeat")["value"]
            reference = measurements[(measurements["variant"] == variant)
                                     & (measurements["metric"] == metric)].set_index("repeat")["value"]
            paired = (engine / reference).dropna()
            row[f"engine_{metric}_p50"] = _median(engine)
            row[f"generate_{metric}_p50"] = _median(reference)
            row[f"{metric.removesuffix('_tok_per_s')}_ratio"] = _ratio(_median(engine), _median(reference))
            row[f"{metric.removesuffix('_tok_per_s')}_ratio_min"] = float(paired.min()) if len(paired) else float("nan")
            row[f"{metric.removesuffix('_tok_per_s')}_ratio_max"] = float(paired.max()) if len(paired) else float("nan")
        row["repeats"] = int(len(_values(measurements, variant, "decode_tok_per_s")))
        row["target"] = target
        row["passed"] = bool(row["decode_ratio"] >= target) if math.isfinite(row["decode_ratio"]) else False
        results.append(row)
    return results


def batch_speedup(table: pd.DataFrame, compare_sizes: list[int], target: float) -> dict:
    """Output tok/s at the largest compare batch size over the smallest's (e.g. batch 8 over batch 1)."""
    ok = table[(table["status"] == "ok") & table["batch_size"].isin(compare_sizes)] if len(table) else table
    if len(ok) < 2:
        return {}
    small, large = ok.iloc[0], ok.iloc[-1]
    ratio = large["output_tok_per_s_p50"] / small["output_tok_per_s_p50"]
    return {"small_batch_size": int(small["batch_size"]), "large_batch_size": int(large["batch_size"]),
            "small_tok_per_s": float(small["output_tok_per_s_p50"]),
            "large_tok_per_s": float(large["output_tok_per_s_p50"]),
            "ratio": float(ratio), "target": target, "passed": bool(ratio >= target)}


def best_tradeoff(table: pd.DataFrame) -> dict:
    """The batch size with the most throughput gained per unit of p95 latency paid (throughput ratio over p95 e2e
    ratio, both against the smallest batch)."""
    ok = table[table["status"] == "ok"] if len(table) else table
    if len(ok) < 2:
        return {}
    efficiency = ok["throughput_ratio"] / ok["e2e_p95_ratio"]
    best = ok.loc[efficiency.idxmax()]
    return {"batch_size": int(best["batch_size"]), "throughput_ratio": float(best["throughput_ratio"]),
            "e2e_p95_ratio": float(best["e2e_p95_ratio"]), "gain_per_cost": float(efficiency.max())}


# ---- dynamic runs -------------------------------------------------------------------------------------------
def dynamic_table(measurements: pd.DataFrame, timeline: pd.DataFrame, telemetry: pd.DataFrame,
                  cfg: dict) -> pd.DataFrame:
    """One row per dynamic setting: throughput, goodput under the SLOs, latency percentiles over all its requests,
    the achieved batch sizes, utilisation over the run, and its role (grid, baseline, rate sweep, burst)."""
    dynamic = measurements[measurements["variant"].str.startswith("dyn_")]
    if dynamic.empty:
        return pd.DataFrame()
    utilisation = utilisation_series(telemetry, utilisation_metric(telemetry))
    grid = cfg["dynamic"]
    rows = []
    for variant, runs in dynamic.groupby("variant", sort=False):
        knobs = runs.iloc[0]
        per_run = runs[runs["request_id"] == -1]
        ttft = runs[runs["metric"] == "ttft_s"].set_index(["repeat", "request_id"])["value"]
        tpot = runs[runs["metric"] == "tpot_s"].set_index(["repeat", "request_id"])["value"]
        good = ((ttft <= cfg["slo_ttft_s"]) & (tpot.reindex(ttft.index) <= cfg["slo_tpot_s"]))
        walls = per_run[per_run["metric"] == "wall_s"].set_index("repeat")["value"]
        goodput = (good.groupby(level="repeat").sum() / walls).dropna()
        batch_sizes = per_run.loc[per_run["metric"] == "achieved_batch_size", "value"]
        queue_wait = _values(runs, variant, "queue_wait_s")
        e2e = _values(runs, variant, "e2e_s")
        is_poisson = knobs["arrival"] == "poisson"
        rows.append({
            "variant": variant,
            "role": dynamic_role(knobs, grid),
            "arrival": knobs["arrival"],
            "rate_req_per_s": float(knobs["rate_req_per_s"]) if is_poisson else float("nan"),
            "wait_window_ms": float(knobs["wait_window_ms"]),
            "max_batch": int(knobs["max_batch"]),
            "runs": int(walls.size),
            "requests": int(e2e.size),
            "oom_batches": int(len(_values(runs, variant, "oom"))),
            "output_tok_per_s_p50": _median(_values(runs, variant, "output_tok_per_s")),
            "request_per_s_p50": _median(_values(runs, variant, "request_per_s")),
            "goodput_req_per_s_p50": _median(goodput),
            "slo_met_ratio": float(good.mean()) if len(good) else float("nan"),
            "queue_wait_p50_s": _median(queue_wait),
            "queue_wait_p95_s": _percentile(queue_wait, 95),
            "ttft_p50_s": _median(ttft),
            "ttft_p95_s": _percentile(ttft, 95),
            "tpot_p50_s": _median(tpot),
            "e2e_p50_s": _median(e2e),
            "e2e_p95_s": _percentile(e2e, 95),
            "e2e_max_s": float(e2e.max()) if len(e2e) else float("nan"),
            "batches": int(batch_sizes.size),
            "mean_batch_size": float(batch_sizes.mean()) if len(batch_sizes) else float("nan"),
            "max_achieved_batch_size": int(batch_sizes.max()) if len(batch_sizes) else 0,
            "utilisation_mean_ratio": mean_in_spans(utilisation, variant_spans(timeline, variant, whole_run=True)),
        })
    return pd.DataFrame(rows)


def dynamic_role(knobs: pd.Series, grid: dict) -> str:
    """Which part of the plan a dynamic setting belongs to: grid, baseline, operating point, rate sweep or burst."""
    if knobs["arrival"] == "burst":
        return "burst"
    at_grid_rate = float(knobs["rate_req_per_s"]) == float(grid["rate_req_per_s"])
    if at_grid_rate and float(knobs["wait_window_ms"]) in [float(w) for w in grid["wait_windows_ms"]] \
            and int(knobs["max_batch"]) in grid["max_batches"]:
        return "grid"
    if at_grid_rate and int(knobs["max_batch"]) == 1:
        return "baseline"
    if at_grid_rate:
        return "operating point"
    return "rate sweep"


def find_setting(table: pd.DataFrame, rate: float, window_ms: float, max_batch: int) -> pd.Series | None:
    """The Poisson run at this rate, window and cap, or None."""
    if table.empty:
        return None
    match = table[(table["arrival"] == "poisson") & (table["rate_req_per_s"] == float(rate))
                  & (table["wait_window_ms"] == float(window_ms)) & (table["max_batch"] == int(max_batch))]
    return match.iloc[0] if len(match) else None


def baseline_setting(table: pd.DataFrame, grid: dict) -> pd.Series | None:
    """No batching (cap 1) at the operating point's rate and wait window, so the batcher is compared with a
    baseline that differs only in its cap; at window 0 when an older run has no such setting."""
    matching = find_setting(table, grid["rate_req_per_s"], grid["operating_window_ms"], 1)
    return matching if matching is not None else find_setting(table, grid["rate_req_per_s"], 0.0, 1)


def window_verdict(mean_batch_low: float, mean_batch_high: float, e2e_p95_low: float, e2e_p95_high: float) -> str:
    """What widening the window did: batch_unchanged (the mean batch moved by at most WINDOW_BATCH_CHANGE, so the
    latency difference is noise), wait_paid (p95 e2e up by more than WINDOW_LATENCY_CHANGE), queue_drained (down
    by more), or no_clear_change."""
    if abs(mean_batch_high - mean_batch_low) <= WINDOW_BATCH_CHANGE * mean_batch_low:
        return "batch_unchanged"
    if e2e_p95_high > (1 + WINDOW_LATENCY_CHANGE) * e2e_p95_low:
        return "wait_paid"
    if e2e_p95_high < (1 - WINDOW_LATENCY_CHANGE) * e2e_p95_low:
        return "queue_drained"
    return "no_clear_change"


def static_verdicts(table: pd.DataFrame) -> dict:
    """The words the static sweep's conclusion needs, decided here: compared (two batch sizes or more ran),
    ttft_trend (grows / falls from the smallest to the largest batch), padding (small / large: below
    PADDING_SMALL or not), utilisation_measured and utilisation (rises / flat: up by more than UTILISATION_RISE)."""
    ok = table[table["status"] == "ok"] if len(table) else table
    if len(ok) < 2:
        return {"compared": False}
    base, top = ok.iloc[0], ok.iloc[-1]
    measured = bool(np.isfinite(base["utilisation_mean_ratio"]) and np.isfinite(top["utilisation_mean_ratio"]))
    return {"compared": True,
            "ttft_trend": "grows" if top["ttft_p50_s"] > base["ttft_p50_s"] else "falls",
            "padding": "small" if top["padding_waste_ratio"] < PADDING_SMALL else "large",
            "utilisation_measured": measured,
            "utilisation": "rises" if measured and top["utilisation_mean_ratio"] - base["utilisation_mean_ratio"]
            > UTILISATION_RISE else "flat",
            "base_token_s": float(base["decode_step_p50_s"] / base["batch_size"]),
            "top_token_s": float(top["decode_step_p50_s"] / top["batch_size"])}


def step_jump(table: pd.DataFrame) -> dict | None:
    """Whether the decode step jumps from batch 1 to the next batch size that ran: from_batch (1), to_batch,
    step_ratio (median decode step there / at batch 1) and verdict "jumps" (step_ratio >= STEP_JUMP: the weights,
    read once for every row, should cost about the same, so the linear layers' kernels changed) or "steady";
    None without batch 1 and a larger batch."""
    ok = table[table["status"] == "ok"] if len(table) else table
    if len(ok) < 2 or int(ok.iloc[0]["batch_size"]) != 1:
        return None
    base, after = ok.iloc[0], ok.iloc[1]
    ratio = float(after["decode_step_p50_s"] / base["decode_step_p50_s"])
    return {"from_batch": 1, "to_batch": int(after["batch_size"]), "step_ratio": ratio,
            "verdict": "jumps" if ratio >= STEP_JUMP else "steady"}


def queue_verdict(baseline: pd.Series | None, operating: pd.Series | None) -> str | None:
    """queue_hides_latency when no batching waits longer in the queue (p95) than the batcher, else not_shortened;
    None when there is no distinct baseline."""
    if baseline is None or operating is None or baseline["variant"] == operating["variant"]:
        return None
    return ("queue_hides_latency" if baseline["queue_wait_p95_s"] > operating["queue_wait_p95_s"]
            else "not_shortened")


def window_tradeoff(table: pd.DataFrame) -> list[dict]:
    """For each cap of the grid: p95 e2e, mean batch and throughput at the smallest and the largest window, whether
    the cap batches at all (`batching`: cap > 1) and the verdict (window_verdict)."""
    grid = table[table["role"] == "grid"] if len(table) else table
    results = []
    for cap, rows in grid.groupby("max_batch"):
        rows = rows.sort_values("wait_window_ms")
        first, last = rows.iloc[0], rows.iloc[-1]
        results.append({"max_batch": int(cap), "window_low_ms": float(first["wait_window_ms"]),
                        "window_high_ms": float(last["wait_window_ms"]),
                        "e2e_p95_low_s": float(first["e2e_p95_s"]), "e2e_p95_high_s": float(last["e2e_p95_s"]),
                        "mean_batch_low": float(first["mean_batch_size"]),
                        "mean_batch_high": float(last["mean_batch_size"]),
                        "tok_per_s_low": float(first["output_tok_per_s_p50"]),
                        "tok_per_s_high": float(last["output_tok_per_s_p50"]),
                        "batching": int(cap) > 1,
                        "verdict": window_verdict(float(first["mean_batch_size"]), float(last["mean_batch_size"]),
                                                  float(first["e2e_p95_s"]), float(last["e2e_p95_s"]))})
    return results


# ---- findings -----------------------------------------------------------------------------------------------
def findings(measurements: pd.DataFrame, batches: pd.DataFrame, dynamic: pd.DataFrame, telemetry: pd.DataFrame,
             settings: dict, meter: dict | None = None) -> dict:
    """The key numbers and sentences the report's text is generated from."""
    cfg = settings["d3_batching"]
    grid = cfg["dynamic"]
    repeats = int(batches["repeats"].max()) if len(batches) else 0
    operating = find_setting(dynamic, grid["rate_req_per_s"], grid["operating_window_ms"],
                             grid["operating_max_batch"])
    baseline = baseline_setting(dynamic, grid)
    static = measurements[measurements["variant"].str.startswith("static_b")]
    noisy = summary_table(static[static["metric"].isin(["output_tok_per_s", "e2e_s", "decode_step_s"])],
                          ["variant", "metric"], settings["cv_warn"])
    ok = batches[batches["status"] == "ok"] if len(batches) else batches
    return {
        "load_model_s": _median(_values(measurements, "load", "load_model_s")),
        "load_tokenizer_s": _median(_values(measurements, "load", "load_tokenizer_s")),
        "repeats": repeats,
        "max_new_tokens": cfg["max_new_tokens"],
        "dynamic_max_new_tokens": grid["max_new_tokens"],
        "batch_sizes": [int(size) for size in batches["batch_size"]] if len(batches) else [],
        "oom_batch_sizes": [int(size) for size in batches.loc[batches["status"] == "oom", "batch_size"]]
        if len(batches) else [],
        "base_batch_size": int(ok.iloc[0]["batch_size"]) if len(ok) else None,
        "largest_batch_size": int(ok.iloc[-1]["batch_size"]) if len(ok) else None,
        "batch_table": batches.to_dict(orient="records"),
        "engine_vs_generate": engine_vs_generate(measurements, cfg["target_engine_vs_generate_ratio"]),
        "batch_speedup": batch_speedup(batches, cfg["compare_batch_sizes"], cfg["target_batch_speedup_ratio"]),
        "best_tradeoff": best_tradeoff(batches),
        "dynamic_table": dynamic.to_dict(orient="records"),
        "operating_variant": None if operating is None else operating["variant"],
        "baseline_variant": None if baseline is None else baseline["variant"],
        "operating": None if operating is None else operating.to_dict(),
        "baseline": None if baseline is None else baseline.to_dict(),
        "window_tradeoff": window_tradeoff(dynamic),
        "static_verdicts": static_verdicts(batches),
        "step_jump": step_jump(batches),
        # joules per output token at the largest static batch that ran, or the meter that is missing
        "energy": {**energy_per_token(static[static["variant"] == f"static_b{int(ok.iloc[-1]['batch_size'])}"]
                                      if len(ok) else static.iloc[:0], meter or {}),
                   "batch_size": int(ok.iloc[-1]["batch_size"]) if len(ok) else None},
        "queue_verdict": queue_verdict(baseline, operating),
        "slo_ttft_s": cfg["slo_ttft_s"],
        "slo_tpot_s": cfg["slo_tpot_s"],
        "utilisation_metric": utilisation_metric(telemetry),
        "telemetry_samples": int(telemetry["t_s"].nunique()),
        "noisy_metrics": sorted(f"{row.variant} {row.metric}" for row in noisy[noisy["noisy"]].itertuples()),
        "cv_warn": settings["cv_warn"],
        "headlines": [headline(f"output tok/s, static batch {int(size)}",
                               per_repeat(measurements[measurements["variant"] == f"static_b{int(size)}"],
                                          "output_tok_per_s"), "tok/s", "higher")
                      for size in (ok["batch_size"].iloc[[0, -1]].unique() if len(ok) else [])],
    }


def one_row_per_static_batch(measurements: pd.DataFrame) -> pd.DataFrame:
    """Drop the copies of a static batch's per-request rows: every request of a static batch shares its one
    prefill and its one end, so its B ttft/tpot/e2e rows hold one measurement, not B. Statistics over the copies
    would report n = B x repeats and a falsely narrow confidence interval. Dynamic runs are left as they are."""
    static_copy = (measurements["variant"].str.startswith("static_b")
                   & measurements["metric"].isin(["ttft_s", "tpot_s", "e2e_s"])
                   & measurements.duplicated(["variant", "repeat", "metric"]))
    return measurements[~static_copy]


def analyze(settings: dict, measurements_path, timeline_path, telemetry_path, summary_path, batch_table_path,
            dynamic_table_path, findings_path) -> None:
    measurements = one_row_per_static_batch(pd.read_csv(measurements_path))
    timeline = pd.read_csv(timeline_path)
    telemetry = pd.read_csv(telemetry_path)
    summary = summary_table(measurements, ["variant", "metric", "step"], settings["cv_warn"])
    batches = batch_table(measurements, timeline, telemetry, meta_notes(measurements_path).get("repeat_policy"))
    dynamic = dynamic_table(measurements, timeline, telemetry, settings["d3_batching"])
    result = findings(measurements, batches, dynamic, telemetry, settings, energy_meter(measurements_path))
    with staged(summary_path, batch_table_path, dynamic_table_path, findings_path) as temps:
        summary_tmp, batch_tmp, dynamic_tmp, findings_tmp = temps
        summary.to_csv(summary_tmp, index=False)
        batches.to_csv(batch_tmp, index=False)
        dynamic.to_csv(dynamic_tmp, index=False)
        write_json(findings_tmp, result)


# ---- command line (python -m profiling d3_batching_analysis) ------------------------------------------------------
def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    for name in ("measurements", "timeline", "telemetry", "summary", "batch-table", "dynamic-table", "findings"):
        parser.add_argument(f"--{name}", required=True)


def cli(args) -> None:
    analyze(args.settings, args.measurements, args.timeline, args.telemetry, args.summary, args.batch_table,
            args.dynamic_table, args.findings)
