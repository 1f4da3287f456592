"""The D3 batching section of the report: who pays for whom when requests share a batch.

Charts: latency versus throughput across static batch sizes, latency CDFs, the wait-window trade-off, the achieved
batch-size histogram, a swimlane timeline of one dynamic run, and utilisation over the whole experiment.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...io import read_data_files
from ...report.charts import STAGE_COLOURS, plt, save

from . import NAME as PHASE
DATA_FILES = ("findings.json", "summary.csv", "batch_table.csv", "dynamic_table.csv", "measurements.csv",
              "meta.json", "timeline.csv", "telemetry.csv")
QUEUE_COLOUR = "#b0b0b0"


def _colours(count: int) -> list:
    return [plt.get_cmap("viridis")(x) for x in np.linspace(0.0, 0.85, max(count, 1))]


def latency_vs_throughput(batches: pd.DataFrame, figures: Path) -> str:
    """Each static batch size as a point: median output tok/s (bar: min-max over repeats) against its p95 and p50
    end-to-end latency (bar: min-max)."""
    ok = batches[batches["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.errorbar(ok["output_tok_per_s_p50"], ok["e2e_p95_s"],
                xerr=[ok["output_tok_per_s_p50"] - ok["output_tok_per_s_min"],
                      ok["output_tok_per_s_max"] - ok["output_tok_per_s_p50"]],
                fmt="o-", color="#d62728", capsize=3, label="p95 e2e latency")
    ax.errorbar(ok["output_tok_per_s_p50"], ok["e2e_p50_s"],
                yerr=[ok["e2e_p50_s"] - ok["e2e_min_s"], ok["e2e_max_s"] - ok["e2e_p50_s"]],
                fmt="s--", color="#1f77b4", capsize=3, mfc="white", label="p50 e2e latency (bar: min–max)")
    for _, row in ok.iterrows():
        ax.annotate(f"  batch {int(row['batch_size'])}", (row["output_tok_per_s_p50"], row["e2e_p95_s"]), fontsize=8)
    ax.set_xlabel("output tokens/s (median over repeats; bar: min–max)")
    ax.set_ylabel("end-to-end latency per request (s)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    oom = batches.loc[batches["status"] == "oom", "batch_size"].tolist()
    note = f"; out of memory at batch {', '.join(str(int(b)) for b in oom)}" if oom else ""
    ax.set_title(f"Static batches: latency paid for throughput ({int(ok['repeats'].max())} repeats{note})")
    ax.legend(fontsize=8, loc="upper left")
    return save(fig, figures, f"{PHASE}_latency_vs_throughput")


def _cdf(ax, values: pd.Series, label: str, colour, style: str = "-") -> None:
    data = np.sort(values.to_numpy())
    ax.step(data, np.arange(1, data.size + 1) / data.size, where="post", label=label, color=colour, linestyle=style)


def latency_cdfs(measurements: pd.DataFrame, dynamic: pd.DataFrame, figures: Path) -> str:
    """Left: CDF of per-request e2e latency per static batch size. Right: the same for the dynamic grid runs."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.0))
    static = measurements[measurements["variant"].str.startswith("static_b") & (measurements["metric"] == "e2e_s")]
    sizes = sorted(static["batch_size"].unique())
    for colour, size in zip(_colours(len(sizes)), sizes):
        values = static.loc[static["batch_size"] == size, "value"]
        _cdf(left, values, f"batch {int(size)} (n={values.size})", colour)
    left.set_title("Static batches: e2e latency CDF")
    left.set_xlabel("end-to-end latency (s)")
    left.set_ylabel("share of requests")
    left.legend(fontsize=7)
    grid = dynamic[dynamic["role"].isin(["grid", "baseline"])] if len(dynamic) else dynamic
    caps = sorted(grid["max_batch"].unique()) if len(grid) else []
    windows = sorted(grid["wait_window_ms"].unique()) if len(grid) else []
    styles = ["-", "--", ":", "-."]
    for colour, cap in zip(_colours(len(caps)), caps):
        for index, window in enumerate(windows):
            match = grid[(grid["max_batch"] == cap) & (grid["wait_window_ms"] == window)]
            if match.empty:
                continue
            variant = match.iloc[0]["variant"]
            values = measurements.loc[(measurements["variant"] == variant) & (measurements["metric"] == "e2e_s"),
                                      "value"]
            _cdf(right, values, f"cap {cap}, window {window:g} ms (n={values.size})", colour,
                 styles[index % len(styles)])
    rate = grid["rate_req_per_s"].iloc[0] if len(grid) else float("nan")
    right.set_title(f"Dynamic batcher, Poisson {rate:g} req/s: e2e latency CDF")
    right.set_xlabel("end-to-end latency incl. queue wait (s)")
    if len(grid):
        right.legend(fontsize=7)
    return save(fig, figures, f"{PHASE}_latency_cdf")


