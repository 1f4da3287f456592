"""D4's analysis on small hand-made frames: capacity, targets, verdicts, the long-prompt table, the split of one
server's spans into runs, and a proven phase that ticks whatever its numbers (static batching meeting no SLO)."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from profiling.phases.d4_serving import analysis as A
from profiling.phases.d4_serving.experiment import split_spans
from profiling.phases.d4_serving.variants import ablation_variants, our_runs, reference_runs, resolve_rate
from profiling.report.progress import DONE, wall
from profiling.report.templating import environment

CFG = {"slo_ttft_s": 2.0, "slo_tpot_s": 0.25, "slo_attainment": 0.9, "policy_load": 1.0,
       "ablation_load": 1.0, "capacity_loads": [0.25, 0.5, 1.0], "max_step_tokens": 256,
       "lever": "none", "policies": ["static", "continuous"], "shared_prefix": {"rate_req_per_s": 0.5},
       "long_prompts": {"streams": 2, "budgets": [0, 256]}, "tenants": {"enabled": True, "request_rate_req_per_s": math.inf}}


def run_row(variant, server, rate, attainment, goodput=1.0, tok_per_s=50.0, ttft=0.5, tpot=0.1, workload="random"):
    return {"variant": variant, "server": server, "policy": "vllm" if server == "vllm" else variant.split("_")[0],
            "workload": workload, "request_rate": rate, "completed": 10, "output_tok_per_s": tok_per_s,
            "goodput_req_per_s": goodput, "attainment": attainment, "ttft_p50_s": ttft, "tpot_p50_s": tpot,
            "kv_reserved_over_held": 1.05}


@pytest.fixture
def runs():
    # our saturated rate: 2 req/s; the loads 25%, 50%, 100% of it are 0.5, 1 and 2 req/s for both servers
    rows = [run_row("continuous_sat", "ours", math.inf, 0.0, tok_per_s=90),
            run_row("continuous_25pct", "ours", 0.5, 1.0, tok_per_s=20),
            run_row("continuous_50pct", "ours", 1.0, 0.95),
            run_row("continuous_100pct", "ours", 2.0, 0.5, tok_per_s=95, ttft=3.0),
            run_row("static_100pct", "ours", 2.0, 0.0, goodput=0.0),
            run_row("vllm_sat", "vllm", math.inf, 0.0, tok_per_s=100),
            run_row("vllm_25pct", "vllm", 0.5, 1.0), run_row("vllm_50pct", "vllm", 1.0, 0.8, ttft=0.25),
            run_row("vllm_100pct", "vllm", 2.0, 0.95, tok_per_s=110),  # not monotone: the highest rate within counts
            run_row("prefix_on", "ours", 0.5, 1.0, ttft=0.2, workload="prefix"),
            run_row("prefix_off", "ours", 0.5, 1.0, ttft=1.0, workload="prefix")]
    return pd.DataFrame(rows)


def empty_measurements():
    return pd.DataFrame(columns=["variant", "metric", "value", "policy", "batch_size", "request_id"])


def test_capacity_is_the_highest_rate_within_the_slos(runs):
    capacity = A.capacity_table(runs, CFG)
    assert capacity[capacity.server == "ours"].within.tolist() == [True, True, False, False]  # rate order, sat last
    assert capacity[capacity.server == "ours"].load.tolist() == ["25pct", "50pct", "100pct", "sat"]
    assert A.capacity_of(capacity, "ours") == 1.0 and A.capacity_of(capacity, "vllm") == 2.0
    assert A.capacity_at_top(capacity, "vllm") and not A.capacity_at_top(capacity, "ours")
    all_at_once_within = capacity.assign(within=capacity.request_rate > 1.5)  # only 2 req/s and "sat" within
    assert A.capacity_of(all_at_once_within, "ours") == 2.0  # the saturated run is no rate of the sweep
    none_within = capacity.assign(within=False)
    assert A.capacity_of(none_within, "ours") == 0.0
    assert A.capacity_of(capacity[capacity.server == "ours"], "vllm") is None


def test_targets_and_a_static_run_that_met_no_slo(runs):
    capacity = A.capacity_table(runs, CFG)
    t = A.targets(runs, empty_measurements(), pd.DataFrame(), capacity, pd.DataFrame(), CFG)
    assert t["capacity_over_reference"] == pytest.approx(0.5)
    assert t["saturated_tok_per_s"] == {"ours": 90.0, "vllm": 100.0}  # the runs with every request at once
    assert t["capacity_at_top_of_sweep"] == {"ours": False, "vllm": True}
    assert t["policy_rate"] == "2" and t["ablation_rate"] is None  # no ablation run in these frames
    assert t["middle_rate"] == "1" and t["ttft_p50_over_reference"] == pytest.approx(0.5 / 0.25)
    assert t["prefix_ttft_on_over_off"] == pytest.approx(0.2)
    assert t["goodput_continuous_over_static"] == math.inf  # continuous kept goodput, static had none
    assert t["tpot_over_offline_step"] is None  # nothing offline was measured: not measured, not NaN
    assert A.verdicts(t) == {"policies": "static_met_no_slo", "capacity": "reference_higher"}
    both_zero = runs.assign(goodput_req_per_s=0.0)
    t0 = A.targets(both_zero, empty_measurements(), pd.DataFrame(), capacity, pd.DataFrame(), CFG)
    assert A.verdicts(t0)["policies"] == "none_met_slo"


@pytest.mark.parametrize("language", ["en", "zh"])
def test_a_proven_d4_ticks_and_words_a_zero_goodput_static_run(runs, tmp_path, language):
    capacity = A.capacity_table(runs, CFG)
    t = A.targets(runs, empty_measurements(), pd.DataFrame(), capacity, pd.DataFrame(), CFG)
    findings = {"targets": t, "verdicts": A.verdicts(t), "slo_attainment": 0.9}
    proof = tmp_path / "data" / "d4_serving" / "findings.json"
    proof.parent.mkdir(parents=True)
    proof.write_text(json.dumps(findings))
    row = next(s for s in wall(tmp_path, environment(language))["phases"] if s.phase == "d4_serving")
    assert row.mark == DONE, row.note
    assert "n/a" not in row.note
    assert ("static batching met no SLO" if language == "en" else "静态批处理没有一个请求满足 SLO") in row.note
    assert ("1.0 req/s" in row.note) and ("2.0 req/s" in row.note)


def test_loads_become_rates_of_the_measured_saturated_rate():
    runs = {run.variant: run for run in our_runs(CFG)}
    assert next(iter(runs)) == "continuous_sat"  # measured first: every other random rate is a share of it
    assert resolve_rate(runs["continuous_25pct"], 2.0).rate == pytest.approx(0.5)
    assert math.isinf(resolve_rate(runs["continuous_sat"], None).rate)
    assert resolve_rate(runs["prefix_on"], None).rate == 0.5  # other workloads keep their configured rate
    with pytest.raises(RuntimeError, match="saturated rate"):
        resolve_rate(runs["ablation_slab"], None)
    assert {run.variant for run in reference_runs(CFG)} >= {"vllm_sat", "vllm_25pct", "vllm_50pct", "vllm_100pct"}


def test_long_prompt_table_reads_the_streams_gaps_while_the_long_prompts_prefill():
    def request(variant, request_id, start, ttft, gaps):
        return {"variant": variant, "workload": "long", "request_id": request_id, "success": True, "start_s": start,
                "ttft_s": ttft, "itl_s": json.dumps(gaps)}

    requests = pd.DataFrame([
        # no chunking: stream 0's tokens at 0.1, 0.2, 0.3, then a 9 s stall (the prefill), then 9.4; the long
        # prompt arrives at 0.25 and gets its first token at 9.3
        request("long_off", 0, 0.0, 0.1, [0.1, 0.1, 9.0, 0.1]),
        request("long_off", 1, 0.0, 0.1, [0.1] + [0.1] * 2),
        request("long_off", 2, 0.25, 9.05, []),
        request("long_256", 0, 0.0, 0.1, [0.1, 0.1] + [0.5] * 18),
        request("long_256", 1, 0.0, 0.1, [0.1]),
        request("long_256", 2, 0.25, 9.5, [])])
    timeline = A.stream_timeline(requests, CFG)
    table = A.long_prompt_table(timeline, CFG).set_index("variant")
    assert table.loc["long_off", "stream_itl_max_s"] == pytest.approx(9.0)
    assert table.loc["long_off", "gaps"] == 4  # the gaps overlapping [0.25, 9.3]: not 0.1 -> 0.2, nor 9.3 -> 9.4
    assert table.loc["long_off", "stream_itl_p99_s"] > 8.0  # the stall is in the p99 of the window's gaps
    assert table.loc["long_256", "stream_itl_max_s"] == pytest.approx(0.5)
    assert table.loc["long_off", "budget"] == 0 and table.loc["long_256", "budget"] == 256
    assert table.loc["long_off", "long_ttft_p50_s"] == pytest.approx(9.05)
    assert set(timeline.loc[timeline.kind == "token", "request_id"]) == {0, 1}  # the long prompt is no stream


def test_one_servers_spans_split_by_run_window():
    events = [{"kind": "meta", "t": 0.0},
              {"kind": "request", "request_id": "a", "event": "arrived", "t": 1.0},
              {"kind": "step", "step": 0, "phase": "prefill", "start": 1.1, "end": 1.2},
              {"kind": "request", "request_id": "a", "event": "done", "t": 5.5},  # after its run's window
              {"kind": "request", "request_id": "b", "event": "arrived", "t": 6.0},
              {"kind": "step", "step": 1, "phase": "decode", "start": 6.1, "end": 6.2}]
    split = split_spans(events, {"first": (0.5, 5.0), "second": (5.8, 7.0)})
    assert [e.get("request_id") or e.get("step") for e in split["first"]] == [None, "a", 0, "a"]
    assert [e.get("request_id") or e.get("step") for e in split["second"]] == [None, "b", 1]


def test_runs_share_a_server_only_when_every_switch_matches():
    cfg = {**CFG, "capacity_loads": [0.5, 1.0], "shared_prefix": {"rate_req_per_s": 0.5},
           "long_prompts": {"budgets": [0, 256]}, "tenants": {"enabled": True, "request_rate_req_per_s": math.inf}}
    runs = our_runs(cfg)
    names = [run.variant for run in runs]
    assert len(names) == len(set(names))
    keys = [run.server_key for run in runs]
    assert keys == sorted(keys, key=keys.index)  # runs sharing a server are next to each other
    by_name = {run.variant: run for run in runs}
    assert by_name["long_off"].server_key == by_name["ablation_paged"].server_key
    assert by_name["long_256"].server_key == by_name["ablation_chunked"].server_key
    assert by_name["prefix_off"].server_key == by_name["ablation_chunked"].server_key
    assert ablation_variants(cfg)[-1] == ("prefix", "continuous_100pct")  # no lever set
    assert ablation_variants({**cfg, "lever": "auto"})[-1] == ("lever", "ablation_lever")
    assert [run.variant for run in reference_runs(cfg)][:3] == ["vllm_sat", "vllm_50pct", "vllm_100pct"]


def test_ablation_runs_only_the_configured_steps():
    cfg = {**CFG, "capacity_loads": [0.5, 1.0], "shared_prefix": {"rate_req_per_s": 0.5},
           "long_prompts": {"budgets": [0, 256]}, "tenants": {"enabled": False}, "lever": "auto",
           "ablation_steps": ["paged", "chunked", "prefix"]}
    assert ablation_variants(cfg) == [("paged", "ablation_paged"), ("chunked", "ablation_chunked"),
                                      ("prefix", "continuous_100pct")]
    names = {run.variant for run in our_runs(cfg)}
    assert {"ablation_paged", "ablation_chunked"} <= names
    assert not names & {"ablation_slab", "ablation_kernels", "ablation_lever"}
    # the lever step needs a lever
    assert ablation_variants({**cfg, "ablation_steps": ["slab", "lever"], "lever": "none"}) == [
        ("slab", "ablation_slab")]


def test_only_a_servers_first_run_sends_warm_up_requests():
    from profiling.model import build_tiny_tokenizer
    from profiling.phases.d4_serving.experiment import workload

    cfg = {**CFG, "burstiness": 1.0, "warmup_requests": 2, "requests": 3, "prompt_tokens": 16, "output_tokens": 4,
           "tenants": {"mix": {"a": 1}, "requests": 3}}
    run = next(run for run in our_runs({**cfg, "tenants": {"enabled": False}}) if run.variant == "continuous_100pct")
    run = resolve_rate(run, 2.0)
    tokenizer = build_tiny_tokenizer()
    first, script = workload(cfg, run, tokenizer, seed=0)
    later, _ = workload(cfg, run, tokenizer, seed=0, warm=True)
    assert first.warmup_requests == 2 and later.warmup_requests == 0
    assert len(script["prompts"]) == 3 + 2  # the timed prompts, then spare ones for the warm-up


def test_attainment_carries_its_wilson_interval():
    """11 of 12 requests within the SLOs: 91.7%, Wilson 95% interval 64.6% - 98.5% (the published value for 11/12);
    12 of 12 is not certain either (75.7% - 100%)."""
    requests = pd.DataFrame({"success": [True] * 12, "ttft_s": [0.5] * 11 + [3.0], "tpot_s": [0.1] * 12})
    assert A.attainment(requests, 2.0, 0.25) == pytest.approx(11 / 12)
    low, high = A.attainment_ci95(requests, 2.0, 0.25)
    assert (low, high) == (pytest.approx(0.646, abs=5e-4), pytest.approx(0.985, abs=5e-4))
    requests["ttft_s"] = 0.5
    low, high = A.attainment_ci95(requests, 2.0, 0.25)
    assert (low, high) == (pytest.approx(0.7575, abs=5e-4), 1.0)


def test_tpot_split_separates_decode_only_steps_from_steps_with_prompt_tokens():
    """Three decode-only steps (90, 80, 100 ms) and one mixed step of 600 ms: the decode-only median is 90 ms, and
    the step carrying a prompt chunk holds 600 / 870 of the run's step time."""
    steps = pd.DataFrame({"variant": ["continuous_1"] * 4 + ["other"], "phase": ["decode", "mixed", "decode", "decode",
                                                                                  "mixed"],
                          "seconds": [0.09, 0.6, 0.08, 0.1, 5.0]})
    split = A.tpot_split(steps, "continuous_1")
    assert split == {"decode_only_step_p50_s": pytest.approx(0.09), "steps": 4, "steps_with_prompt": 1,
                     "prompt_step_time_share": pytest.approx(0.6 / 0.87)}
    assert A.tpot_split(steps, "continuous_2")["steps"] is None
