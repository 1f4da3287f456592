"""D4 analysis: what each serving idea buys, and how much load each server carries within the SLOs.

Reads measurements.csv, requests.csv, spans.jsonl and meta.json (never a server or the model); writes summary.csv,
runs.csv (one row per run, with its KV memory and preemptions), ablation.csv, capacity.csv, long_prompts.csv,
tenants.csv, flow.csv (median seconds of each stage of the flow, per run), steps.csv (our server's worker steps),
stages.csv (every request's stage times) and findings.json (key numbers and verdict keys; the templates word them).

Definitions (one place):
    attainment       share of a run's requests that completed and met both SLOs (TTFT and TPOT), with its Wilson
                     95% interval (attainment_ci95_low / _high: what the run's few requests can tell)
    capacity         the highest rate of the sweep whose attainment is at least slo_attainment (0: none)
    kv_reserved_over_held   KV bytes reserved ÷ bytes of the tokens held, summed over the run's steps
    stream ITL p99   the 99th percentile of the gaps between the streams' tokens that overlap the long prompts'
                     prefill (the long-prompt workload: from the first one's arrival to the last one's first token)
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from ...io import read_json, staged, write_json
from ...metrics import RUN_ROW, headline, per_repeat
from ...serving.engine.spans import load_spans, stage_durations, step_table
from ...stats import bootstrap_ratio_ci, summary_table, wilson_interval
from . import NAME as PHASE
from .variants import ablation_variants, load_name, rate_name

# The flow, in order: (stage column of spans.stage_durations, what it covers).
FLOW = [("http_s", "HTTP: parse, chat template, tokenize"), ("queue_wait_s", "queue: waiting for the scheduler"),
        ("schedule_s", "scheduler: admitted -> prefill starts"), ("prefill_s", "worker: prefill (first token)"),
        ("decode_s", "worker: decode steps (rest of the tokens)"),
        ("handoff_s", "worker -> front end: token on host -> chunk sent (median per token)"),
        ("detokenize_s", "detokenize (all chunks of a request)"), ("stream_s", "stream: last token -> response done")]
LOAD_REQUEST = "load-"  # the load generator's X-Request-Id prefix of timed requests (warm-ups have none)


def _p(values, q: float) -> float:
    values = pd.Series(values, dtype=float).dropna()
    return float(np.percentile(values, q)) if len(values) else float("nan")


def _finite(value) -> float | None:
    """A finite float, or None (not measured)."""
    return float(value) if value is not None and math.isfinite(value) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    """a / b; None when either side was not measured; inf when only b is 0 (e.g. static batching met no SLO)."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    if b == 0:
        return math.inf if a > 0 else None
    return a / b


# ---- per run -------------------------------------------------------------------------------------------------
def met_slos(requests: pd.DataFrame, slo_ttft_s: float, slo_tpot_s: float) -> pd.Series:
    """Per request: True when it completed and met both SLOs (a failed request meets none)."""
    return requests["success"].astype(bool) & (requests["ttft_s"] <= slo_ttft_s) & (
        requests["tpot_s"].fillna(0) <= slo_tpot_s)


def attainment(requests: pd.DataFrame, slo_ttft_s: float, slo_tpot_s: float) -> float:
    """Share of the run's requests that completed and met both SLOs."""
    return float(met_slos(requests, slo_ttft_s, slo_tpot_s).mean()) if len(requests) else float("nan")


def attainment_ci95(requests: pd.DataFrame, slo_ttft_s: float, slo_tpot_s: float) -> tuple[float, float]:
    """The Wilson 95% interval of `attainment` (12 requests: one request is 8.3 points of it)."""
    return wilson_interval(int(met_slos(requests, slo_ttft_s, slo_tpot_s).sum()), len(requests))


