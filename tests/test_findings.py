"""Each printed figure follows from its data: small hand-made frames for the analyses that compute the report's
numbers (headroom, the one bandwidth roof, end-to-end speed-ups, like-with-like ratios, matching baselines)."""
import numpy as np
import pandas as pd
import pytest

from profiling.metrics import Measurements, profiler_overhead_ratio
from profiling.phases.d2_bottlenecks import analysis as d2
from profiling.phases.d3_batching import analysis as d3
from profiling.phases.d5_variants import analysis as d5

CEILINGS = {"ceilings": {
    "memory_bandwidth": {"bytes_per_s": 23e9, "bytes_per_s_range": [20e9, 24.1e9]},
    "memory_read": {"bytes_per_s": 22e9, "bytes_per_s_range": [19e9, 23e9]},
    "matvec": {"bytes_per_s": 26e9, "bytes_per_s_range": [25e9, 27.3e9], "flop_per_s_range": [12e9, 13e9]},
    "matmul": {"bytes_per_s": 5e11, "bytes_per_s_range": [4e11, 5e11], "flop_per_s_range": [90e9, 100e9]},
    "tiny_op": {"bytes_per_s": None, "bytes_per_s_range": [None, None]}}}


def d5_rows(variants: dict, batches=(1, 8), repeats=3) -> pd.DataFrame:
    """Timed D5 rows: variants = name -> (step_s at batch 1, prefill_s, threads); batch 8 steps twice as long."""
    rows = Measurements("d5_variants")
    for name, (step_s, prefill_s, threads) in variants.items():
        for batch in batches:
            scale = 1.0 if batch == 1 else 2.0
            knobs = {"batch_size": batch, "traced": 0, "threads": threads}
            for repeat in range(repeats):
                for step in range(1, 5):
                    rows.add(name, repeat, "decode_step_s", step_s * scale, request_id=-1, step=step, **knobs)
                rows.add(name, repeat, "prefill_s", prefill_s, request_id=-1, **knobs)
                e2e = prefill_s + 4 * step_s * scale
                for request in range(batch):
                    rows.add(name, repeat, "e2e_s", e2e, request_id=request, **knobs)
                rows.add(name, repeat, "output_tokens", 5, request_id=-1, **knobs)
                rows.add(name, repeat, "output_tok_per_s", 5 * batch / e2e, request_id=-1, **knobs)
        rows.add(name, 0, "step_weight_bytes", 1e9, request_id=-1)
    return rows.frame()


def d5_table(frame, batches=(1, 8)):
    return d5.variant_table(frame, {"notes": {}}, 2e10, list(batches), warmup=1)


# ---- the one bandwidth roof --------------------------------------------------------------------------------
def test_one_bandwidth_roof_the_highest_measurement_for_d2_and_d5():
    d2_roof = d2.ceiling_values(CEILINGS)
    d5_roof = d5.roof_bandwidth(CEILINGS)
    assert d2_roof["bandwidth_bytes_per_s"] == d5_roof["bytes_per_s"] == 27.3e9
    assert d2_roof["bandwidth_source"] == d5_roof["source"] == "matvec"
    # no ceiling's share of the roof is above 100%
    for record in CEILINGS["ceilings"].values():
        if record.get("bytes_per_s") and record is not CEILINGS["ceilings"]["matmul"]:
            assert record["bytes_per_s"] / d2_roof["bandwidth_bytes_per_s"] <= 1.0


# ---- D5: headroom left, not gain taken ---------------------------------------------------------------------
def test_thread_scaling_headroom_is_what_perfect_scaling_would_still_give():
    # 1 thread: 84 ms; 2 threads: 51 ms. Perfect scaling on 2 threads: 42 ms, so 9 ms are left (not 33 ms).
    frame = d5_rows({"reference": (0.051, 0.2, 2), "threads_1": (0.084, 0.3, 1)})
    table = d5_table(frame)
    ranked = d5.directions(table, {}, "reference", [1, 8], {"bytes_per_s": float("nan"), "source": None})
    scaling = next(d for d in ranked if d["limit"] == "thread_scaling")
    assert scaling["headroom_s_per_token"] == pytest.approx(0.051 - 0.084 / 2)
    assert scaling["numbers"]["variant"] == "reference" and scaling["numbers"]["threads"] == 2


def test_thread_scaling_headroom_is_never_negative():
    frame = d5_rows({"reference": (0.040, 0.2, 2), "threads_1": (0.084, 0.3, 1)})  # better than perfect
    ranked = d5.directions(d5_table(frame), {}, "reference", [1, 8], {"bytes_per_s": float("nan"), "source": None})
    assert next(d for d in ranked if d["limit"] == "thread_scaling")["headroom_s_per_token"] == 0.0


