"""D1 analysis: stage statistics, per-step latency, the operator breakdown, and the findings the report states.

Reads measurements.csv and the traced run's Chrome trace; writes summary.csv, operators.csv, findings.json.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...io import staged, write_json
from ...metrics import energy_per_token, meta_notes, headline, per_repeat, profiler_overhead_ratio
from ...stats import precision, summary_table
from ...trace_ops import operator_table, stage_spans

REQUEST_STAGES = ["tokenize", "prefill", "decode", "detokenize"]
LOAD_STAGES = ["load_model", "load_tokenizer"]


def per_request_stages(untraced: pd.DataFrame) -> pd.DataFrame:
    """One row per timed request: seconds in each request stage, `decode` (all steps), `other`, `e2e`."""
    wide = untraced[untraced["metric"] != "decode_step_s"].pivot_table(
        index="repeat", columns="metric", values="value", aggfunc="sum")
    decode = untraced[untraced["metric"] == "decode_step_s"].groupby("repeat")["value"].sum()
    stages = pd.DataFrame({
        "tokenize": wide["tokenize_s"], "prefill": wide["prefill_s"], "decode": decode,
        "detokenize": wide["detokenize_s"], "e2e": wide["e2e_s"],
    })
    stages["other"] = stages["e2e"] - stages[REQUEST_STAGES].sum(axis=1)
    return stages


def stage_table(measurements: pd.DataFrame) -> pd.DataFrame:
    """The D1 stage table: stage, p50_s, p95_s, share_of_e2e (median of per-request shares), n."""
    untraced = measurements[measurements["variant"] == "untraced"]
    rows = []
    for stage in LOAD_STAGES:
        values = untraced.loc[untraced["metric"] == f"{stage}_s", "value"]
        rows.append({"stage": stage, "p50_s": values.median(), "p95_s": np.percentile(values, 95),
                     "share_of_e2e": float("nan"), "n": len(values)})
    per_request = per_request_stages(untraced)
    for stage in REQUEST_STAGES + ["other", "e2e"]:
        values = per_request[stage]
        rows.append({"stage": stage, "p50_s": values.median(), "p95_s": np.percentile(values, 95),
                     "share_of_e2e": (values / per_request["e2e"]).median(), "n": len(values)})
    return pd.DataFrame(rows)


def host_overhead(operators: pd.DataFrame, spans: pd.DataFrame) -> pd.DataFrame:
    """Per stage group in the trace: span wall seconds, seconds inside CPU operators, and the share outside them
    (Python, dispatch, framework code between operators)."""
    spans = spans.assign(stage=spans["name"].str.replace(r"\[\d+\]$", "", regex=True))
    wall = spans.groupby("stage")["seconds"].sum()
    in_ops = operators[operators["device"] == "cpu"].groupby("stage")["self_s"].sum()
    table = pd.DataFrame({"wall_s": wall, "in_operators_s": in_ops.reindex(wall.index).fillna(0.0)})
    table["outside_operators_share"] = 1.0 - table["in_operators_s"] / table["wall_s"]
    return table.reset_index()


def findings(measurements: pd.DataFrame, operators: pd.DataFrame, spans: pd.DataFrame, cv_warn: float,
             policy: dict | None = None, energy_meter: dict | None = None) -> dict:
    """The key numbers the report's conclusion is generated from (all seconds unless named otherwise). A figure's
    precision is n (timed requests), the half-width of its median's 95% CI over the median, and whether the
    repeats stopped at their cap with the CI still wider than asked (`policy`: meta.json's repeat_policy)."""
    stages = stage_table(measurements)
    untraced = measurements[measurements["variant"] == "untraced"]

    def median(frame, metric):
        return float(frame.loc[frame["metric"] == metric, "value"].median())

    request_stages = stages[stages["stage"].isin(REQUEST_STAGES)]
    dominant = request_stages.sort_values("share_of_e2e", ascending=False).iloc[0]
    step_per_repeat = per_repeat(untraced, "decode_step_s")  # each request's median step: the one D1 step
    step_p50 = float(np.median(step_per_repeat))
    prefill_p50 = median(untraced, "prefill_s")
    top_ops = {}
    for stage in ("prefill", "decode_step"):
        cpu = operators[(operators["stage"] == stage)]
        if len(cpu):
            top = cpu.sort_values("self_s", ascending=False).iloc[0]
            top_ops[stage] = {"op": top["op"], "device": top["device"], "share_of_stage": float(top["share_of_stage"])}
    overhead = host_overhead(operators, spans).set_index("stage")
    noisy = summary_table(untraced, ["metric"], cv_warn)
    return {
        "stages": stages.to_dict(orient="records"),
        "dominant_stage": dominant["stage"],
        "dominant_share": float(dominant["share_of_e2e"]),
        "prefill_p50_s": prefill_p50,
        "decode_step_p50_s": step_p50,  # median over requests of each request's median step (= the headline)
        "decode_step_precision": precision(step_per_repeat, policy),
        "energy": energy_per_token(untraced, energy_meter or {}),
        "e2e_precision": precision(per_repeat(untraced, "e2e_s"), policy),
        "prefill_over_step": prefill_p50 / step_p50,
        "ttft_p50_s": median(untraced, "ttft_s"),
        "tpot_p50_s": median(untraced, "tpot_s"),
        "e2e_p50_s": median(untraced, "e2e_s"),
        "output_tok_per_s_p50": median(untraced, "output_tok_per_s"),
        "output_tokens": int(median(untraced, "output_tokens")),
        "prompt_tokens": int(untraced["prompt_tokens"].dropna().iloc[0]),
        "repeats": int(untraced.loc[untraced["metric"] == "e2e_s", "repeat"].nunique()),  # timed requests
        "profiler_overhead_ratio": profiler_overhead_ratio(measurements, "traced", "untraced"),
        "top_ops": top_ops,
        "decode_outside_operators_share": float(overhead.loc["decode_step", "outside_operators_share"])
        if "decode_step" in overhead.index else float("nan"),
        "noisy_metrics": sorted(noisy.loc[noisy["noisy"], "metric"].tolist()),
        "headlines": [headline("decode step (batch 1)", per_repeat(untraced, "decode_step_s"), "s", "lower"),
                      headline("TTFT", per_repeat(untraced, "ttft_s"), "s", "lower"),
                      headline("output tok/s", per_repeat(untraced, "output_tok_per_s"), "tok/s", "higher")],
        "cv_warn": cv_warn,
    }


def analyze(settings: dict, measurements_path, trace_path, summary_path, operators_path, findings_path) -> None:
    measurements = pd.read_csv(measurements_path)
    cv_warn = settings["cv_warn"]
    summary = summary_table(measurements, ["experiment", "variant", "metric", "step"], cv_warn)
    operators = operator_table(trace_path)
    spans = stage_spans(trace_path)
    with staged(summary_path, operators_path, findings_path) as (summary_tmp, operators_tmp, findings_tmp):
        summary.to_csv(summary_tmp, index=False)
        operators.to_csv(operators_tmp, index=False)
        notes = meta_notes(measurements_path)
        write_json(findings_tmp, findings(measurements, operators, spans, cv_warn, notes.get("repeat_policy"),
                                          notes.get("energy", {})))


# ---- command line (python -m profiling d1_request_analysis) -------------------------------------------------------
def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    for name in ("measurements", "trace", "summary", "operators", "findings"):
        parser.add_argument(f"--{name}", required=True)


def cli(args) -> None:
    analyze(args.settings, args.measurements, args.trace, args.summary, args.operators, args.findings)