def run_table(measurements: pd.DataFrame, requests: pd.DataFrame, steps: pd.DataFrame, spans: list[dict],
              cfg: dict) -> pd.DataFrame:
    """One row per load run: server, policy, workload, rate, completed requests, output tok/s, goodput, SLO
    attainment, TTFT / TPOT / ITL / E2E percentiles (seconds), and for our server its KV memory (reserved MiB at
    the p50 step, reserved ÷ held) and preemptions."""
    served = measurements[measurements["server"].isin(["ours", "vllm"])]
    preempted = pd.Series([e["variant"] for e in spans if e.get("event") == "preempted"]).value_counts()
    cached = cached_prompt_tokens(spans)
    rows = []
    for variant, run in served.groupby("variant", sort=False):
        def metric(name):
            return run.loc[run["metric"] == name, "value"]

        per_run = run[run["request_id"] == RUN_ROW].set_index("metric")["value"]
        own = requests[requests["variant"] == variant]
        own_steps = steps[steps["variant"] == variant] if len(steps) else steps
        kv = own_steps.dropna(subset=["kv_bytes_reserved", "kv_bytes_held"]) if len(own_steps) else own_steps
        rows.append({
            "variant": variant, "server": run["server"].iloc[0], "policy": run["policy"].iloc[0],
            "workload": own["workload"].iloc[0] if len(own) else "random",
            "request_rate": float(run["request_rate"].iloc[0]), "completed": int(metric("e2e_s").size),
            "output_tok_per_s": float(per_run.get("output_tok_per_s", math.nan)),
            "request_per_s": float(per_run.get("request_per_s", math.nan)),
            "goodput_req_per_s": float(per_run.get("goodput_req_per_s", math.nan)),
            "attainment": attainment(own, cfg["slo_ttft_s"], cfg["slo_tpot_s"]),
            **dict(zip(("attainment_ci95_low", "attainment_ci95_high"),
                       attainment_ci95(own, cfg["slo_ttft_s"], cfg["slo_tpot_s"]))),
            "ttft_p50_s": _p(metric("ttft_s"), 50), "ttft_p99_s": _p(metric("ttft_s"), 99),
            "tpot_p50_s": _p(metric("tpot_s"), 50), "tpot_p99_s": _p(metric("tpot_s"), 99),
            "itl_p50_s": _p(metric("itl_s"), 50), "itl_p99_s": _p(metric("itl_s"), 99),
            "e2e_p50_s": _p(metric("e2e_s"), 50), "e2e_p99_s": _p(metric("e2e_s"), 99),
            "kv_reserved_mib_p50": _p(kv["kv_bytes_reserved"], 50) / 2**20 if len(kv) else math.nan,
            "kv_reserved_over_held": (float(kv["kv_bytes_reserved"].sum() / kv["kv_bytes_held"].sum())
                                      if len(kv) and kv["kv_bytes_held"].sum() > 0 else math.nan),
            "preemptions": int(preempted.get(variant, 0)) if run["server"].iloc[0] == "ours" else math.nan,
            "prefix_hit_share": (cached.get(variant, 0) / own.loc[own["success"].astype(bool), "prompt_tokens"].sum()
                                 if run["server"].iloc[0] == "ours" and len(own) else math.nan),
        })
    return pd.DataFrame(rows)


def cached_prompt_tokens(spans: list[dict]) -> dict[str, int]:
    """Per run: prompt tokens of its timed requests that the prefix cache served (their prefill was skipped)."""
    timed = {e["request_id"] for e in spans if e.get("event") == "arrived"
             and str(e.get("client_request_id", "")).startswith(LOAD_REQUEST)}
    totals: dict[str, int] = {}
    for event in spans:
        if event.get("event") == "admitted" and event["request_id"] in timed:
            totals[event["variant"]] = totals.get(event["variant"], 0) + int(event.get("cached_tokens", 0))
    return totals


def _row(runs: pd.DataFrame, variant: str) -> dict | None:
    rows = runs[runs["variant"] == variant]
    return rows.iloc[0].to_dict() if len(rows) else None


