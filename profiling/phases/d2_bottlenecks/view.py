"""The D2 bottlenecks section of the report: measured ceilings, roofline with verdicts, where the time goes, the
linear-layer shape curve."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...io import read_data_files
from ...report.charts import plt, save

from . import NAME as PHASE

DATA = Path("data") / PHASE
TRACES = Path("traces") / PHASE
HOST = "host (outside operators)"
CATEGORY_COLOURS = {
    "linear": "#1f77b4", "attention": "#ff7f0e", "norm": "#2ca02c", "activation": "#d62728", "rotary": "#9467bd",
    "embedding": "#8c564b", "lm_head": "#e377c2", "sampling": "#bcbd22", "kv_cache": "#17becf", "other": "#7f7f7f",
    HOST: "#dddddd",
}
SOURCE_COLOURS = ["#1f77b4", "#8c564b", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e"]  # this phase first, then the others
STAGE_MARKERS = {"prefill": "s", "decode": "o"}
DTYPE_COLOURS = {"float32": "#1f77b4", "bfloat16": "#d62728", "float16": "#2ca02c"}
KERNEL_LINES = {"prepacked": "-", "aten": "--", "small_batch": ":"}  # the shape curve: solid = the engine's default
KERNEL_LABELS = {"prepacked": "prepacked (oneDNN)", "aten": "F.linear (aten)", "small_batch": "small-batch C kernel"}
KERNEL_MARKERS = {"prepacked": "o", "aten": "s", "small_batch": "^"}

# How each ceiling is shown: (rate key in ceilings.json, display scale, display unit).
CEILING_DISPLAY = {
    "memory_bandwidth": ("bytes_per_s", 1e9, "GB/s"),
    "memory_read": ("bytes_per_s", 1e9, "GB/s"),
    "matmul": ("flop_per_s", 1e9, "GFLOP/s"),
    "matvec": ("bytes_per_s", 1e9, "GB/s"),
    "tiny_op": ("seconds_per_call", 1e-6, "µs per operator"),
    "host_to_device": ("bytes_per_s", 1e9, "GB/s"),
    "device_to_host": ("bytes_per_s", 1e9, "GB/s"),
}


def ceiling_rows(ceilings: dict) -> list[dict]:
    """The ceilings table: name, what was timed, median in display units, range over repeats, n, CV."""
    rows = []
    for name, record in ceilings.items():
        key, scale, unit = CEILING_DISPLAY[name]
        median = record[key] / scale
        low, high = sorted(value / scale for value in record[f"{key}_range"])
        extra = f"{record['flop_per_s'] / 1e9:,.1f} GFLOP/s" if name == "matvec" else ""
        rows.append({"name": name, "label": record["label"], "median": median, "low": low, "high": high,
                     "unit": unit, "n": record["n"], "cv": record["cv"], "extra": extra})
    return rows


def d2_roofline(points: pd.DataFrame, findings: dict, figures: Path) -> str:
    """Log-log roofline: measured roofs (bandwidth slope, matmul flat) and every point (FLOP/s vs intensity)."""
    peak, bandwidth = findings["peak_flop_per_s"], findings["bandwidth_bytes_per_s"]
    matvec = findings["ceilings"]["matvec"]
    intensities = list(points["intensity"]) + [matvec["work_flops"] / matvec["work_bytes"]]
    x = np.logspace(np.log10(min(intensities) / 3), np.log10(max(max(intensities) * 3, peak / bandwidth * 3)), 200)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    ax.plot(x, np.minimum(peak, x * bandwidth) / 1e9, color="black", linewidth=1.5,
            label=f"roof: {bandwidth / 1e9:.1f} GB/s copy, {peak / 1e9:.1f} GFLOP/s matmul")
    ax.axvline(peak / bandwidth, color="black", linestyle=":", linewidth=0.8)
    ax.scatter([matvec["work_flops"] / matvec["work_bytes"]], [matvec["flop_per_s"] / 1e9], marker="*", s=140,
               color="black", label="matrix-vector ceiling (measured)")
    sources = findings["sources"]
    for (source, stage), group in points.groupby(["source", "stage"]):
        ax.scatter(group["intensity"], group["achieved_flop_per_s"] / 1e9, marker=STAGE_MARKERS[stage], s=45,
                   color=SOURCE_COLOURS[sources.index(source) % len(SOURCE_COLOURS)], alpha=0.85, edgecolor="white",
                   label=f"{source} {stage}")
        if source == PHASE:
            for row in group.itertuples():
                ax.annotate(f"b{row.batch_size}", (row.intensity, row.achieved_flop_per_s / 1e9), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved, analytic)")
    ax.set_ylabel("achieved GFLOP/s (median over runs)")
    ax.set_title(f"D2 roofline: ridge at {peak / bandwidth:.1f} FLOP/byte (dotted)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.2)
    return save(fig, figures, f"{PHASE}_roofline")


def d2_breakdown(breakdown: pd.DataFrame, figures: Path) -> str:
    """Stacked bars: share of each forward pass's wall time by operator category (plus host time), per stage and
    batch size, with the traced milliseconds per forward pass written at the end of each bar."""
    cpu = breakdown[breakdown["device"] == "cpu"]
    bars = [(stage, batch) for stage in ("prefill", "decode_step") for batch in sorted(set(cpu["batch_size"]))
            if len(cpu[(cpu["stage"] == stage) & (cpu["batch_size"] == batch)])]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(bars) + 2.4))
    for index, (stage, batch) in enumerate(bars):
        rows = cpu[(cpu["stage"] == stage) & (cpu["batch_size"] == batch)].set_index("category")
        left = 0.0
        for category, colour in CATEGORY_COLOURS.items():
            if category not in rows.index:
                continue
            width = rows.loc[category, "share_of_wall"] * 100
            ax.barh(index, width, left=left, color=colour, label=category if index == 0 else None,
                    edgecolor="white", linewidth=0.3)
            left += width
        per_forward_ms = rows["wall_s"].iloc[0] / rows["forwards"].iloc[0] * 1e3
        ax.annotate(f" {per_forward_ms:.1f} ms", (left, index), va="center", fontsize=8)
    ax.set_yticks(range(len(bars)), [f"{stage} b{batch}" for stage, batch in bars])
    ax.invert_yaxis()
    ax.set_xlim(0, 115)
    ax.set_xlabel("share of the forward pass's wall time in the traced run (%); traced ms per forward at the right")
    ax.set_title("Where the time goes: operator self time by category, and host time outside operators")
    ax.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(bars) < 4 else -0.2))
    return save(fig, figures, f"{PHASE}_breakdown")


def breakdown_columns(breakdown: pd.DataFrame) -> tuple[list[str], list[dict]]:
    """The breakdown as a table: one column per (stage, batch), one row per category: ms per forward and share."""
    cpu = breakdown[breakdown["device"] == "cpu"]
    columns = [(stage, batch) for stage in ("prefill", "decode_step") for batch in sorted(set(cpu["batch_size"]))
               if len(cpu[(cpu["stage"] == stage) & (cpu["batch_size"] == batch)])]
    rows = []
    for category in CATEGORY_COLOURS:
        cells = []
        for stage, batch in columns:
            match = cpu[(cpu["stage"] == stage) & (cpu["batch_size"] == batch) & (cpu["category"] == category)]
            cells.append({"per_forward_s": float(match["per_forward_s"].sum()),
                          "share": float(match["share_of_wall"].sum())})
        rows.append({"category": category, "cells": cells})
    headers = [f"{'decode step' if stage == 'decode_step' else stage} b{batch}" for stage, batch in columns]
    return headers, rows


def d2_linear_shapes(curve: pd.DataFrame, roof_bytes_per_s: float, figures: Path) -> str:
    """Two panels against rows M (log 2): ms per pass over every weight matrix (median, 95% CI bars) and the
    achieved GB/s (weight bytes read / median time) under D2's bandwidth roof, one line per dtype and kernel:
    colour = dtype, solid = prepacked (oneDNN, packed once), dashed = aten (F.linear), dotted = our small-batch C
    kernel. A table without a kernel column (an older run) is all aten."""
    curve = curve if "kernel" in curve else curve.assign(kernel="aten")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for (dtype, kernel), group in curve.groupby(["dtype", "kernel"], sort=False):
        group = group.sort_values("rows")
        style = {"color": DTYPE_COLOURS.get(dtype, "#7f7f7f"), "linestyle": KERNEL_LINES.get(kernel, ":"),
                 "marker": KERNEL_MARKERS.get(kernel, "s"), "label": f"{dtype} {KERNEL_LABELS.get(kernel, kernel)}"}
        errors = [group["pass_ms_p50"] - group["pass_ms_ci95_low"], group["pass_ms_ci95_high"] - group["pass_ms_p50"]]
        left.errorbar(group["rows"], group["pass_ms_p50"], yerr=errors, capsize=3, **style)
        right.plot(group["rows"], group["gb_per_s"], **style)
    right.axhline(roof_bytes_per_s / 1e9, color="black", linestyle="-.", linewidth=1,
                  label=f"roof {roof_bytes_per_s / 1e9:.1f} GB/s")
    rows = sorted(curve["rows"].unique())
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(rows, [str(r) for r in rows])
        ax.set_xlabel("rows M (a decode step at batch M)")
        ax.grid(True, which="both", alpha=0.2)
        ax.legend(fontsize=7)
    left.set_yscale("log")
    left.set_ylabel("ms per pass over all matrices (median, 95% CI)")
    right.set_ylabel("achieved GB/s (weight bytes read / time)")
    right.set_ylim(bottom=0)
    kernels = " and ".join(KERNEL_LABELS.get(k, k) for k in curve["kernel"].unique())
    fig.suptitle(f"Linear-layer shape curve: the model's {int(curve['matrices'].iloc[0])} weight matrices,\n{kernels}",
                 fontsize=11)
    return save(fig, figures, f"{PHASE}_linear_shapes")


def view(reports: Path, figures: Path) -> dict | None:
    """Everything the D2 section shows, or None when D2 has not been analysed in this reports/ directory."""
    data = reports / DATA
    files = read_data_files(data, ("findings.json", "roofline.csv", "breakdown.csv", "summary.csv",
                                   "measurements.csv", "meta.json", "ceilings.json"))
    if files is None:
        return None
    findings, meta = files["findings.json"], files["meta.json"]
    points, breakdown = files["roofline.csv"], files["breakdown.csv"]
    points = points.sort_values(["source", "stage", "batch_size", "prompt_tokens", "variant"],
                                ascending=[True, False, True, True, True])
    headers, rows = breakdown_columns(breakdown) if not breakdown.empty else ([], [])
    d2_points = points[points["source"] == PHASE]
    curve_path = data / "linear_shapes.csv"  # absent in runs analysed before the curve existed
    curve = pd.read_csv(curve_path) if curve_path.exists() and curve_path.stat().st_size > 1 else pd.DataFrame()
    traces = sorted(({"batch_size": int(batch), "path": (TRACES / name).as_posix()}
                     for batch, name in meta["notes"]["traces"].items()), key=lambda trace: trace["batch_size"])
    return {
        "findings": findings,
        "meta": meta,
        "ceilings": ceiling_rows(findings["ceilings"]),
        "points": points.to_dict(orient="records"),
        "d2_points": d2_points.to_dict(orient="records"),
        "breakdown_headers": headers,
        "breakdown_rows": rows,
        "figures": {
            "roofline": d2_roofline(points, findings, figures) if len(points) else None,
            "breakdown": d2_breakdown(breakdown, figures) if not breakdown.empty else None,
            "linear_shapes": d2_linear_shapes(curve, findings["bandwidth_bytes_per_s"], figures)
            if not curve.empty else None,
        },
        "traces": traces,
        "measurements": (DATA / "measurements.csv").as_posix(),
        "summary": (DATA / "summary.csv").as_posix(),
        "roofline_csv": (DATA / "roofline.csv").as_posix(),
        "breakdown_csv": (DATA / "breakdown.csv").as_posix(),
        "ceilings_json": (DATA / "ceilings.json").as_posix(),
        "linear_shapes_csv": (DATA / "linear_shapes.csv").as_posix(),
        "record": f"records/{PHASE}.txt",
    }
