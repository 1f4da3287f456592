"""The D4 section of the report: the flow diagram from measured spans, the capacity sweep (latency, attainment and
throughput by rate, ours and vLLM's), the streams' inter-token gaps while long prompts arrive, queue depth and
running batch over time, a per-request swimlane; its tables come from the analysis as they are."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.patches import FancyBboxPatch

from ...io import read_data_files
from ...report.charts import STAGE_COLOURS, plt, save
from ...report.format import duration
from . import NAME as PHASE

DATA = Path("data") / PHASE
TRACES = Path("traces") / PHASE
POLICY_COLOURS = {"static": "#d62728", "dynamic": "#ff7f0e", "continuous": "#1f77b4", "vllm": "#2ca02c"}
# The boxes of the flow diagram, in order, and the stage (flow.csv) on the arrow that leaves each box: the time a
# request spends in that box. The client's own arrow is the loopback send (not measured on the server).
FLOW_BOXES = [("client", None), ("HTTP front end\n(FastAPI, tokenize)", "http_s"), ("queue", "queue_wait_s"),
              ("scheduler", "schedule_s"), ("worker:\nprefill", "prefill_s"), ("worker:\ndecode steps", "decode_s"),
              ("detokenize\n(per chunk)", "detokenize_s"), ("stream (SSE)", "stream_s"), ("client", None)]
EDGE_LABELS = {"http_s": "parse + tokenize", "queue_wait_s": "queue wait", "schedule_s": "admitted → prefill",
               "prefill_s": "prefill", "decode_s": "decode", "detokenize_s": "detokenize (all)",
               "stream_s": "last token → done"}


def flow_diagram(flow: pd.DataFrame, variant: str, figures: Path) -> str:
    """The service's flow as boxes and arrows, each arrow labelled with the measured median time of its stage."""
    medians = flow[flow["variant"] == variant].set_index("stage")["median_s"]
    fig, ax = plt.subplots(figsize=(13, 2.8))
    width, gap = 1.15, 0.38
    for index, (label, stage) in enumerate(FLOW_BOXES):
        x = index * (width + gap)
        ax.add_patch(FancyBboxPatch((x, 0), width, 1, boxstyle="round,pad=0.02", facecolor="#eef4fb",
                                    edgecolor="#4a90d9"))
        ax.text(x + width / 2, 0.5, label, ha="center", va="center", fontsize=8)
        if index == len(FLOW_BOXES) - 1:
            continue
        ax.annotate("", xy=(x + width + gap, 0.5), xytext=(x + width, 0.5),
                    arrowprops={"arrowstyle": "->", "color": "#333333"})
        label = "request" if stage is None else f"{EDGE_LABELS[stage]}\n{duration(medians.get(stage, math.nan))}"
        ax.text(x + width + gap / 2, 1.12, label, ha="center", va="bottom", fontsize=7)
    handoff = duration(medians.get("handoff_s", math.nan))
    ax.text(0, -0.15, f"token on the host → its chunk sent: {handoff} per token (median)", fontsize=7, va="top")
    ax.set_xlim(-0.1, len(FLOW_BOXES) * (width + gap))
    ax.set_ylim(-0.4, 1.8)
    ax.axis("off")
    ax.set_title(f"Request flow through our service, median per request ({variant})", fontsize=10)
    return save(fig, figures, f"{PHASE}_flow")


def rate_axis(rates: pd.Series) -> tuple[pd.Series, list, list]:
    """x positions for request rates: finite rates as they are, inf ("all at once") one step right of the rest."""
    finite = sorted(rate for rate in rates.unique() if math.isfinite(rate))
    inf_x = (finite[-1] * 2 if finite else 1.0)
    xs = rates.map(lambda rate: inf_x if math.isinf(rate) else rate)
    ticks = finite + ([inf_x] if any(math.isinf(rate) for rate in rates) else [])
    labels = [f"{rate:.3g}" for rate in finite] + (["all at once"] if len(ticks) > len(finite) else [])
    return xs, ticks, labels