# ---- the ablation, the capacity sweep, the workloads ----------------------------------------------------------
def ablation_table(runs: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """The ablation's rows in order (slab -> paged -> chunked -> prefix -> lever), each with its run's numbers and
    its output tok/s against the row before."""
    rows, before = [], None
    for step, variant in ablation_variants(cfg):
        row = _row(runs, variant)
        if row is None:
            continue
        row = {"step": step, **row}
        row["tok_per_s_over_previous"] = _ratio(row["output_tok_per_s"], before)
        before = row["output_tok_per_s"]
        rows.append(row)
    return pd.DataFrame(rows)


def capacity_table(runs: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """The sweep per server and rate: attainment, goodput, output tok/s, TTFT / TPOT p50, and whether the rate is
    within capacity (attainment >= slo_attainment)."""
    prefix = {"ours": "continuous_", "vllm": "vllm_"}
    rows = []
    for server, name in prefix.items():
        sweep = runs[(runs["server"] == server) & runs["variant"].str.startswith(name)
                     & (runs["workload"] == "random")]
        for row in sweep.sort_values("request_rate").to_dict(orient="records"):
            rows.append({**row, "load": row["variant"].removeprefix(name),
                         "within": bool(row["attainment"] >= cfg["slo_attainment"])})
    return pd.DataFrame(rows, columns=[*runs.columns, "load", "within"]) if not rows else pd.DataFrame(rows)


def swept(capacity: pd.DataFrame, server: str) -> pd.DataFrame:
    """`server`'s rows of the sweep at finite rates, slowest first: the saturated run (every request at once,
    rate inf) is not a rate of the sweep."""
    rows = capacity[capacity["server"] == server] if len(capacity) else capacity
    return rows[np.isfinite(rows["request_rate"].astype(float))].sort_values("request_rate") if len(rows) else rows


def rate_label(row: dict | None) -> str | None:
    """A run's request rate as the report names it (req/s, 2 decimals), None without the run."""
    return rate_name(round(float(row["request_rate"]), 2)) if row else None


def capacity_of(capacity: pd.DataFrame, server: str) -> float | None:
    """The highest swept rate within capacity for `server` (0.0 when none is; None when it was not swept)."""
    sweep = swept(capacity, server)
    if not len(sweep):
        return None
    within = sweep.loc[sweep["within"], "request_rate"]
    return float(within.max()) if len(within) else 0.0


def long_prompt_table(timeline: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Per long-prompt run (ours at each budget, vLLM): the streams' ITL p50 / p99 / max over the gaps that overlap
    the long prompts' prefill (from the first one's arrival to the last one's first token), and the long prompts'
    TTFT p50 (seconds)."""
    rows = []
    for variant, run in timeline.groupby("variant", sort=False):
        arrivals, firsts = run.loc[run["kind"] == "arrival", "t_s"], run.loc[run["kind"] == "first_token", "t_s"]
        tokens = run[run["kind"] == "token"]
        start, end = arrivals.min(), firsts.max()
        gaps = tokens.loc[(tokens["t_s"] > start) & (tokens["t_s"] - tokens["gap_s"] < end), "gap_s"]
        budget = variant.removeprefix("long_")
        rows.append({"variant": variant, "server": "vllm" if variant == "vllm_long" else "ours",
                     "budget": int(cfg["max_step_tokens"]) if variant == "vllm_long"
                     else (0 if budget == "off" else int(budget)),
                     "stream_itl_p50_s": _p(gaps, 50), "stream_itl_p99_s": _p(gaps, 99),
                     "stream_itl_max_s": float(gaps.max()) if len(gaps) else math.nan,
                     "long_ttft_p50_s": _p(firsts.to_numpy() - arrivals.to_numpy(), 50), "gaps": len(gaps)})
    return pd.DataFrame(rows, columns=["variant", "server", "budget", "stream_itl_p50_s", "stream_itl_p99_s",
                                       "stream_itl_max_s", "long_ttft_p50_s", "gaps"])


def stream_timeline(requests: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Every token of the long-prompt workload's streams: variant, request, its time from the run's start and the
    gap before it (seconds); and the long prompts' arrivals and first tokens (kind arrival / first_token)."""
    streams = cfg["long_prompts"]["streams"]
    rows = []
    for record in requests[requests["workload"] == "long"].to_dict(orient="records"):
        if not record["success"]:
            continue
        first = record["start_s"] + record["ttft_s"]
        if record["request_id"] < streams:
            t = first
            for gap in json.loads(record["itl_s"]):
                t += gap
                rows.append({"variant": record["variant"], "request_id": record["request_id"], "kind": "token",
                             "t_s": t, "gap_s": gap})
        else:
            rows += [{"variant": record["variant"], "request_id": record["request_id"], "kind": kind, "t_s": t,
                      "gap_s": math.nan} for kind, t in (("arrival", record["start_s"]), ("first_token", first))]
    return pd.DataFrame(rows, columns=["variant", "request_id", "kind", "t_s", "gap_s"])


def tenant_table(measurements: pd.DataFrame) -> pd.DataFrame:
    """Per tenant run (fifo, fair) and tenant: requests, TTFT p50/p95 and E2E p50 (seconds)."""
    runs = measurements[measurements["variant"].astype(str).str.startswith("tenants_")
                        & (measurements["request_id"] != RUN_ROW)]
    rows = []
    for (variant, tenant), group in runs.groupby(["variant", "tenant"], sort=True):
        ttft = group.loc[group["metric"] == "ttft_s", "value"]
        rows.append({"variant": variant, "tenant_policy": variant.removeprefix("tenants_"), "tenant": tenant,
                     "requests": int(ttft.size), "ttft_p50_s": _p(ttft, 50), "ttft_p95_s": _p(ttft, 95),
                     "e2e_p50_s": _p(group.loc[group["metric"] == "e2e_s", "value"], 50)})
    return pd.DataFrame(rows, columns=["variant", "tenant_policy", "tenant", "requests", "ttft_p50_s", "ttft_p95_s",
                                       "e2e_p50_s"])


# ---- spans: the flow and the steps ---------------------------------------------------------------------------
def request_stages(spans: list[dict]) -> pd.DataFrame:
    """Per timed request of every run of our server (warm-ups left out): its stage times along the flow."""
    frames = [stage_durations([e for e in spans if e["variant"] == variant]).assign(variant=variant)
              for variant in dict.fromkeys(event["variant"] for event in spans)]
    stages = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["client_request_id"])
    return stages[stages["client_request_id"].astype(str).str.startswith(LOAD_REQUEST)].reset_index(drop=True)


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


def decode_batch_p50(steps: pd.DataFrame, variant: str) -> int | None:
    """The median batch size of a run's decode-only steps (None when it had none)."""
    own = steps[(steps["variant"] == variant) & (steps["phase"] == "decode")] if len(steps) else steps
    return int(round(own["batch_size"].median())) if len(own) else None


def tpot_split(steps: pd.DataFrame, variant: str) -> dict:
    """Where a run's TPOT goes: its decode-only steps' median (seconds), its step count, and the share of its step
    time spent in steps that carry prompt tokens (a prefill or a mixed step: every running decode waits for them).
    None for each when the run has no steps."""
    own = steps[steps["variant"] == variant] if len(steps) else steps
    if not len(own) or own["seconds"].sum() <= 0:
        return {"decode_only_step_p50_s": None, "steps": None, "steps_with_prompt": None,
                "prompt_step_time_share": None}
    decode_only = own[own["phase"] == "decode"]
    with_prompt = own[own["phase"] != "decode"]
    return {"decode_only_step_p50_s": float(decode_only["seconds"].median()) if len(decode_only) else None,
            "steps": int(len(own)), "steps_with_prompt": int(len(with_prompt)),
            "prompt_step_time_share": float(with_prompt["seconds"].sum() / own["seconds"].sum())}


def offline_step(measurements: pd.DataFrame, batch: int | None) -> tuple[int | None, list[float]]:
    """(the measured offline batch size nearest `batch`, its decode steps in seconds)."""
    offline = measurements[(measurements["policy"] == "offline") & (measurements["metric"] == "decode_step_s")]
    if batch is None or not len(offline):
        return None, []
    sizes = sorted({int(b) for b in offline["batch_size"].dropna()})
    nearest = min(sizes, key=lambda size: (abs(size - batch), size))
    return nearest, offline.loc[offline["batch_size"] == nearest, "value"].tolist()


def offline_prompt_tokens(measurements: pd.DataFrame) -> int | None:
    """Prompt tokens of the offline generations (each decode step attends to them; None when not measured)."""
    if "prompt_tokens" not in measurements:
        return None
    offline = measurements.loc[measurements["policy"] == "offline", "prompt_tokens"].dropna()
    return int(offline.median()) if len(offline) else None


def saturated_tok_per_s(capacity: pd.DataFrame, server: str) -> float | None:
    """Output tok/s of `server`'s run with every request at once (the best of its sweep when it has none)."""
    rows = capacity[capacity["server"] == server] if len(capacity) else capacity
    if not len(rows):
        return None
    at_once = rows[np.isinf(rows["request_rate"].astype(float))]
    return _finite((at_once if len(at_once) else rows)["output_tok_per_s"].max())


def capacity_at_top(capacity: pd.DataFrame, server: str) -> bool:
    """True when `server` met the SLOs at the sweep's highest rate: its capacity is at least that rate."""
    rows = swept(capacity, server)
    return bool(len(rows) and rows["within"].iloc[-1])


# ---- targets and findings ------------------------------------------------------------------------------------
def targets(runs: pd.DataFrame, measurements: pd.DataFrame, steps: pd.DataFrame, capacity: pd.DataFrame,
            long: pd.DataFrame, cfg: dict) -> dict:
    """Every measured target ratio (None where a side was not measured)."""
    sweep = swept(capacity, "ours").to_dict(orient="records")
    mid = sweep[len(sweep) // 2] if sweep else None
    middle = rate_label(mid)
    mid_load = mid["variant"].removeprefix("continuous_") if mid else None
    ours_mid, ref_mid = _row(runs, f"continuous_{mid_load}"), _row(runs, f"vllm_{mid_load}")
    batch = decode_batch_p50(steps, f"continuous_{mid_load}")
    batch_size, same_batch = offline_step(measurements, batch)
    _, batch_one = offline_step(measurements, 1)
    served_tpot = measurements.loc[(measurements["variant"] == f"continuous_{mid_load}")
                                   & (measurements["metric"] == "tpot_s"), "value"].tolist()
    tpot_same = bootstrap_ratio_ci(served_tpot, same_batch)
    tpot_one = bootstrap_ratio_ci(served_tpot, batch_one)
    offline_p50 = float(np.median(same_batch)) if same_batch else None
    split = tpot_split(steps, f"continuous_{mid_load}")
    saturated = {server: saturated_tok_per_s(capacity, server) for server in ("ours", "vllm")}
    capacity_censored = {server: capacity_at_top(capacity, server) for server in ("ours", "vllm")}
    policy_load = load_name(float(cfg["policy_load"]))
    continuous, static = _row(runs, f"continuous_{policy_load}"), _row(runs, f"static_{policy_load}")
    policy_rate = rate_label(continuous)
    ablation = ablation_variants(cfg)
    ablation_rate = rate_label(_row(runs, ablation[0][1])) if ablation else None
    prefix_on, prefix_off = _row(runs, "prefix_on"), _row(runs, "prefix_off")
    ours_long = long[long["server"] == "ours"] if len(long) else long
    unchunked = ours_long[ours_long["budget"] == 0] if len(ours_long) else ours_long
    chunked = ours_long[ours_long["budget"] == int(cfg["max_step_tokens"])] if len(ours_long) else ours_long
    slab, paged = _row(runs, "ablation_slab"), _row(runs, "ablation_paged")
    ours_capacity, ref_capacity = capacity_of(capacity, "ours"), capacity_of(capacity, "vllm")
    return {
        "middle_rate": middle, "middle_variant": f"continuous_{mid_load}" if mid else None,
        "policy_rate": policy_rate, "ablation_rate": ablation_rate,
        "capacity_req_per_s": {"ours": ours_capacity, "vllm": ref_capacity},
        "capacity_at_top_of_sweep": capacity_censored,
        "capacity_over_reference": _ratio(ours_capacity, ref_capacity),
        "saturated_tok_per_s": saturated,
        "saturated_tok_per_s_over_reference": _ratio(saturated.get("ours"), saturated.get("vllm")),
        "ttft_p50_over_reference": _ratio(ours_mid["ttft_p50_s"] if ours_mid else None,
                                          ref_mid["ttft_p50_s"] if ref_mid else None),
        "decode_batch_p50": batch, "offline_batch": batch_size,
        "offline_prompt_tokens": offline_prompt_tokens(measurements),
        "offline_step_p50_s": offline_p50,
        "offline_step_b1_p50_s": float(np.median(batch_one)) if batch_one else None,
        "tpot_over_offline_step": _finite(tpot_same[0]),
        "tpot_over_offline_step_ci95": [_finite(tpot_same[1]), _finite(tpot_same[2])],
        "tpot_over_offline_b1": _finite(tpot_one[0]),
        "tpot_split": {**split,
                       "decode_only_over_offline_step": _ratio(split["decode_only_step_p50_s"], offline_p50)},
        "goodput_continuous_over_static": _ratio(continuous["goodput_req_per_s"] if continuous else None,
                                                 static["goodput_req_per_s"] if static else None),
        "static_goodput_req_per_s": static["goodput_req_per_s"] if static else None,
        "prefix_ttft_on_over_off": _ratio(prefix_on["ttft_p50_s"] if prefix_on else None,
                                          prefix_off["ttft_p50_s"] if prefix_off else None),
        "chunked_itl_p99_over_unchunked": _ratio(
            float(chunked["stream_itl_p99_s"].iloc[0]) if len(chunked) else None,
            float(unchunked["stream_itl_p99_s"].iloc[0]) if len(unchunked) else None),
        "kv_reserved_over_held": {"paged": paged["kv_reserved_over_held"] if paged else None,
                                  "slab": slab["kv_reserved_over_held"] if slab else None},
        "reference_measured": bool(len(runs) and (runs["server"] == "vllm").any()),
    }


def verdicts(t: dict) -> dict:
    """Verdict keys the templates word (no thresholds in templates)."""
    if t["static_goodput_req_per_s"] is None:
        policies = "not_measured"
    elif t["static_goodput_req_per_s"] == 0:
        policies = "static_met_no_slo" if t["goodput_continuous_over_static"] is not None else "none_met_slo"
    else:
        policies = "ratio"
    capacity = "not_measured" if t["capacity_over_reference"] is None else (
        "ours_higher" if t["capacity_over_reference"] > 1 else
        "equal" if t["capacity_over_reference"] == 1 else "reference_higher")
    return {"policies": policies, "capacity": capacity}


def findings(measurements: pd.DataFrame, runs: pd.DataFrame, tables: dict, meta: dict, cfg: dict) -> dict:
    """The key numbers the report's text, the at-a-glance block and the progress wall are worded from."""
    t = targets(runs, measurements, tables["steps"], tables["capacity"], tables["long"], cfg)
    main = t["middle_variant"] or runs["variant"].iloc[0]
    flow = tables["flow"]
    main_flow = flow[flow["variant"] == main].sort_values("order") if len(flow) else flow
    fairness = {policy: {"ttft_p50_s": group.set_index("tenant")["ttft_p50_s"].to_dict()}
                for policy, group in tables["tenants"].groupby("tenant_policy")}
    served = measurements[(measurements["server"] == "ours") & (measurements["variant"] == main)]
    return {
        "runs": runs.to_dict(orient="records"),
        "ablation": tables["ablation"].to_dict(orient="records"),
        "capacity": tables["capacity"].to_dict(orient="records"),
        "long_prompts": tables["long"].to_dict(orient="records"),
        "targets": t, "verdicts": verdicts(t),
        "lever": meta["notes"].get("lever", ""),
        "flow_variant": main,
        "flow": main_flow[["stage", "label", "median_s", "n"]].to_dict(orient="records"),
        "flow_total_s": float(main_flow["median_s"].sum()) if len(main_flow) else math.nan,
        "tenants": fairness,
        "reference": meta["notes"].get("reference", {}),
        "saturated_req_per_s": {"ours": None, "vllm": None, **meta["notes"].get("saturated_req_per_s", {})},
        "failed_requests": {variant: run["failed"] for variant, run in meta["notes"]["runs"].items()},
        "requests": cfg["requests"], "prompt_tokens": cfg["prompt_tokens"], "output_tokens": cfg["output_tokens"],
        "slo_ttft_s": cfg["slo_ttft_s"], "slo_tpot_s": cfg["slo_tpot_s"], "slo_attainment": cfg["slo_attainment"],
        "max_step_tokens": cfg["max_step_tokens"], "shared_prefix": cfg["shared_prefix"],
        "long_prompt_workload": cfg["long_prompts"],
        "headlines": [headline(f"TTFT, {main} (per request)", served.loc[served["metric"] == "ttft_s", "value"],
                               "s", "lower"),
                      headline(f"TPOT, {main} (per request)", served.loc[served["metric"] == "tpot_s", "value"],
                               "s", "lower"),
                      headline("engine decode step offline, batch 1",
                               per_repeat(measurements[measurements["variant"] == "offline_b1"], "decode_step_s"),
                               "s", "lower")],
    }


def analyze(settings: dict, measurements_path, meta_path, requests_path, spans_path, outputs: dict) -> None:
    cfg = settings[PHASE]
    measurements, requests = pd.read_csv(measurements_path), pd.read_csv(requests_path)
    meta, spans = read_json(meta_path), load_spans(spans_path)
    stages, steps = request_stages(spans), steps_table(spans)
    runs = run_table(measurements, requests, steps, spans, cfg)
    tables = {"steps": steps, "stages": stages, "flow": flow_table(stages), "tenants": tenant_table(measurements),
              "ablation": ablation_table(runs, cfg), "capacity": capacity_table(runs, cfg),
              "timeline": stream_timeline(requests, cfg),
              "runs": runs, "summary": summary_table(measurements, ["variant", "metric"], settings["cv_warn"])}
    tables["long"] = long_prompt_table(tables["timeline"], cfg)
    names = [name for name in outputs if name != "findings"]
    with staged(*[outputs[name] for name in names], outputs["findings"]) as temps:
        for name, temp in zip(names, temps):
            tables[name].to_csv(temp, index=False)
        write_json(temps[-1], findings(measurements, runs, tables, meta, cfg))


# ---- command line (python -m profiling d4_serving_analysis) --------------------------------------------------------
OUTPUTS = ("summary", "runs", "ablation", "capacity", "long", "timeline", "tenants", "flow", "steps", "stages",
           "findings")


def add_arguments(parser) -> None:
    from ...config import settings_arg

    parser.add_argument("--settings", type=settings_arg, required=True)
    for name in ("measurements", "meta", "requests", "spans", *OUTPUTS):
        parser.add_argument(f"--{name}", required=True)


def cli(args) -> None:
    analyze(args.settings, args.measurements, args.meta, args.requests, args.spans,
            {name: getattr(args, name) for name in OUTPUTS})
