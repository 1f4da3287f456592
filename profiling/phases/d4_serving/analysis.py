"""D4 analysis: the run table (policies, rates, the reference), goodput, the tenant table, the service's cost per
token against the engine alone, and the flow's stage times from our server's spans.

Reads measurements.csv, requests.csv, spans.jsonl and meta.json (never a server or the model); writes summary.csv,
runs.csv (one row per run), tenants.csv, flow.csv (median seconds of each stage of the flow, per run), steps.csv
(our server's worker steps: batch size and queue depth over time), stages.csv (every request's stage times) and
findings.json.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ...io import read_json, staged, write_json
from ...metrics import headline, per_repeat
from ...serving.engine.spans import load_spans, stage_durations, step_table
from ...stats import bootstrap_ratio_ci, summary_table
from . import NAME as PHASE
from .variants import our_runs, rate_name

# The flow, in order: (stage column of spans.stage_durations, what it covers).
FLOW = [("http_s", "HTTP: parse, chat template, tokenize"), ("queue_wait_s", "queue: waiting for the scheduler"),
        ("schedule_s", "scheduler: admitted -> prefill starts"), ("prefill_s", "worker: prefill (first token)"),
        ("decode_s", "worker: decode steps (rest of the tokens)"),
        ("handoff_s", "worker -> front end: token on host -> chunk sent (median per token)"),
        ("detokenize_s", "detokenize (all chunks of a request)"), ("stream_s", "stream: last token -> response done")]


def _p(values: pd.Series, q: float) -> float:
    values = values.dropna()
    return float(np.percentile(values, q)) if len(values) else float("nan")


def run_table(measurements: pd.DataFrame) -> pd.DataFrame:
    """One row per load run: server, policy, rate, completed requests, output tok/s, req/s, goodput, and TTFT /
    TPOT / ITL / E2E percentiles (seconds) over its requests."""
    served = measurements[measurements["server"].isin(["ours", "vllm"])]
    rows = []
    for variant, run in served.groupby("variant", sort=False):
        def metric(name):
            return run.loc[run["metric"] == name, "value"]

        per_run = run[run["request_id"] == -1].set_index("metric")["value"]
        rows.append({
            "variant": variant, "server": run["server"].iloc[0], "policy": run["policy"].iloc[0],
            "request_rate": float(run["request_rate"].iloc[0]), "completed": int(metric("e2e_s").size),
            "output_tok_per_s": float(per_run.get("output_tok_per_s", math.nan)),
            "request_per_s": float(per_run.get("request_per_s", math.nan)),
            "goodput_req_per_s": float(per_run.get("goodput_req_per_s", math.nan)),
            "ttft_p50_s": _p(metric("ttft_s"), 50), "ttft_p99_s": _p(metric("ttft_s"), 99),
            "tpot_p50_s": _p(metric("tpot_s"), 50), "tpot_p99_s": _p(metric("tpot_s"), 99),
            "itl_p50_s": _p(metric("itl_s"), 50), "itl_p99_s": _p(metric("itl_s"), 99),
            "e2e_p50_s": _p(metric("e2e_s"), 50), "e2e_p99_s": _p(metric("e2e_s"), 99),
        })
    return pd.DataFrame(rows)


def tenant_table(measurements: pd.DataFrame) -> pd.DataFrame:
    """Per tenant run (fifo, fair) and tenant: requests, TTFT p50/p95 and E2E p50 (seconds)."""
    runs = measurements[measurements["variant"].astype(str).str.startswith("tenants_")
                        & (measurements["request_id"] != -1)]
    rows = []
    for (variant, tenant), group in runs.groupby(["variant", "tenant"], sort=True):
        ttft = group.loc[group["metric"] == "ttft_s", "value"]
        rows.append({"variant": variant, "tenant_policy": variant.removeprefix("tenants_"), "tenant": tenant,
                     "requests": int(ttft.size), "ttft_p50_s": _p(ttft, 50), "ttft_p95_s": _p(ttft, 95),
                     "e2e_p50_s": _p(group.loc[group["metric"] == "e2e_s", "value"], 50)})
    return pd.DataFrame(rows, columns=["variant", "tenant_policy", "tenant", "requests", "ttft_p50_s", "ttft_p95_s",
                                       "e2e_p50_s"])


def request_stages(spans: list[dict]) -> pd.DataFrame:
    """Per request of every run of our server: its stage times along the flow (spans.stage_durations)."""
    frames = [stage_durations([e for e in spans if e["variant"] == variant]).assign(variant=variant)
              for variant in dict.fromkeys(event["variant"] for event in spans)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def flow_table(stages: pd.DataFrame) -> pd.DataFrame:
    """Per run of our server and flow stage: the median seconds over its completed requests, and n."""
    rows = []
    for variant, run in stages.groupby("variant", sort=False):
        done = run[run["status"] == "done"]
        for order, (stage, label) in enumerate(FLOW):
            rows.append({"variant": variant, "order": order, "stage": stage, "label": label,
                         "median_s": float(done[stage].median()), "n": int(done[stage].notna().sum())})
    return pd.DataFrame(rows)


def steps_table(spans: list[dict]) -> pd.DataFrame:
    """Our server's worker steps of every run (variant column added)."""
    frames = [step_table([e for e in spans if e["variant"] == variant]).assign(variant=variant)
              for variant in dict.fromkeys(event["variant"] for event in spans)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _row(table: pd.DataFrame, variant: str) -> dict | None:
    rows = table[table["variant"] == variant]
    return rows.iloc[0].to_dict() if len(rows) else None


def _ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    """a[key] / b[key], or None when either run is missing (not measured in this run); inf when only b is 0
    (e.g. static batching met no SLO at all)."""
    if a is None or b is None or not math.isfinite(b[key]):
        return None
    if b[key] == 0:
        return math.inf if a[key] > 0 else None
    return float(a[key]) / float(b[key])


def continuous_rates(runs: pd.DataFrame) -> list[str]:
    """The rate names of our continuous-policy runs (tenant runs aside), lowest first."""
    rows = runs[(runs["server"] == "ours") & (runs["policy"] == "continuous")
                & ~runs["variant"].str.startswith("tenants_")]
    return [rate_name(rate) for rate in sorted(rows["request_rate"])]


def targets(runs: pd.DataFrame, measurements: pd.DataFrame, cfg: dict) -> dict:
    """The measured target ratios (None where a side was not measured): continuous vs static goodput at the
    policy rate; saturated output throughput ours vs the reference (at the highest rate); TTFT p50 at the lowest
    rate ours vs the reference; TPOT p50 at the lowest rate vs the engine's offline decode step at batch 1 (with
    its bootstrap 95% CI)."""
    policy_rate = rate_name(float(cfg["policy_rate_req_per_s"]))
    rates = continuous_rates(runs)
    low, high = (rates[0], rates[-1]) if rates else (None, None)
    ours_low, ref_low = _row(runs, f"continuous_r{low}"), _row(runs, f"vllm_r{low}")
    ours_high, ref_high = _row(runs, f"continuous_r{high}"), _row(runs, f"vllm_r{high}")
    offline = measurements[(measurements["variant"] == "offline_b1") & (measurements["metric"] == "decode_step_s")]
    served_tpot = measurements[(measurements["variant"] == f"continuous_r{low}") & (measurements["metric"] == "tpot_s")]
    tpot_ratio = bootstrap_ratio_ci(served_tpot["value"].tolist(), offline["value"].tolist())
    return {
        "policy_rate": policy_rate, "low_rate": low, "high_rate": high,
        "goodput_continuous_over_static": _ratio(_row(runs, f"continuous_r{policy_rate}"),
                                                 _row(runs, f"static_r{policy_rate}"), "goodput_req_per_s"),
        "saturated_tok_per_s_over_reference": _ratio(ours_high, ref_high, "output_tok_per_s"),
        "ttft_p50_over_reference": _ratio(ours_low, ref_low, "ttft_p50_s"),
        "offline_decode_step_p50_s": float(offline["value"].median()) if len(offline) else math.nan,
        "tpot_over_offline_step": tpot_ratio[0], "tpot_over_offline_step_ci95": [tpot_ratio[1], tpot_ratio[2]],
        "reference_measured": ref_low is not None or ref_high is not None,
    }


def findings(measurements: pd.DataFrame, runs: pd.DataFrame, tenants: pd.DataFrame, flow: pd.DataFrame,
             meta: dict, cfg: dict) -> dict:
    """The key numbers the report's text, the at-a-glance block and the progress wall are worded from."""
    rates = continuous_rates(runs)
    main = f"continuous_r{rates[0]}" if rates else our_runs(cfg)[0].variant
    main_flow = flow[flow["variant"] == main].sort_values("order")
    quiet = tenants.groupby("tenant_policy") if len(tenants) else None
    fairness = {}
    if quiet is not None:
        for policy, group in quiet:
            by_tenant = group.set_index("tenant")["ttft_p50_s"]
            fairness[policy] = {"ttft_p50_s": by_tenant.to_dict()}
    served = measurements[measurements["server"] == "ours"]
    return {
        "runs": runs.to_dict(orient="records"),
        "targets": targets(runs, measurements, cfg),
        "flow_variant": main,
        "flow": main_flow[["stage", "label", "median_s", "n"]].to_dict(orient="records"),
        "flow_total_s": float(main_flow["median_s"].sum()) if len(main_flow) else math.nan,
        "tenants": fairness,
        "reference": meta["notes"].get("reference", {}),
        "failed_requests": {variant: run["failed"] for variant, run in meta["notes"]["runs"].items()},
        "requests": cfg["requests"], "prompt_tokens": cfg["prompt_tokens"], "output_tokens": cfg["output_tokens"],
        "slo_ttft_s": cfg["slo_ttft_s"], "slo_tpot_s": cfg["slo_tpot_s"],
        "headlines": [headline(f"TTFT, {main} (per request)", served.loc[(served["variant"] == main)
                                                                         & (served["metric"] == "ttft_s"), "value"],
                               "s", "lower"),
                      headline(f"TPOT, {main} (per request)", served.loc[(served["variant"] == main)
                                                                         & (served["metric"] == "tpot_s"), "value"],
                               "s", "lower"),
                      headline("engine decode step offline, batch 1",
                               per_repeat(measurements[measurements["variant"] == "offline_b1"], "decode_step_s"),
                               "s", "lower")],
    }


def analyze(settings: dict, measurements_path, meta_path, spans_path, summary_path, runs_path, tenants_path,
            flow_path, steps_path, stages_path, findings_path) -> None:
    cfg = settings[PHASE]
    measurements = pd.read_csv(measurements_path)
    meta = read_json(meta_path)
    spans = load_spans(spans_path)
    summary = summary_table(measurements, ["variant", "metric"], settings["cv_warn"])
    stages = request_stages(spans)
    runs, tenants, flow, steps = (run_table(measurements), tenant_table(measurements), flow_table(stages),
                                  steps_table(spans))
    with staged(summary_path, runs_path, tenants_path, flow_path, steps_path, stages_path, findings_path) as temps:
        summary_tmp, runs_tmp, tenants_tmp, flow_tmp, steps_tmp, stages_tmp, findings_tmp = temps
        stages.to_csv(stages_tmp, index=False)
        summary.to_csv(summary_tmp, index=False)
        runs.to_csv(runs_tmp, index=False)
        tenants.to_csv(tenants_tmp, index=False)
        flow.to_csv(flow_tmp, index=False)
        steps.to_csv(steps_tmp, index=False)
        write_json(findings_tmp, findings(measurements, runs, tenants, flow, meta, cfg))


# ---- command line (python -m profiling d4_serving_analysis) --------------------------------------------------------
def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    for name in ("measurements", "meta", "spans", "summary", "runs", "tenants", "flow", "steps", "stages",
                 "findings"):
        parser.add_argument(f"--{name}", required=True)


def cli(args) -> None:
    analyze(args.settings, args.measurements, args.meta, args.spans, args.summary, args.runs, args.tenants,
            args.flow, args.steps, args.stages, args.findings)
