"""The D5 section of the report: the variant table, per-token latency and achieved bandwidth against the roof per
variant, the reference-versus-best timeline comparison, vLLM's offline engine beside them, and the directions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...io import read_data_files
from ...report.charts import plt, save
from . import NAME as PHASE

DATA = Path("data") / PHASE
TRACES = Path("traces") / PHASE


def step_latency(table: pd.DataFrame, figures: Path) -> str:
    """Decode ms per step of every available variant at each batch size: median with its 95% CI."""
    rows = table[table["available"]]
    batches = sorted(rows["batch_size"].unique())
    variants = list(dict.fromkeys(rows["variant"]))
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(variants) * len(batches) + 1.2))
    height = 0.8 / len(batches)
    for index, batch in enumerate(batches):
        at = rows[rows["batch_size"] == batch].set_index("variant").reindex(variants)
        y = np.arange(len(variants)) + index * height
        error = [(at["step_p50_s"] - at["step_ci95_low_s"]) * 1e3, (at["step_ci95_high_s"] - at["step_p50_s"]) * 1e3]
        ax.barh(y, at["step_p50_s"] * 1e3, height=height, xerr=error, label=f"batch {batch}", capsize=2)
    ax.set_yticks(np.arange(len(variants)) + height * (len(batches) - 1) / 2, variants, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("decode step (ms), median with 95% CI")
    ax.set_title("Per-token latency by variant", fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, figures, f"{PHASE}_step_latency")


def bandwidth(table: pd.DataFrame, roof_bytes_per_s: float, batch: int, figures: Path) -> str | None:
    """Achieved bandwidth (weight bytes per step / step time, as gpt-fast counts it) of each variant at `batch`, against the roof."""
    rows = table[table["available"] & (table["batch_size"] == batch)].dropna(subset=["achieved_bandwidth_bytes_per_s"])
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.2))
    ax.barh(rows["variant"], rows["achieved_bandwidth_bytes_per_s"] / 1e9, color="#1f77b4")
    if np.isfinite(roof_bytes_per_s):
        ax.axvline(roof_bytes_per_s / 1e9, color="black", linestyle="--", label=f"roof {roof_bytes_per_s / 1e9:.1f} GB/s")
        ax.legend(fontsize=8)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel("achieved bandwidth (GB/s): bytes a decode step reads / its time")
    ax.set_title(f"Decode at batch {batch}: bytes moved per second against the measured roof", fontsize=10)
    return save(fig, figures, f"{PHASE}_bandwidth")


def moved_operators(comparison: dict, figures: Path) -> str | None:
    """The operators whose self time per decode step moved most between the reference and the best variant."""
    rows = pd.DataFrame(comparison["moved_operators"])
    if rows.empty:
        return None
    rows = rows.iloc[::-1]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.2))
    ax.barh(y - 0.2, rows["reference_s"] * 1e3, height=0.4, label=comparison["reference"], color="#999999")
    ax.barh(y + 0.2, rows["best_s"] * 1e3, height=0.4, label=comparison["best"], color="#1f77b4")
    ax.set_yticks(y, [op.split(":", 1)[-1][:60] for op in rows["op"]], fontsize=7)
    ax.set_xlabel("self time per decode step (ms, traced run, batch 1)")
    ax.set_title("Timelines side by side: the operators that moved most", fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, figures, f"{PHASE}_moved_operators")


def view(reports: Path, figures: Path) -> dict | None:
    """Everything the D5 section shows, or None when D5 has not been analysed in this run directory."""
    files = read_data_files(reports / DATA, ("findings.json", "variants.csv", "meta.json"))
    if files is None:
        return None
    findings, table = files["findings.json"], files["variants.csv"]
    small = min(findings["batch_sizes"])
    return {
        "findings": findings,
        "meta": files["meta.json"],
        "table": table.to_dict(orient="records"),
        "available": table[table["available"]].to_dict(orient="records"),
        "unavailable": findings["unavailable"],
        "figures": {
            "latency": step_latency(table, figures) if table["available"].any() else None,
            "bandwidth": bandwidth(table, findings["roof_bytes_per_s"], small, figures),
            "moved": moved_operators(findings["timeline_comparison"], figures),
        },
        "traces": [{"variant": variant, "path": (TRACES / name).as_posix()}
                   for variant, name in files["meta.json"]["notes"]["traces"].items()],
        "measurements": (DATA / "measurements.csv").as_posix(),
        "variants_csv": (DATA / "variants.csv").as_posix(),
        "step_split_csv": (DATA / "step_split.csv").as_posix() if (reports / DATA / "step_split.csv").exists() else None,
        "record": f"records/{PHASE}.txt",
    }
