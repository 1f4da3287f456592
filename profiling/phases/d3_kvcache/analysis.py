"""D3 KV-cache analysis: per-token latency with and without the cache, speed-ups, and what the cache costs in memory.

Reads measurements.csv and meta.json of the experiment; writes
- summary.csv   statistics of every metric per setting (and per decode step);
- table.csv     one row per prompt length x cache on/off (batch 1): times, per-token latency, speed-up, memory;
- memory.csv    one row per prompt length x batch size (cache on): positions held, measured and formula bytes;
- findings.json the numbers and verdicts the report's text is generated from.

Definitions used throughout:
- context of a step: the tokens the step attends over. Prefill: P. decode_step[i]: P + i (P + i - 1 already
  in the cache, plus the newest token). Without the cache, decode_step[i] recomputes a forward over P + i tokens.
- per-token latency: the run's time per output token after the first (tpot_s, the mean decode step), seconds.
- speed-up at prompt P: time to generate the first K tokens (prefill + K - 1 decode steps) without the cache
  divided by the same with it; K = the tokens the run without the cache generated (both runs share those steps).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ...io import read_json, staged, write_json
from ...metrics import headline, per_repeat, profiler_overhead_ratio
from .kv_memory import tokens_until
from ...stats import summary_table

# The targets (item 4), checked in the report as measured ratios, never in tests.
FLAT_TARGET_RATIO = 1.5  # with the cache: per-token latency at the longest prompt <= 1.5x that at the shortest
SPEEDUP_TARGET = 2.0  # the cache speeds the prompt closest to SPEEDUP_TARGET_PROMPT up at least 2x
SPEEDUP_TARGET_PROMPT = 200


def setting_rows(measurements: pd.DataFrame) -> pd.DataFrame:
    """The rows of the measured settings (load and traced rows dropped), with `use_cache` as a bool and knobs as ints."""
    rows = measurements[(measurements["variant"] != "load")
                        & ~measurements["variant"].str.startswith("traced_")].copy()
    rows["use_cache"] = rows["use_cache"].astype(bool)
    rows["prompt_tokens"] = rows["prompt_tokens"].astype(int)
    rows["batch_size"] = rows["batch_size"].astype(int)
    return rows


def latency_rows(measurements: pd.DataFrame) -> pd.DataFrame:
    """Rows of the batch-1 latency settings."""
    rows = setting_rows(measurements)
    return rows[rows["batch_size"] == 1]


def per_run_value(group: pd.DataFrame, metric: str) -> pd.Series:
    """One value of a per-run `metric` per repeat (request 0 for per-request metrics), indexed by repeat."""
    rows = group[(group["metric"] == metric) & (group["request_id"].isin([-1, 0]))]
    return rows.groupby("repeat")["value"].first()


def time_to_tokens(group: pd.DataFrame, tokens: int) -> pd.Series:
    """Per repeat: seconds to generate the first `tokens` tokens = prefill + decode steps 1 .. tokens - 1."""
    prefill = per_run_value(group, "prefill_s")
    steps = group[(group["metric"] == "decode_step_s") & (group["step"] < tokens)]
    return prefill + steps.groupby("repeat")["value"].sum().reindex(prefill.index, fill_value=0.0)


def first_value(group: pd.DataFrame, metric: str) -> float:
    """The value of a metric recorded once per setting (memory rows), or NaN when absent."""
    values = group.loc[group["metric"] == metric, "value"]
    return float(values.iloc[0]) if len(values) else float("nan")


def latency_table(measurements: pd.DataFrame) -> pd.DataFrame:
    """One row per prompt length x cache on/off at batch 1 (seconds, bytes; see the module docstring)."""
    rows = []
    latency = latency_rows(measurements)
    for (prompt, use_cache), group in latency.groupby(["prompt_tokens", "use_cache"], sort=True):
        use_cache = bool(use_cache)
        oom = bool((group["metric"] == "oom").any())
        tpot = per_run_value(group, "tpot_s")
        rows.append({
            "prompt_tokens": prompt, "use_cache": use_cache, "oom": oom,
            "new_tokens": int(first_value(group, "output_tokens")) if not oom else 0,
            "repeats": int(tpot.size),
            "prefill_p50_s": per_run_value(group, "prefill_s").median(),
            "per_token_p50_s": tpot.median(), "per_token_min_s": tpot.min(), "per_token_max_s": tpot.max(),
            "per_token_cv": tpot.std(ddof=1) / tpot.mean() if tpot.size > 1 else float("nan"),
            "e2e_p50_s": per_run_value(group, "e2e_s").median(),
            "output_tok_per_s_p50": per_run_value(group, "output_tok_per_s").median(),
            "kv_cache_bytes": first_value(group, "kv_cache_bytes"),
            "kv_cache_analytic_bytes": first_value(group, "kv_cache_analytic_bytes"),
            "peak_alloc_delta_bytes": first_value(group, "peak_alloc_delta_bytes"),
        })
    table = pd.DataFrame(rows).sort_values(["prompt_tokens", "use_cache"], ascending=[True, False],
                                           ignore_index=True)
    # Speed-up over the tokens both runs generated (K), per prompt length.
    table["matched_tokens"] = 0
    table["time_to_matched_p50_s"] = float("nan")
    table["speedup"] = float("nan")
    for prompt in table["prompt_tokens"].unique():
        pair = table[(table["prompt_tokens"] == prompt) & ~table["oom"]]
        if len(pair) < 2:
            continue
        matched = int(pair["new_tokens"].min())
        times = {}
        for index, row in pair.iterrows():
            group = latency[(latency["prompt_tokens"] == prompt) & (latency["use_cache"] == row["use_cache"])]
            times[row["use_cache"]] = time_to_tokens(group, matched).median()
            table.loc[index, ["matched_tokens", "time_to_matched_p50_s"]] = [matched, times[row["use_cache"]]]
        table.loc[pair.index, "speedup"] = times[False] / times[True]
    return table


def memory_table(measurements: pd.DataFrame, weights_bytes: int) -> pd.DataFrame:
    """One row per prompt length x batch size with the cache on: positions held (tokens), the cache tensors'
    measured bytes, the formula's bytes, whether they are equal, the share of the weights' bytes, and the
    allocator's peak delta (CUDA only, else NaN)."""
    rows = setting_rows(measurements)
    cached = rows[rows["use_cache"]]
    table = []
    for (prompt, batch), group in cached.groupby(["prompt_tokens", "batch_size"], sort=True):
        oom = bool((group["metric"] == "oom").any())
        measured = first_value(group, "kv_cache_bytes")
        analytic = first_value(group, "kv_cache_analytic_bytes")
        table.append({
            "prompt_tokens": prompt, "batch_size": batch, "oom": oom,
            "positions_tokens": first_value(group, "kv_cache_positions_tokens"),
            "kv_cache_bytes": measured, "kv_cache_analytic_bytes": analytic,
            "analytic_equals_measured": bool(measured == analytic) if not oom else False,
            "share_of_weights": measured / weights_bytes,
            "peak_alloc_delta_bytes": first_value(group, "peak_alloc_delta_bytes"),
        })
    return pd.DataFrame(table)