# ---- D5: decode-only and end-to-end side by side; vLLM against the fastest at each batch --------------------
def test_decode_speedup_and_end_to_end_speedup_side_by_side():
    # 'fast' decodes 1.5x faster but its prefill is slow: end to end it is no faster
    frame = d5_rows({"reference": (0.060, 0.74, 2), "fast": (0.040, 0.82, 2)})
    table = d5_table(frame).set_index(["variant", "batch_size"])
    assert table.loc[("fast", 1), "speedup"] == pytest.approx(1.5)
    assert table.loc[("fast", 1), "e2e_speedup"] == pytest.approx((0.74 + 0.24) / (0.82 + 0.16))
    assert table.loc[("fast", 1), "repeats"] == 3


def test_vllm_is_compared_with_the_variant_fastest_at_each_batch():
    frame = d5_rows({"reference": (0.050, 0.2, 2), "small_fast": (0.030, 0.2, 2), "big_fast": (0.045, 0.2, 2)})
    # at batch 8, big_fast is the fastest end to end
    frame.loc[(frame["variant"] == "big_fast") & (frame["batch_size"] == 8) & (frame["metric"] == "output_tok_per_s"),
              "value"] = 1000.0
    vllm = pd.DataFrame([{"variant": "vllm_offline", "metric": "output_tok_per_s", "value": v, "batch_size": b,
                          "traced": 0, "repeat": 0, "request_id": -1, "unit": "tok/s", "experiment": "d5_variants"}
                         for b, v in ((1, 100.0), (8, 500.0))])
    frame = pd.concat([frame, vllm], ignore_index=True)
    table = d5_table(frame)
    rows = {row["batch_size"]: row for row in d5.against_vllm(frame, table)}
    assert rows[1]["variant"] == "small_fast" and rows[8]["variant"] == "big_fast"
    assert rows[8]["ratio"] == pytest.approx(1000.0 / 500.0)


# ---- like with like: the profiler's overhead at the traced batch size ----------------------------------------
def test_profiler_overhead_compares_the_same_batch_size():
    rows = Measurements("d5_variants")
    for repeat in range(3):
        for step in (1, 2, 3):
            rows.add("reference", repeat, "decode_step_s", 0.050, request_id=-1, step=step, batch_size=1)
            rows.add("reference", repeat, "decode_step_s", 0.120, request_id=-1, step=step, batch_size=8)
            rows.add("reference", repeat, "decode_step_s", 0.200, request_id=-1, step=step, batch_size=16)
    for step in (1, 2, 3):
        rows.add("reference@traced", 0, "decode_step_s", 0.060, request_id=-1, step=step, batch_size=1)
    assert profiler_overhead_ratio(rows.frame(), "reference@traced", "reference") == pytest.approx(1.2)


# ---- D3: the baseline at the operating point's window; p95 over requests ------------------------------------
def test_dynamic_baseline_is_no_batching_at_the_operating_window():
    table = pd.DataFrame([
        {"variant": f"dyn_w{w}_cap{c}", "arrival": "poisson", "rate_req_per_s": 2.0, "wait_window_ms": float(w),
         "max_batch": c} for w in (0, 10, 50) for c in (1, 8)])
    grid = {"rate_req_per_s": 2.0, "operating_window_ms": 10, "operating_max_batch": 8}
    assert d3.baseline_setting(table, grid)["variant"] == "dyn_w10_cap1"


def test_static_p95_is_over_every_request():
    # batch 4, three repeats: 12 requests with e2e 1, 1, 1, 1, 2, 2, 2, 2, 10, 10, 10, 10 s
    rows = Measurements("d3_batching")
    for repeat, e2e in enumerate((1.0, 2.0, 10.0)):
        for request in range(4):
            for metric, value in (("ttft_s", 0.1), ("tpot_s", 0.01), ("e2e_s", e2e)):
                rows.add("static_b4", repeat, metric, value, request_id=request, batch_size=4, prompt_tokens=10)
        rows.add("static_b4", repeat, "output_tok_per_s", 40 / e2e, request_id=-1, batch_size=4, prompt_tokens=10)
        rows.add("static_b4", repeat, "decode_step_s", 0.01, request_id=-1, step=1, batch_size=4, prompt_tokens=10)
    measurements = d3.one_row_per_static_batch(rows.frame())
    telemetry = pd.DataFrame({"t_s": [], "metric": [], "value": []})
    timeline = pd.DataFrame({"variant": [], "repeat": [], "batch_index": [], "launch_s": [], "done_s": []})
    table = d3.batch_table(measurements, timeline, telemetry)
    row = table.iloc[0]
    assert row["requests"] == 12
    assert row["e2e_p95_s"] == pytest.approx(np.percentile([1.0] * 4 + [2.0] * 4 + [10.0] * 4, 95))