def window_tradeoff(dynamic: pd.DataFrame, figures: Path) -> str:
    """For each cap of the grid: p95 and p50 e2e latency and output tok/s against the wait window, mean batch
    annotated."""
    grid = dynamic[dynamic["role"] == "grid"]
    fig, (latency_ax, throughput_ax) = plt.subplots(1, 2, figsize=(11, 4.0))
    caps = sorted(grid["max_batch"].unique())
    for colour, cap in zip(_colours(len(caps)), caps):
        rows = grid[grid["max_batch"] == cap].sort_values("wait_window_ms")
        latency_ax.plot(rows["wait_window_ms"], rows["e2e_p95_s"], "o-", color=colour, label=f"cap {cap}: p95")
        latency_ax.plot(rows["wait_window_ms"], rows["e2e_p50_s"], "s--", color=colour, mfc="white",
                        label=f"cap {cap}: p50")
        throughput_ax.plot(rows["wait_window_ms"], rows["output_tok_per_s_p50"], "o-", color=colour,
                           label=f"cap {cap}")
        for _, row in rows.iterrows():
            latency_ax.annotate(f" avg {row['mean_batch_size']:.1f}", (row["wait_window_ms"], row["e2e_p95_s"]),
                                fontsize=7)
    requests = int(grid["requests"].max()) if len(grid) else 0
    rate = grid["rate_req_per_s"].iloc[0] if len(grid) else float("nan")
    latency_ax.set_title(f"e2e latency vs wait window ({requests} requests per setting)")
    latency_ax.set_xlabel("wait window (ms)")
    latency_ax.set_ylabel("end-to-end latency (s): p95 solid, p50 dashed")
    latency_ax.set_ylim(bottom=0)
    throughput_ax.set_title(f"Output tokens/s vs wait window (Poisson {rate:g} req/s)")
    throughput_ax.set_xlabel("wait window (ms)")
    throughput_ax.set_ylabel("output tokens/s over the run")
    throughput_ax.set_ylim(bottom=0)
    latency_ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    throughput_ax.legend(fontsize=8)
    return save(fig, figures, f"{PHASE}_window_tradeoff")


def batch_histogram(measurements: pd.DataFrame, dynamic: pd.DataFrame, figures: Path) -> str:
    """Achieved batch sizes of the grid runs: one panel per cap, one bar group per batch size, a bar per window."""
    grid = dynamic[(dynamic["role"] == "grid") & (dynamic["max_batch"] > 1)]
    caps = sorted(grid["max_batch"].unique()) or [1]
    fig, axes = plt.subplots(1, len(caps), figsize=(5.0 * len(caps), 3.6), squeeze=False)
    for ax, cap in zip(axes[0], caps):
        rows = grid[grid["max_batch"] == cap].sort_values("wait_window_ms")
        width = 0.8 / max(len(rows), 1)
        for index, (colour, (_, row)) in enumerate(zip(_colours(len(rows)), rows.iterrows())):
            sizes = measurements.loc[(measurements["variant"] == row["variant"])
                                     & (measurements["metric"] == "achieved_batch_size"), "value"].astype(int)
            counts = sizes.value_counts().reindex(range(1, cap + 1), fill_value=0)
            ax.bar(counts.index + (index - (len(rows) - 1) / 2) * width, counts.values, width=width, color=colour,
                   label=f"window {row['wait_window_ms']:g} ms ({row['batches']} batches)")
        ax.set_xticks(range(1, cap + 1))
        ax.set_xlabel("achieved batch size (requests)")
        ax.set_ylabel("batches launched")
        ax.set_title(f"cap {cap}")
        if len(rows):
            ax.legend(fontsize=7)
    fig.suptitle("Achieved batch sizes of the dynamic batcher", fontsize=10)
    return save(fig, figures, f"{PHASE}_batch_histogram")