def step_latency(measurements: pd.DataFrame) -> pd.DataFrame:
    """Per batch-1 setting and decode step: the step's context (tokens) and its median, min and max seconds."""
    steps = latency_rows(measurements)
    steps = steps[steps["metric"] == "decode_step_s"]
    grouped = steps.groupby(["prompt_tokens", "use_cache", "step"])["value"]
    table = pd.DataFrame({"median_s": grouped.median(), "min_s": grouped.min(), "max_s": grouped.max(),
                          "n": grouped.size()}).reset_index()
    table["context_tokens"] = table["prompt_tokens"] + table["step"].astype(int)
    return table


def linear_fit(steps: pd.DataFrame) -> dict:
    """Least-squares line through (context tokens, median step seconds): intercept_s + slope_s_per_token x n."""
    if len(steps) < 2 or steps["context_tokens"].nunique() < 2:
        return {"intercept_s": float("nan"), "slope_s_per_token": float("nan")}
    slope, intercept = np.polyfit(steps["context_tokens"], steps["median_s"], 1)
    return {"intercept_s": float(intercept), "slope_s_per_token": float(slope)}


def doubling_context(on: dict, off: dict) -> float | None:
    """Context (tokens) from which a step without the cache costs twice one with it, from the two linear fits;
    0 when it already does at any context, None when the lines never get there."""
    denominator = off["slope_s_per_token"] - 2 * on["slope_s_per_token"]
    if not math.isfinite(denominator) or denominator <= 0:
        return None
    return max(0.0, (2 * on["intercept_s"] - off["intercept_s"]) / denominator)


