"""The D3 KV cache section of the report: per-token latency by position with and without the cache, the
prompt length x cache table, speed-ups, and what the cache costs in memory (measured, formula, projection)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from .analysis import SPEEDUP_TARGET, step_latency
from ...io import read_data_files
from ...report.charts import plt, save

from . import NAME as PHASE
DATA = f"data/{PHASE}"


def prompt_colours(prompts: list[int]) -> dict:
    """One colour per prompt length, short (dark) to long (light)."""
    colours = plt.cm.viridis(np.linspace(0.0, 0.85, len(prompts)))
    return dict(zip(prompts, colours))


def token_latency_chart(steps: pd.DataFrame, table: pd.DataFrame, figures: Path) -> str:
    """Decode-step latency (ms) against the step's context (tokens), cache on (solid) and off (dashed), each a
    median with its min–max band over repeats; the expected growth overlaid (log–log axes)."""
    prompts = sorted(steps["prompt_tokens"].unique())
    colours = prompt_colours(prompts)
    fig, ax = plt.subplots(figsize=(9, 4.6))
    for prompt in prompts:
        for use_cache, style in ((True, "-"), (False, "--")):
            rows = steps[(steps["prompt_tokens"] == prompt) & (steps["use_cache"] == use_cache)]
            if rows.empty:
                continue
            ax.fill_between(rows["context_tokens"], rows["min_s"] * 1e3, rows["max_s"] * 1e3,
                            color=colours[prompt], alpha=0.2, linewidth=0)
            ax.plot(rows["context_tokens"], rows["median_s"] * 1e3, style, color=colours[prompt], linewidth=1.5,
                    marker="." if use_cache else "x", markersize=4)
    # Expected with the cache: constant work per step, at the shortest prompt's median step.
    cached = steps[steps["use_cache"]]
    shortest = cached[cached["prompt_tokens"] == cached["prompt_tokens"].min()]["median_s"].median()
    ax.axhline(shortest * 1e3, color="grey", linestyle=":", linewidth=1.2)
    # Expected without the cache: a step over n tokens recomputes a forward over n tokens, i.e. a prefill of n.
    prefills = table[table["use_cache"] & ~table["oom"]].sort_values("prompt_tokens")
    ax.plot(prefills["prompt_tokens"], prefills["prefill_p50_s"] * 1e3, ":", color="black", marker="s",
            markersize=4, linewidth=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("context of the step (tokens attended: prompt + step index), log scale")
    ax.set_ylabel("decode step latency (ms), log scale")
    ax.set_title("Per-token latency by position: with the cache (solid) and without (dashed)")
    handles = [Line2D([], [], color=colours[p], linewidth=3, label=f"prompt {p}") for p in prompts]
    handles += [
        Line2D([], [], color="black", linestyle="-", label="cache on (median, band = min–max)"),
        Line2D([], [], color="black", linestyle="--", label="cache off (median, band = min–max)"),
        Line2D([], [], color="grey", linestyle=":", label="expected with cache: constant work per step"),
        Line2D([], [], color="black", linestyle=":", marker="s", markersize=4,
               label="expected without: a forward over the whole context\n(= measured prefill of that many tokens)"),
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper left", ncol=2)
    return save(fig, figures, f"{PHASE}_token_latency")


def speedup_chart(table: pd.DataFrame, target: float, figures: Path) -> str:
    """Speed-up of the cache (time to the same K tokens without it / with it) per prompt length."""
    rows = table[table["use_cache"] & table["speedup"].notna()].sort_values("prompt_tokens")
    fig, ax = plt.subplots(figsize=(7, 3.2))
    labels = [str(p) for p in rows["prompt_tokens"]]
    bars = ax.bar(labels, rows["speedup"], color="#2ca02c")
    for bar, speedup in zip(bars, rows["speedup"]):
        ax.annotate(f"{speedup:.1f}×", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=8)
    ax.axhline(target, color="#d62728", linestyle="--", linewidth=1, label=f"target {target:.0f}×")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("speed-up (×)")
    tokens = int(rows["matched_tokens"].iloc[0]) if len(rows) else 0
    ax.set_title(f"Cache speed-up: time to generate {tokens} tokens, without ÷ with")
    ax.legend(fontsize=8)
    return save(fig, figures, f"{PHASE}_speedup")


def memory_chart(memory: pd.DataFrame, findings: dict, figures: Path) -> str:
    """KV cache bytes against batch × context (tokens): the formula's line (with and without grouped-query
    attention), the measured caches, the weights' bytes and the device's memory, with the crossovers."""
    per_token = findings["kv_bytes_per_token"]
    weights = findings["weights_bytes"]
    device = findings["device_memory_bytes"]
    fills = max(findings["cache_fills_memory_tokens"], 1)
    tokens = np.logspace(0, np.log10(fills * 4), 200)
    fig, ax = plt.subplots(figsize=(9, 4.4))
    ax.plot(tokens, tokens * per_token, color="#1f77b4", label=f"KV cache, formula ({per_token:,} bytes per token)")
    if findings["gqa_group"] > 1:
        ax.plot(tokens, tokens * findings["kv_bytes_per_token_without_gqa"], color="#1f77b4", linestyle=":",
                label=f"same model without grouped-query attention ({findings['gqa_group']}× more)")
    measured = memory[~memory["oom"]]
    ax.scatter(measured["positions_tokens"] * measured["batch_size"], measured["kv_cache_bytes"], color="#d62728",
               zorder=3, s=18, label="measured cache tensors (prompt + generated − 1, × batch)")
    ax.axhline(weights, color="#2ca02c", linestyle="--", label=f"weights ({weights / 2**20:.0f} MiB)")
    ax.axhline(device, color="black", linestyle="--",
               label=f"{findings['device_memory_name']} ({device / 2**30:.1f} GiB)")
    for x, text in ((findings["cache_exceeds_weights_tokens"], "cache = weights"),
                    (findings["cache_fills_memory_tokens"], "weights + cache = memory")):
        ax.axvline(x, color="grey", linewidth=0.8)
        ax.annotate(f" {text}\n {x:,} tokens", (x, weights / 300), fontsize=7, color="dimgrey")
    if findings["max_positions"]:
        ax.axvline(findings["max_positions"], color="#9467bd", linewidth=0.8, linestyle="-.",
                   label=f"one sequence at the model's full context ({findings['max_positions']:,} tokens)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch × context (tokens held in the cache), log scale")
    ax.set_ylabel("bytes, log scale")
    ax.set_title("What the KV cache costs: linear in batch × context")
    ax.legend(fontsize=7, loc="upper left")
    return save(fig, figures, f"{PHASE}_memory")


def view(reports: Path, figures: Path) -> dict | None:
    """Everything the D3 KV-cache section shows, or None when its analysis outputs are not in `reports`."""
    data = reports / DATA
    files = read_data_files(data, ("findings.json", "table.csv", "memory.csv", "measurements.csv", "meta.json",
                                   "summary.csv"))
    if files is None:
        return None
    findings, meta = files["findings.json"], files["meta.json"]
    table, memory, measurements = files["table.csv"], files["memory.csv"], files["measurements.csv"]
    steps = step_latency(measurements)
    loads = measurements[measurements["variant"] == "load"].set_index("metric")["value"]
    ok = table[~table["oom"]]
    return {
        "findings": findings,
        "meta": meta,
        "table": table.to_dict(orient="records"),
        "memory": memory.to_dict(orient="records"),
        "load_model_s": float(loads.get("load_model_s", float("nan"))),
        "load_tokenizer_s": float(loads.get("load_tokenizer_s", float("nan"))),
        # For the observation record: p50 per prompt length, in the order of the sweep.
        "prefill_ms": {int(r.prompt_tokens): round(r.prefill_p50_s * 1e3, 1) for r in ok[ok["use_cache"]].itertuples()},
        "per_token_ms": {cache: {int(r.prompt_tokens): round(r.per_token_p50_s * 1e3, 1)
                                 for r in ok[ok["use_cache"] == (cache == "on")].itertuples()}
                         for cache in ("on", "off")},
        # Throughput over the same first tokens both ways (runs without the cache generate fewer tokens).
        "matched_tokens": int(ok["matched_tokens"].max()) if len(ok) else 0,
        "matched_tok_per_s": {cache: {int(r.prompt_tokens): round(r.matched_tokens / r.time_to_matched_p50_s, 1)
                                      for r in ok[ok["use_cache"] == (cache == "on")].itertuples()
                                      if r.time_to_matched_p50_s > 0}
                              for cache in ("on", "off")},
        "figures": {
            "token_latency": token_latency_chart(steps, table, figures),
            "speedup": speedup_chart(table, SPEEDUP_TARGET, figures),
            "memory": memory_chart(memory, findings, figures),
        },
        "measurements": f"{DATA}/measurements.csv",
        "summary": f"{DATA}/summary.csv",
        "table_csv": f"{DATA}/table.csv",
        "memory_csv": f"{DATA}/memory.csv",
        "findings_json": f"{DATA}/findings.json",
        "record": f"records/{PHASE}.txt",
    }