def swimlane(timeline: pd.DataFrame, variant: str, figures: Path) -> str:
    """One dynamic run, one lane per request: queue wait (arrival -> launch), prefill incl. tokenize (launch ->
    first token), decode (first token -> done); thin lines mark batch launches. Measured timestamps, seconds from
    the run's start."""
    rows = timeline[(timeline["variant"] == variant) & (timeline["repeat"] == 0)].sort_values("request_id")
    start = rows["run_start_s"].min()
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(rows) + 1.6))
    for lane, (_, row) in enumerate(rows.iterrows()):
        segments = [(row["arrival_s"], row["launch_s"], QUEUE_COLOUR, "queue wait"),
                    (row["launch_s"], row["first_token_s"], STAGE_COLOURS["prefill"], "prefill (+ tokenize)"),
                    (row["first_token_s"], row["done_s"], STAGE_COLOURS["decode_step"], "decode (+ detokenize)")]
        for begin, end, colour, label in segments:
            ax.barh(lane, end - begin, left=begin - start, color=colour, edgecolor="white", linewidth=0.3,
                    label=label if lane == 0 else None)
    for launch in rows["launch_s"].unique():
        ax.axvline(launch - start, color="black", linewidth=0.4, alpha=0.4)
    ax.set_yticks(range(len(rows)), [f"req {int(r)} (b={int(b)})" for r, b in zip(rows["request_id"],
                                                                                 rows["batch_size"])], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run started (vertical lines: batch launches)")
    ax.set_title(f"Swimlane of one dynamic run: {variant}")
    ax.legend(fontsize=7, loc="upper right")
    return save(fig, figures, f"{PHASE}_swimlane")


def _phases(timeline: pd.DataFrame) -> list[tuple[str, float, float]]:
    """(label, start_s, end_s) of each variant in the experiment, in time order."""
    spans = timeline.groupby("variant").agg(start=("launch_s", "min"), run_start=("run_start_s", "min"),
                                             end=("done_s", "max"))
    spans["start"] = spans[["start", "run_start"]].min(axis=1)
    return [(variant, row["start"], row["end"]) for variant, row in spans.sort_values("start").iterrows()]


def utilisation(telemetry: pd.DataFrame, timeline: pd.DataFrame, figures: Path) -> str:
    """Utilisation over the whole experiment: CPU busy share (mean over cores, and each core), then memory (and the
    GPU readings when NVML sampled them); phases shaded, batch launches as ticks at the bottom."""
    panels = [metric for metric in ("gpu_util_ratio", "gpu_memory_used_bytes", "gpu_power_w", "gpu_sm_clock_mhz",
                                    "process_rss_bytes") if (telemetry["metric"] == metric).any()]
    fig, axes = plt.subplots(1 + len(panels), 1, figsize=(11, 2.2 * (1 + len(panels)) + 0.6), sharex=True,
                             squeeze=False)
    axes = axes[:, 0]
    cpu = telemetry[telemetry["metric"] == "cpu_busy_ratio"]
    for core, rows in cpu.groupby("core"):
        axes[0].plot(rows["t_s"], rows["value"] * 100, linewidth=0.5, alpha=0.5, label=f"core {int(core)}")
    mean = cpu.groupby("t_s")["value"].mean()
    axes[0].plot(mean.index, mean.values * 100, color="black", linewidth=1.0, label="machine: mean of cores")
    own = telemetry[telemetry["metric"] == "process_cpu_ratio"]
    if len(own):
        axes[0].plot(own["t_s"], own["value"] * 100, color="#d62728", linewidth=1.0,
                     label="this process: share of all cores")
    axes[0].set_ylabel("CPU busy (%)")
    axes[0].set_ylim(0, 105)
    axes[0].legend(fontsize=6, loc="upper right", ncol=4)
    scale = {"gpu_util_ratio": (100, "GPU util (%)"), "gpu_memory_used_bytes": (1 / 2**20, "GPU memory (MiB)"),
             "gpu_power_w": (1, "GPU power (W)"), "gpu_sm_clock_mhz": (1, "SM clock (MHz)"),
             "process_rss_bytes": (1 / 2**20, "process RSS (MiB)")}
    for ax, metric in zip(axes[1:], panels):
        rows = telemetry[telemetry["metric"] == metric]
        factor, label = scale[metric]
        ax.plot(rows["t_s"], rows["value"] * factor, color="#1f77b4", linewidth=0.8)
        ax.set_ylabel(label)
    phases = _phases(timeline)
    for index, (label, begin, end) in enumerate(phases):
        for ax in axes:
            ax.axvspan(begin, end, color="#ff7f0e" if label.startswith("dyn_") else "#2ca02c",
                       alpha=0.06 if index % 2 else 0.12, linewidth=0)
        if label.startswith("static_b"):
            axes[0].annotate(label.removeprefix("static_"), ((begin + end) / 2, 100), ha="center", va="top",
                             fontsize=7)
    launches = timeline.drop_duplicates(["variant", "repeat", "batch_index"])["launch_s"]
    axes[-1].plot(launches, np.zeros(len(launches)), "|", color="black", markersize=8, transform=axes[-1].
                  get_xaxis_transform())
    axes[-1].set_xlabel("seconds since the experiment started (green: static batches, orange: dynamic runs; "
                        "ticks: batch launches)")
    samples = telemetry["t_s"].nunique()
    span = telemetry["t_s"].max() - telemetry["t_s"].min() if samples > 1 else 0.0
    axes[0].set_title(f"Utilisation during the experiment ({samples} samples over {span:.0f} s)")
    return save(fig, figures, f"{PHASE}_utilisation")


def view(reports: Path, figures: Path) -> dict | None:
    """Everything the D3 batching section shows, or None when its analysis outputs are not in `reports`."""
    files = read_data_files(reports / "data" / PHASE, DATA_FILES)
    if files is None:
        return None
    findings, meta, measurements = files["findings.json"], files["meta.json"], files["measurements.csv"]
    batches = files["batch_table.csv"]
    dynamic = files["dynamic_table.csv"]  # never empty: the baseline and operating point always run
    timeline, telemetry = files["timeline.csv"], files["telemetry.csv"]
    cfg = meta["config"][PHASE]
    traces = [{"batch_size": size, "path": f"traces/{PHASE}/static_b{size}.json.gz",
               "oom": size in findings["oom_batch_sizes"]} for size in cfg["batch_sizes"]]
    figures_made = {
        "latency_vs_throughput": latency_vs_throughput(batches, figures),
        "latency_cdf": latency_cdfs(measurements, dynamic, figures),
        "window_tradeoff": window_tradeoff(dynamic, figures),
        "batch_histogram": batch_histogram(measurements, dynamic, figures),
        "swimlane": swimlane(timeline, findings["operating_variant"], figures),
        "utilisation": utilisation(telemetry, timeline, figures),
    }
    return {
        "findings": findings,
        "meta": meta,
        "cfg": cfg,
        "batches": batches.to_dict(orient="records"),
        "dynamic": dynamic.to_dict(orient="records"),
        "figures": figures_made,
        "traces": traces,
        "measurements": f"data/{PHASE}/measurements.csv",
        "summary": f"data/{PHASE}/summary.csv",
        "batch_table": f"data/{PHASE}/batch_table.csv",
        "dynamic_table": f"data/{PHASE}/dynamic_table.csv",
        "timeline": f"data/{PHASE}/timeline.csv",
        "telemetry": f"data/{PHASE}/telemetry.csv",
        "record": f"records/{PHASE}.txt",
    }