def device_memory(env: dict) -> tuple[int, str, str]:
    """The memory the model and its cache must fit in (bytes), its name and its kind ("gpu" or "ram", which the
    report words per language): GPU memory on CUDA, RAM on the CPU."""
    if env.get("device") == "cuda" and env.get("gpu_memory_bytes"):
        return int(env["gpu_memory_bytes"]), f"GPU memory ({env.get('gpu_name', 'GPU')})", "gpu"
    return int(env["ram_bytes"]), "RAM", "ram"


def nearest(values, target: int) -> int:
    return min(values, key=lambda value: (abs(value - target), value))


def targets(table: pd.DataFrame) -> tuple[list[dict], dict]:
    """The three targets as measured ratios with pass/fail, and the ratios themselves. Each target is a key
    (`cache_on_flat`, `cache_off_grows`, `speedup`) with its numbers; the report's templates word it."""
    ok = table[~table["oom"]]
    on = ok[ok["use_cache"]].set_index("prompt_tokens")["per_token_p50_s"]
    off = ok[~ok["use_cache"]].set_index("prompt_tokens")["per_token_p50_s"]
    speedups = ok[ok["use_cache"]].set_index("prompt_tokens")["speedup"].dropna()
    ratios = {"shortest_prompt": None, "longest_prompt": None, "per_token_ratio_cache_on": float("nan"),
              "per_token_ratio_cache_off": float("nan"), "speedup_target_prompt": None,
              "speedup_at_target_prompt": float("nan")}
    results = []
    if len(on) >= 2:
        short, long = int(on.index.min()), int(on.index.max())
        ratio_on = float(on[long] / on[short])
        ratios.update(shortest_prompt=short, longest_prompt=long, per_token_ratio_cache_on=ratio_on)
        results.append({"target": "cache_on_flat", "short": short, "long": long, "bound": FLAT_TARGET_RATIO,
                        "ratio": ratio_on, "passed": ratio_on <= FLAT_TARGET_RATIO})
    if len(off) >= 2:
        short, long = int(off.index.min()), int(off.index.max())
        ratio_off = float(off[long] / off[short])
        growing = bool(np.all(np.diff(off.sort_index().to_numpy()) > 0))
        ratios["per_token_ratio_cache_off"] = ratio_off
        results.append({"target": "cache_off_grows", "short": short, "long": long, "ratio": ratio_off,
                        "rising_everywhere": growing, "passed": growing and ratio_off > 1})
    if len(speedups):
        prompt = nearest(speedups.index.tolist(), SPEEDUP_TARGET_PROMPT)
        speedup = float(speedups[prompt])
        ratios.update(speedup_target_prompt=int(prompt), speedup_at_target_prompt=speedup)
        results.append({"target": "speedup", "prompt": int(prompt), "bound": SPEEDUP_TARGET, "ratio": speedup,
                        "passed": speedup >= SPEEDUP_TARGET})
    return results, ratios


