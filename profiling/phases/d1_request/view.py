"""The D1 section of the report: request anatomy (stage table, waterfall, per-token latency, operators)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...io import read_data_files
from ...report.charts import STAGE_COLOURS, plt, save

from . import NAME as PHASE


def d1_waterfall(untraced: pd.DataFrame, figures: Path) -> str:
    """One median request laid out in time: tokenize, prefill, each decode step, detokenize (seconds)."""
    medians = []
    for stage in ("tokenize", "prefill"):
        medians.append((stage, stage, untraced.loc[untraced["metric"] == f"{stage}_s", "value"].median()))
    steps = untraced[untraced["metric"] == "decode_step_s"].groupby("step")["value"].median()
    medians += [("decode_step", f"decode_step[{int(step)}]", seconds) for step, seconds in steps.items()]
    medians.append(("detokenize", "detokenize",
                    untraced.loc[untraced["metric"] == "detokenize_s", "value"].median()))
    lanes = ["tokenize", "prefill", "decode_step", "detokenize"]
    fig, ax = plt.subplots(figsize=(9, 2.8))
    start = 0.0
    for index, (lane, label, seconds) in enumerate(medians):
        colour = STAGE_COLOURS[lane]
        alpha = 0.6 + 0.4 * (index % 2) if lane == "decode_step" else 1.0
        ax.barh(lanes.index(lane), seconds * 1e3, left=start * 1e3, color=colour, alpha=alpha,
                edgecolor="white", linewidth=0.3)
        if lane != "decode_step":  # label the short stages, which are too thin to see
            ax.annotate(f" {seconds * 1e3:.2f} ms", (start * 1e3 + seconds * 1e3, lanes.index(lane)),
                        va="center", fontsize=8)
        start += seconds
    ax.set_yticks(range(len(lanes)), lanes)
    ax.invert_yaxis()
    ax.set_xlabel("time since request start (ms), median of each stage")
    ax.set_title(f"D1 request waterfall: {len(steps)} decode steps, e2e ≈ {start * 1e3:.0f} ms")
    return save(fig, figures, f"{PHASE}_waterfall")


def d1_token_latency(untraced: pd.DataFrame, figures: Path) -> str:
    """Latency of the prefill (step 0) and of each decode step: median with min–max band over repeats (ms)."""
    steps = untraced[untraced["metric"] == "decode_step_s"].groupby("step")["value"]
    prefill = untraced.loc[untraced["metric"] == "prefill_s", "value"]
    fig, ax = plt.subplots(figsize=(9, 3.4))
    ax.fill_between(steps.median().index, steps.min() * 1e3, steps.max() * 1e3, alpha=0.25, color="#1f77b4",
                    label="decode step min–max")
    ax.plot(steps.median().index, steps.median() * 1e3, marker=".", color="#1f77b4", label="decode step median")
    ax.errorbar([0], [prefill.median() * 1e3], yerr=[[(prefill.median() - prefill.min()) * 1e3],
                                                      [(prefill.max() - prefill.median()) * 1e3]],
                fmt="s", color="#d62728", label="prefill (step 0)")
    ax.set_xlabel("step (0 = prefill, i = decode_step[i])")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Per-token latency by step ({prefill.size} repeats)")
    ax.legend(loc="upper right", fontsize=8)
    return save(fig, figures, f"{PHASE}_token_latency")


def d1_operators(operators: pd.DataFrame, figures: Path, top: int) -> str:
    """Top operators by self time in prefill and in all decode steps of the traced run (ms)."""
    stages = [stage for stage in ("prefill", "decode_step") if stage in set(operators["stage"])]
    fig, axes = plt.subplots(len(stages), 1, figsize=(9, len(stages) * (0.3 * top + 1.0)), squeeze=False)
    for ax, stage in zip(axes[:, 0], stages):
        rows = operators[operators["stage"] == stage].nlargest(top, "self_s").iloc[::-1]
        ax.barh(rows["op"], rows["self_s"] * 1e3, color=STAGE_COLOURS[stage])
        ax.set_title(f"{stage}: top {len(rows)} operators by self time")
        ax.set_xlabel("self time in the traced run (ms)")
        ax.tick_params(axis="y", labelsize=7)
    return save(fig, figures, f"{PHASE}_operators")


def view(reports: Path, figures: Path) -> dict | None:
    """Everything the D1 section shows, or None when D1 has not been analysed in this reports/ directory."""
    files = read_data_files(reports / "data" / PHASE, ("findings.json", "summary.csv", "operators.csv",
                                                             "measurements.csv", "meta.json"))
    if files is None:
        return None
    findings, meta, summary = files["findings.json"], files["meta.json"], files["summary.csv"]
    operators, measurements = files["operators.csv"], files["measurements.csv"]
    untraced = measurements[measurements["variant"] == "untraced"]
    top = meta["config"][PHASE]["top_ops"]
    key_metrics = summary[(summary["variant"] == "untraced") & summary["step"].isna()
                          & summary["metric"].isin(["ttft_s", "tpot_s", "e2e_s", "output_tok_per_s"])]
    step_medians = untraced[untraced["metric"] == "decode_step_s"].groupby("step")["value"].median()
    return {
        "findings": findings,
        "meta": meta,
        "stages": findings["stages"],
        "key_metrics": key_metrics.to_dict(orient="records"),
        "step_medians_ms": [round(v * 1e3, 1) for v in step_medians],
        "operators": {stage: operators[operators["stage"] == stage].nlargest(top, "self_s").to_dict("records")
                      for stage in ("prefill", "decode_step")},
        "figures": {
            "waterfall": d1_waterfall(untraced, figures),
            "token_latency": d1_token_latency(untraced, figures),
            "operators": d1_operators(operators, figures, top),
        },
        "trace": f"traces/{PHASE}/request.json.gz",
        "measurements": f"data/{PHASE}/measurements.csv",
        "summary": f"data/{PHASE}/summary.csv",
        "operators_csv": f"data/{PHASE}/operators.csv",
        "record": f"records/{PHASE}.txt",
    }