# ---- one quantity, one value: D1's decode step; D2's best prefill -----------------------------------------------
def d1_rows() -> pd.DataFrame:
    """Three timed requests whose steps are skewed: pooled median 0.0455 s, median of request medians 0.0575 s."""
    rows = Measurements("d1_request")
    steps = {0: [0.040, 0.045, 0.046, 0.080], 1: [0.044, 0.045, 0.070, 0.090], 2: [0.030, 0.040, 0.090, 0.095]}
    for repeat, seconds in steps.items():
        knobs = {"batch_size": 1, "prompt_tokens": 20, "max_new_tokens": 5}
        for load in ("load_model_s", "load_tokenizer_s"):
            rows.add("untraced", repeat, load, 1.0, request_id=-1)
        for metric, value in (("tokenize_s", 0.001), ("prefill_s", 0.1), ("detokenize_s", 0.001)):
            rows.add("untraced", repeat, metric, value, request_id=-1, **knobs)
        for step, value in enumerate(seconds, start=1):
            rows.add("untraced", repeat, "decode_step_s", value, request_id=-1, step=step, **knobs)
        for metric, value in (("ttft_s", 0.1), ("tpot_s", 0.05), ("e2e_s", 0.1 + sum(seconds) + 0.002)):
            rows.add("untraced", repeat, metric, value, **knobs)
        rows.add("untraced", repeat, "output_tokens", 5, request_id=-1, **knobs)
        rows.add("untraced", repeat, "output_tok_per_s", 5 / (0.1 + sum(seconds)), request_id=-1, **knobs)
    rows.add("untraced", 3, "load_model_s", 1.0, request_id=-1)  # a fourth load: not a fourth request
    rows.add("untraced", 3, "load_tokenizer_s", 1.0, request_id=-1)
    return rows.frame()


def test_d1_decode_step_is_one_value_the_headline_and_the_sentence_share():
    from profiling.phases.d1_request import analysis as d1

    operators = pd.DataFrame(columns=["stage", "op", "device", "self_s", "share_of_stage", "calls"])
    spans = pd.DataFrame(columns=["name", "start_s", "seconds"])
    found = d1.findings(d1_rows(), operators, spans, cv_warn=0.1,
                       policy={"max_repeats": 3, "ci_half_width": 0.05})
    headline = next(h for h in found["headlines"] if h["label"].startswith("decode step"))
    assert found["decode_step_p50_s"] == pytest.approx(np.median(headline["values"]))
    assert found["decode_step_p50_s"] == pytest.approx(0.0575)  # not the pooled 0.0455
    assert found["repeats"] == 3
    assert found["decode_step_precision"]["n"] == 3 and found["decode_step_precision"]["at_cap"]


def test_d2_best_prefill_is_the_best_of_every_phase():
    points = pd.DataFrame([
        {"source": "d2_bottlenecks", "stage": "prefill", "batch_size": 16, "prompt_tokens": 128,
         "achieved_flop_per_s": 205.7e9, "mfu": 0.5},
        {"source": "d3_kvcache", "stage": "prefill", "batch_size": 1, "prompt_tokens": 1000,
         "achieved_flop_per_s": 219.3e9, "mfu": 0.53},
        {"source": "d2_bottlenecks", "stage": "decode", "batch_size": 1, "prompt_tokens": 128,
         "achieved_flop_per_s": 1e9, "mfu": 0.01}])
    best = d2.best_prefill(points)
    assert best["source"] == "d3_kvcache" and best["achieved_flop_per_s"] == 219.3e9