def trace_overheads(measurements: pd.DataFrame, meta: dict) -> list[dict]:
    """Per traced setting: its trace file and the profiler's overhead (traced_<variant> against <variant>)."""
    latency = latency_rows(measurements)
    sweep_order = {variant: index for index, variant in enumerate(latency["variant"].unique())}
    traces = sorted(meta["notes"]["traces"].items(), key=lambda item: sweep_order.get(item[0], len(sweep_order)))
    return [{"variant": variant, "file": traced["file"], "oom": bool(traced.get("oom", False)),
             "profiler_overhead_ratio": profiler_overhead_ratio(measurements, f"traced_{variant}", variant)}
            for variant, traced in traces]


def doubling_verdict(context_tokens: float | None) -> str | None:
    """from_context when an uncached step costs twice a cached one only past some context (the fitted lines cross
    a 2x gap at a positive context), always when it does at any context, None without both fits."""
    if context_tokens is None:
        return None
    return "from_context" if context_tokens > 0 else "always"


def findings(measurements: pd.DataFrame, meta: dict, cv_warn: float) -> dict:
    """The key numbers the report's text is generated from (seconds, bytes, tokens)."""
    notes, env = meta["notes"], meta["env"]
    weights = int(notes["weights_bytes"])
    per_token = int(notes["kv_bytes_per_token"])
    shapes = notes["shapes"]
    table = latency_table(measurements)
    memory = memory_table(measurements, weights)
    steps = step_latency(measurements)
    fit_on = linear_fit(steps[steps["use_cache"]])
    fit_off = linear_fit(steps[~steps["use_cache"]])
    target_results, ratios = targets(table)
    memory_bytes, memory_name, memory_kind = device_memory(env)
    max_positions = int(shapes["max_positions"])
    exceeds_weights = tokens_until(weights, per_token)
    fills_memory = tokens_until(memory_bytes - weights, per_token)
    measured_ok = memory[~memory["oom"]]
    largest = measured_ok.sort_values("kv_cache_bytes").iloc[-1] if len(measured_ok) else None
    speedups = table[table["use_cache"] & table["speedup"].notna()].set_index("prompt_tokens")["speedup"]
    # The shortest prompt from which every longer prompt is sped up at least SPEEDUP_TARGET times.
    below = [int(p) for p, s in speedups.items() if s < SPEEDUP_TARGET]
    two_x = [int(p) for p in speedups.index if not below or p > max(below)]
    noisy = table[table["per_token_cv"] > cv_warn]
    result = {
        "prompt_lengths": sorted(int(p) for p in table["prompt_tokens"].unique()),
        "new_tokens": notes["new_tokens"],
        "repeats": {"cache_on": int(meta["config"]["d3_kvcache"]["repeats"]),
                    "cache_off": int(meta["config"]["d3_kvcache"]["no_cache_repeats"])},
        **ratios,
        "targets": target_results,
        "flat_target_ratio": FLAT_TARGET_RATIO,
        "targets_passed": sum(t["passed"] for t in target_results),
        "speedups": [{"prompt_tokens": int(p), "speedup": float(s)} for p, s in speedups.items()],
        "speedup_min": float(speedups.min()) if len(speedups) else float("nan"),
        "speedup_max": float(speedups.max()) if len(speedups) else float("nan"),
        "speedup_2x_from_prompt": min(two_x) if two_x else None,
        "speedup_2x_prompts": [int(p) for p, s in speedups.items() if s >= SPEEDUP_TARGET],
        "speedup_grows_with_prompt": bool(len(speedups) > 1 and speedups.iloc[-1] > speedups.iloc[0]),
        "fit_cache_on": fit_on,
        "fit_cache_off": fit_off,
        "no_cache_doubles_at_context_tokens": doubling_context(fit_on, fit_off),
        # words chosen by numbers, decided here (the templates word them):
        "cache_on_flat": bool(ratios.get("per_token_ratio_cache_on", float("inf")) <= FLAT_TARGET_RATIO),
        "no_cache_doubles": doubling_verdict(doubling_context(fit_on, fit_off)),
        "cache_never_cost": bool(len(speedups) and speedups.min() >= 1),
        "gqa": bool(shapes["heads"] // shapes["kv_heads"] > 1),
        "one_sequence_outgrows_weights": bool(max_positions and exceeds_weights <= max_positions),
        "tokens_compared_prompts": sorted(int(p) for p in notes["tokens_match"]),
        "tokens_differ_prompts": sorted(int(p) for p, same in notes["tokens_match"].items() if not same),
        "kv_bytes_per_token": per_token,
        "kv_bytes_per_token_without_gqa": per_token * shapes["heads"] // shapes["kv_heads"],
        "gqa_group": shapes["heads"] // shapes["kv_heads"],
        "weights_bytes": weights,
        "device_memory_bytes": memory_bytes,
        "device_memory_name": memory_name,
        "device_memory_kind": memory_kind,
        "max_positions": max_positions,
        "cache_exceeds_weights_tokens": exceeds_weights,
        "cache_fills_memory_tokens": fills_memory,
        "batch_exceeding_weights_at_max_context": math.ceil(exceeds_weights / max_positions) if max_positions else None,
        "max_batch_fitting_at_max_context": fills_memory // max_positions if max_positions else None,
        "analytic_equals_measured_all": bool(len(measured_ok)) and bool(measured_ok["analytic_equals_measured"].all()),
        "memory_settings_checked": int(len(measured_ok)),
        "largest_cache": None if largest is None else {
            "prompt_tokens": int(largest["prompt_tokens"]), "batch_size": int(largest["batch_size"]),
            "positions_tokens": int(largest["positions_tokens"]), "bytes": int(largest["kv_cache_bytes"]),
            "share_of_weights": float(largest["share_of_weights"])},
        "peak_alloc_measured": bool(table["peak_alloc_delta_bytes"].notna().any()),
        "oom_settings": sorted(measurements.loc[measurements["metric"] == "oom", "variant"].unique().tolist()),
        "noisy_settings": [f"p{int(r.prompt_tokens)}_cache_{'on' if r.use_cache else 'off'}"
                           for r in noisy.itertuples()],
        "cv_warn": cv_warn,
        "traces": trace_overheads(measurements, meta),
    }
    latency = latency_rows(measurements)
    result["headlines"] = [
        headline(f"per-token latency at the longest prompt, cache {state}",
                 per_repeat(latency[(latency["prompt_tokens"] == result["longest_prompt"])
                                    & (latency["use_cache"] == on)], "tpot_s"), "s", "lower")
        for state, on in (("on", True), ("off", False))] if result["longest_prompt"] is not None else []
    return result


def analyze(settings: dict, measurements_path, meta_path, summary_path, table_path, memory_path,
            findings_path) -> None:
    measurements = pd.read_csv(measurements_path)
    meta = read_json(meta_path)
    cv_warn = settings["cv_warn"]
    summary = summary_table(measurements, ["variant", "prompt_tokens", "use_cache", "batch_size", "metric", "step"],
                            cv_warn)
    with staged(summary_path, table_path, memory_path, findings_path) as (summary_tmp, table_tmp, memory_tmp,
                                                                          findings_tmp):
        summary.to_csv(summary_tmp, index=False)
        latency_table(measurements).to_csv(table_tmp, index=False)
        memory_table(measurements, int(meta["notes"]["weights_bytes"])).to_csv(memory_tmp, index=False)
        write_json(findings_tmp, findings(measurements, meta, cv_warn))


# ---- command line (python -m profiling d3_kvcache_analysis) -------------------------------------------------------
def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    for name in ("measurements", "meta", "summary", "table", "memory", "findings"):
        parser.add_argument(f"--{name}", required=True)


def cli(args) -> None:
    analyze(args.settings, args.measurements, args.meta, args.summary, args.table, args.memory, args.findings)