def capacity_by_rate(capacity: pd.DataFrame, slo: dict, figures: Path) -> str:
    """TTFT and TPOT p50 (p99 dashed) with the SLO lines, SLO attainment and output tok/s of each server at each
    rate of the sweep."""
    rows = capacity.copy()
    rows["x"], ticks, labels = rate_axis(rows["request_rate"])
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    for server, group in rows.groupby("server"):
        group = group.sort_values("x")
        colour = POLICY_COLOURS["vllm" if server == "vllm" else "continuous"]
        for ax, metric in zip(axes[:2], ("ttft", "tpot")):
            ax.plot(group["x"], group[f"{metric}_p50_s"] * 1e3, marker="o", color=colour, label=f"{server} p50")
            ax.plot(group["x"], group[f"{metric}_p99_s"] * 1e3, marker="o", color=colour, linestyle="--",
                    markerfacecolor="none", label=f"{server} p99")
        axes[2].plot(group["x"], group["attainment"] * 100, marker="s", color=colour, label=server)
        axes[3].plot(group["x"], group["output_tok_per_s"], marker="s", color=colour, label=server)
    axes[0].axhline(slo["ttft_s"] * 1e3, color="#999999", linewidth=0.8, label="SLO")
    axes[1].axhline(slo["tpot_s"] * 1e3, color="#999999", linewidth=0.8, label="SLO")
    axes[2].axhline(slo["attainment"] * 100, color="#999999", linewidth=0.8, label="within capacity")
    titles = ("TTFT (ms)", "TPOT (ms)", "requests meeting both SLOs (%)", "output tok/s")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_xticks(ticks, labels, fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("request rate (req/s)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=6, ncol=2)
    axes[2].legend(fontsize=7)
    return save(fig, figures, f"{PHASE}_capacity")


def stream_gaps(timeline: pd.DataFrame, variants: list[str], figures: Path) -> str | None:
    """The streams' inter-token gaps over time while long prompts arrive (one panel per run), with each long
    prompt's arrival (dotted) and first token (solid)."""
    shown = [variant for variant in variants if (timeline["variant"] == variant).any()]
    if not shown:
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.2), sharey=True, squeeze=False)
    for ax, variant in zip(axes[0], shown):
        rows = timeline[timeline["variant"] == variant]
        for request, tokens in rows[rows["kind"] == "token"].groupby("request_id"):
            ax.plot(tokens["t_s"], tokens["gap_s"] * 1e3, marker=".", linewidth=0.8, label=f"stream {request}")
        for kind, style in (("arrival", ":"), ("first_token", "-")):
            for t in rows.loc[rows["kind"] == kind, "t_s"]:
                ax.axvline(t, color="#d62728", linestyle=style, linewidth=0.8)
        ax.set_title(variant, fontsize=10)
        ax.set_xlabel("seconds since the run started")
    axes[0][0].set_ylabel("gap before each token (ms)")
    axes[0][0].legend(fontsize=7)
    return save(fig, figures, f"{PHASE}_stream_gaps")


def queue_over_time(steps: pd.DataFrame, variant: str, figures: Path) -> str | None:
    """Waiting requests (queue depth) and the running batch at every worker step of one run."""
    rows = steps[steps["variant"] == variant].sort_values("start_s")
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(9, 3))
    ax.step(rows["start_s"], rows["waiting"], where="post", color="#d62728", label="waiting (queue depth)")
    ax.step(rows["start_s"], rows["running"], where="post", color="#1f77b4", label="running batch")
    ax.set_xlabel("seconds since the server's first event")
    ax.set_ylabel("requests")
    ax.set_title(f"Queue depth and running batch, {variant}", fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, figures, f"{PHASE}_queue")


def swimlane(stages: pd.DataFrame, variant: str, figures: Path) -> str | None:
    """One lane per request of a run: queued (waiting), prefill and decode, on the server's clock."""
    rows = stages[(stages["variant"] == variant) & (stages["status"] == "done")].sort_values("arrived_s")
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(rows) + 1.2))
    for lane, row in enumerate(rows.itertuples()):
        start = row.arrived_s + row.http_s
        for name, seconds, colour in (("queued", row.queue_wait_s + row.schedule_s, "#cccccc"),
                                      ("prefill", row.prefill_s, STAGE_COLOURS["prefill"]),
                                      ("decode", row.decode_s, STAGE_COLOURS["decode_step"])):
            ax.barh(lane, seconds, left=start, color=colour, label=name if lane == 0 else None)
            start += seconds
    ax.set_yticks(range(len(rows)), [str(r) for r in rows["client_request_id"]], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the server's first event")
    ax.set_title(f"Per-request swimlane, {variant}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, figures, f"{PHASE}_swimlane")


def view(reports: Path, figures: Path) -> dict | None:
    """Everything the D4 section shows, or None when D4 has not been analysed in this run directory."""
    files = read_data_files(reports / DATA, ("findings.json", "runs.csv", "tenants.csv", "flow.csv", "steps.csv",
                                             "stages.csv", "capacity.csv", "stream_timeline.csv", "meta.json"))
    if files is None:
        return None
    findings, runs = files["findings.json"], files["runs.csv"]
    main = findings["flow_variant"]
    ours = runs[runs["server"] == "ours"]
    sweep = ours[ours["variant"].str.startswith("continuous_") & (ours["workload"] == "random")]
    busiest = sweep.sort_values("request_rate")["variant"].tolist()
    budgets = [f"long_{row['budget'] or 'off'}" if row["server"] == "ours" else row["variant"]
               for row in findings["long_prompts"]]
    slo = {"ttft_s": findings["slo_ttft_s"], "tpot_s": findings["slo_tpot_s"],
           "attainment": findings["slo_attainment"]}
    capacity = files["capacity.csv"]
    return {
        "findings": findings,
        "meta": files["meta.json"],
        "runs": runs.to_dict(orient="records"),
        "tenants": files["tenants.csv"].to_dict(orient="records"),
        "figures": {
            "flow": flow_diagram(files["flow.csv"], main, figures),
            "capacity": capacity_by_rate(capacity, slo, figures) if len(capacity) else None,
            "stream_gaps": stream_gaps(files["stream_timeline.csv"], budgets, figures),
            "queue": queue_over_time(files["steps.csv"], busiest[-1] if busiest else main, figures),
            "swimlane": swimlane(files["stages.csv"], main, figures),
        },
        "traces": [{"variant": variant, "path": (TRACES / f"{variant}.json.gz").as_posix()}
                   for variant in ours["variant"]],
        "measurements": (DATA / "measurements.csv").as_posix(),
        "requests": (DATA / "requests.csv").as_posix(),
        "bench": (DATA / "bench_results.json").as_posix(),
        "runs_csv": (DATA / "runs.csv").as_posix(),
        "record": f"records/{PHASE}.txt",
    }