# ---- the ⚠ marks and their legend follow one flag; verdicts are keys ------------------------------------------
def test_d2_points_flag_noise_from_the_runs_cv_and_answer_the_question_with_a_key():
    rows = []
    for repeat, seconds in enumerate((0.050, 0.060, 0.070)):  # CV ≈ 16.7%
        rows.append({"source": "d1_request", "variant": "untraced", "stage": "decode", "repeat": repeat,
                     "request_id": 0, "batch_size": 1, "prompt_tokens": 20, "step": 1, "use_cache": True,
                     "seconds": seconds, "flops": 1e8, "bytes": 1e9, "context": 21})
    for repeat, seconds in enumerate((0.050, 0.051, 0.050)):
        rows.append({"source": "d2_bottlenecks", "variant": "b1", "stage": "decode", "repeat": repeat,
                     "request_id": 0, "batch_size": 1, "prompt_tokens": 128, "step": 1, "use_cache": True,
                     "seconds": seconds, "flops": 1e8, "bytes": 1e9, "context": 129})
    forwards = pd.DataFrame(rows)
    for column in d2.COST_COLUMNS:
        if column not in forwards:
            forwards[column] = 0.0
    roofs = {"peak_flop_per_s": 1e11, "bandwidth_bytes_per_s": 3e10, "bandwidth_source": "matvec"}
    points = d2.roofline_points(forwards, roofs, overhead_threshold=0.2, cv_warn=0.10).set_index("source")
    assert points.loc["d1_request", "noisy"] and not points.loc["d2_bottlenecks", "noisy"]
    assert points.loc["d1_request", "seconds_cv"] > 0.10


def test_d3_words_are_chosen_by_the_analysis():
    assert d3.window_verdict(4.0, 4.1, 2.0, 3.0) == "batch_unchanged"  # the window decided nothing
    assert d3.window_verdict(2.0, 4.0, 2.0, 2.5) == "wait_paid"
    assert d3.window_verdict(2.0, 4.0, 2.0, 1.5) == "queue_drained"
    assert d3.window_verdict(2.0, 4.0, 2.0, 2.05) == "no_clear_change"
    table = pd.DataFrame([
        {"batch_size": 1, "status": "ok", "ttft_p50_s": 0.1, "padding_waste_ratio": 0.0, "decode_step_p50_s": 0.05,
         "utilisation_mean_ratio": 0.5},
        {"batch_size": 8, "status": "ok", "ttft_p50_s": 0.4, "padding_waste_ratio": 0.3, "decode_step_p50_s": 0.12,
         "utilisation_mean_ratio": 0.55}])
    verdicts = d3.static_verdicts(table)
    assert (verdicts["ttft_trend"], verdicts["padding"], verdicts["utilisation"]) == ("grows", "large", "flat")
    assert verdicts["top_token_s"] == pytest.approx(0.12 / 8)
    assert not d3.static_verdicts(table.iloc[:1])["compared"]
    baseline = pd.Series({"variant": "cap1", "queue_wait_p95_s": 5.0})
    operating = pd.Series({"variant": "cap8", "queue_wait_p95_s": 0.5})
    assert d3.queue_verdict(baseline, operating) == "queue_hides_latency"
    assert d3.queue_verdict(operating, operating) is None


def test_d3_kvcache_doubling_is_worded_from_a_key():
    from profiling.phases.d3_kvcache import analysis as kv

    assert kv.doubling_verdict(350.0) == "from_context"
    assert kv.doubling_verdict(0.0) == "always"
    assert kv.doubling_verdict(None) is None


# ---- energy per token where a meter exists, else the meter that is missing; wall time per phase ------------------
def test_energy_per_token_or_the_missing_meter():
    from profiling.metrics import energy_per_token

    rows = Measurements("d3_batching")
    for repeat, joules in enumerate((8.0, 12.0, 10.0)):
        rows.add("static_b4", repeat, "output_tokens", 10, request_id=-1, batch_size=4)
        rows.add("static_b4", repeat, "energy_j", joules, request_id=-1, batch_size=4)
    measured = energy_per_token(rows.frame(), {"method": "RAPL", "missing": None})
    assert measured["per_token_j"] == pytest.approx(10.0 / 40) and measured["n"] == 3
    without = rows.frame()
    without = without[without["metric"] != "energy_j"]
    missing = energy_per_token(without, {"method": None, "missing": "no_rapl", "detail": "no RAPL counters"})
    assert missing["per_token_j"] is None and missing["missing"] == "no_rapl"  # a key the templates word


def test_phase_wall_times_come_from_each_meta(tmp_path):
    import json

    from profiling.env import phase_wall_times

    for name, start, end in (("d1_request", "2026-01-01T00:00:00+00:00", "2026-01-01T00:01:30+00:00"),
                             ("d5_variants", "2026-01-01T00:02:00+00:00", "2026-01-01T00:10:00+00:00")):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "meta.json").write_text(json.dumps({"started_at": start, "ended_at": end}))
    rows = phase_wall_times(tmp_path, ["d1_request", "d2_bottlenecks", "d5_variants"])
    assert [(row["phase"], row["wall_s"]) for row in rows] == [("d1_request", 90.0), ("d5_variants", 480.0)]
