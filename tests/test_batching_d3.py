"""The D3 batching experiment, analysis and report on the tiny model, its config errors, and the workflow run."""
import gzip
import json
import os
import re

import pandas as pd
import pytest
import torch

from profiling.report.templating import answer, environment
from profiling.phases.d3_batching import analysis
from profiling.config import ConfigError, check_config, phase_config
from profiling.phases.d3_batching import experiment as d3_batching
from profiling.metrics import CONTRACT_COLUMNS
from profiling.model import provision
from profiling.phases.d3_batching import view as report

from tests.conftest import run_dir_of

PROMPTS = ["hello there", "a short question", "tell me a story", "why is it so"]


def sentence(findings, macro="answer"):
    """The report's wording of a batching finding (the progress wall quotes the same)."""
    return answer(environment(), "d3_batching", findings, macro)


def tiny_settings(**overrides) -> dict:
    """A checked config slice for a seconds-long d3_batching run on the tiny model."""
    section = {"prompts": PROMPTS, "batch_sizes": [1, 2, 3], "max_new_tokens": 4, "warmup": 1, "repeats": 2,
               "trace_decode_steps": 2, "compare_batch_sizes": [1, 3], "telemetry_hz": 50,
               "dynamic": {"max_new_tokens": 3, "requests": 5, "rate_req_per_s": 200.0, "wait_windows_ms": [0, 5],
                           "max_batches": [1, 2], "operating_window_ms": 5, "operating_max_batch": 2,
                           "rates_req_per_s": [400.0], "burst_requests": 3}}
    section.update(overrides)
    config = check_config({"model": "tiny-random", "device": "cpu", "threads": 1, "d3_batching": section})
    return phase_config(config, "d3_batching")


def run_experiment(settings, out):
    """Run the experiment in `out` (where resources/models/tiny-random was provisioned); return its file paths."""
    sizes = settings["d3_batching"]["batch_sizes"]
    paths = {"measurements": out / "measurements.csv", "meta": out / "meta.json", "timeline": out / "timeline.csv",
             "telemetry": out / "telemetry.csv",
             "traces": [out / "traces" / f"static_b{size}.json.gz" for size in sizes]}
    d3_batching.run(settings, paths["measurements"], paths["meta"], paths["timeline"], paths["telemetry"],
                    paths["traces"])
    return paths


def analyse(settings, paths, out):
    analysis.analyze(settings, paths["measurements"], paths["timeline"], paths["telemetry"], out / "summary.csv",
                     out / "batch_table.csv", out / "dynamic_table.csv", out / "findings.json")
    return json.loads((out / "findings.json").read_text())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One experiment + analysis on the tiny model, shared by the tests that only read its outputs."""
    root = tmp_path_factory.mktemp("d3_batching")
    provision("tiny-random", root / "resources" / "models" / "tiny-random")
    settings = tiny_settings()
    previous = os.getcwd()
    os.chdir(root)
    try:
        paths = run_experiment(settings, root / "data")
    finally:
        os.chdir(previous)
    findings = analyse(settings, paths, root / "data")
    return settings, paths, findings, root


def test_static_rows_follow_the_shared_timing_contract(tiny_run):
    settings, paths, _, _ = tiny_run
    frame = pd.read_csv(paths["measurements"])
    assert list(frame.columns[:len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
    for size in settings["d3_batching"]["batch_sizes"]:
        static = frame[frame["variant"] == f"static_b{size}"]
        steps = static[static["metric"] == "decode_step_s"]
        prefill = static[static["metric"] == "prefill_s"]
        assert len(prefill) == 2 and len(steps) == 2 * 3  # repeats x (max_new_tokens - 1)
        assert sorted(steps["step"].unique()) == [1, 2, 3] and prefill["step"].isna().all()
        timing_rows = pd.concat([steps, prefill])
        assert (timing_rows["batch_size"] == size).all() and (timing_rows["prompt_tokens"] > 0).all()
        assert timing_rows["use_cache"].astype(str).eq("True").all() and (timing_rows["request_id"] == -1).all()
        e2e = static[static["metric"] == "e2e_s"]
        assert sorted(e2e["request_id"].unique()) == list(range(size))  # per request, by the request's id
        waste = static.loc[static["metric"] == "padding_waste_ratio", "value"]
        assert waste.between(0, 1).all()
    assert set(frame["variant"]) >= {"generate_b1", "generate_b3", "traced_b2", "load"}


def test_dynamic_runs_serve_every_request_once_within_the_cap(tiny_run):
    settings, paths, _, _ = tiny_run
    frame = pd.read_csv(paths["measurements"])
    timeline = pd.read_csv(paths["timeline"])
    dynamic = frame[frame["variant"].str.startswith("dyn_")]
    variants = set(dynamic["variant"])
    # grid 2 x 2, rate sweep 1, burst 1; baseline (cap 1, window 0) and operating point are in the grid
    assert len(variants) == 6
    for variant, rows in dynamic.groupby("variant"):
        requests = 3 if rows["arrival"].iloc[0] == "burst" else 5
        e2e = rows[rows["metric"] == "e2e_s"]
        assert sorted(e2e["request_id"]) == list(range(requests)), variant
        sizes = rows.loc[rows["metric"] == "achieved_batch_size", "value"]
        assert sizes.sum() == requests and (sizes <= rows["max_batch"].iloc[0]).all()
        by_request = rows[rows["request_id"] >= 0].pivot_table(index="request_id", columns="metric", values="value")
        assert (by_request["queue_wait_s"] >= 0).all()
        assert (by_request["ttft_s"] >= by_request["queue_wait_s"]).all()
        assert (by_request["e2e_s"] >= by_request["ttft_s"]).all()
    lanes = timeline[timeline["variant"].str.startswith("dyn_")]
    assert (lanes["arrival_s"] <= lanes["launch_s"]).all() and (lanes["launch_s"] <= lanes["first_token_s"]).all()
    assert (lanes["first_token_s"] <= lanes["done_s"]).all()


def test_traces_and_telemetry_are_written(tiny_run):
    _, paths, _, _ = tiny_run
    for trace in paths["traces"]:
        with gzip.open(trace, "rt") as f:
            labels = {e["name"] for e in json.load(f)["traceEvents"] if e.get("cat") == "user_annotation"}
        assert {"batch[0]", "tokenize", "prefill", "decode_step[1]", "detokenize"} <= labels
    telemetry = pd.read_csv(paths["telemetry"])
    assert {"cpu_busy_ratio", "process_rss_bytes"} <= set(telemetry["metric"])
    timeline = pd.read_csv(paths["timeline"])
    # One clock: the samples fall within the batches' time span (the first comes one sampling period after start).
    assert telemetry["t_s"].min() < timeline["done_s"].max() and telemetry["t_s"].max() > timeline["launch_s"].min()
    meta = json.loads(paths["meta"].read_text())
    assert meta["notes"]["telemetry_backend"] == "psutil" and meta["experiment"] == "d3_batching"


def test_findings_state_the_trade_off_with_numbers(tiny_run):
    _, _, findings, root = tiny_run
    assert re.search(r"batch 2 gives \d+\.\d× the output tokens/s of batch 1", sentence(findings))
    assert "batch 3: " in sentence(findings)
    assert sentence(findings, "dynamic").startswith("Dynamic batcher (window 5 ms, cap 2)")
    assert "without batching (cap 1)" in sentence(findings, "dynamic")
    assert [row["batch_size"] for row in findings["engine_vs_generate"]] == [1, 3]
    assert all(row["decode_ratio"] > 0 for row in findings["engine_vs_generate"])
    assert findings["batch_speedup"]["large_batch_size"] == 3 and findings["batch_speedup"]["ratio"] > 0
    batches = pd.read_csv(root / "data" / "batch_table.csv")
    assert batches.loc[0, "throughput_ratio"] == pytest.approx(1.0) and (batches["status"] == "ok").all()
    dynamic = pd.read_csv(root / "data" / "dynamic_table.csv")
    assert set(dynamic["role"]) == {"grid", "rate sweep", "burst"}
    assert (dynamic["goodput_req_per_s_p50"] <= dynamic["request_per_s_p50"] + 1e-9).all()


def test_an_out_of_memory_batch_size_is_a_row_and_the_sweep_goes_on(tmp_path, monkeypatch):
    provision("tiny-random", tmp_path / "resources" / "models" / "tiny-random")
    monkeypatch.chdir(tmp_path)
    real_run_batch = d3_batching.run_batch

    def run_batch_without_memory_for_two(model, tokenizer, texts, *args, **kwargs):
        if len(texts) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run_batch(model, tokenizer, texts, *args, **kwargs)

    monkeypatch.setattr(d3_batching, "run_batch", run_batch_without_memory_for_two)
    settings = tiny_settings(dynamic={"requests": 3, "rate_req_per_s": 500.0, "max_new_tokens": 2,
                                      "wait_windows_ms": [0], "max_batches": [1], "rates_req_per_s": [],
                                      "burst_requests": 3, "operating_window_ms": 5, "operating_max_batch": 2})
    paths = run_experiment(settings, tmp_path / "data")
    frame = pd.read_csv(paths["measurements"])
    oom = frame[frame["metric"] == "oom"]
    assert set(oom["variant"]) >= {"static_b2"}
    assert len(frame[(frame["variant"] == "static_b3") & (frame["metric"] == "e2e_s")]) > 0  # the sweep went on
    with gzip.open(paths["traces"][1], "rt") as f:
        assert json.load(f)["traceEvents"] == []  # a valid, empty trace for the size that ran out of memory
    findings = analyse(settings, paths, tmp_path / "data")
    assert findings["oom_batch_sizes"] == [2] and "batch 2: out of memory" in sentence(findings)
    # the report shows it as such
    reports = tmp_path / "reports"
    data = reports / "data" / "d3_batching"
    data.mkdir(parents=True)
    for name in ("measurements.csv", "meta.json", "timeline.csv", "telemetry.csv", "summary.csv",
                 "batch_table.csv", "dynamic_table.csv", "findings.json"):
        (data / name).write_bytes((tmp_path / "data" / name).read_bytes())
    section = report.view(reports, reports / "figures")
    assert [row["status"] for row in section["batches"]] == ["ok", "oom", "ok"]
    assert (reports / "figures" / section["figures"]["swimlane"]).exists()


def test_a_failing_run_writes_nothing(tmp_path, monkeypatch):
    provision("tiny-random", tmp_path / "resources" / "models" / "tiny-random")
    monkeypatch.chdir(tmp_path)

    def broken_export(prof, path):
        raise RuntimeError("disk full")

    monkeypatch.setattr(d3_batching, "export_gzip_trace", broken_export)
    settings = tiny_settings(batch_sizes=[1], compare_batch_sizes=[], repeats=1,
                             dynamic={"requests": 2, "rate_req_per_s": 500.0, "max_new_tokens": 2,
                                      "wait_windows_ms": [0], "max_batches": [1], "rates_req_per_s": [],
                                      "burst_requests": 0})
    with pytest.raises(RuntimeError, match="disk full"):
        run_experiment(settings, tmp_path / "data")
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.*"))


# ---- config errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("section, field", [
    ({"batch_sizes": [1, 0]}, "d3_batching.batch_sizes.1"),
    ({"batch_sizes": [-4]}, "d3_batching.batch_sizes.0"),
    ({"dynamic": {"wait_windows_ms": [10, -5]}}, "d3_batching.dynamic.wait_windows_ms.1"),
    ({"dynamic": {"rate_req_per_s": 0}}, "d3_batching.dynamic.rate_req_per_s"),
    ({"dynamic": {"rates_req_per_s": [1.0, -2.0]}}, "d3_batching.dynamic.rates_req_per_s.1"),
    ({"dynamic": {"max_batches": [0]}}, "d3_batching.dynamic.max_batches.0"),
    ({"dynamic": {"operating_window_ms": -1}}, "d3_batching.dynamic.operating_window_ms"),
])
def test_bad_values_are_schema_errors_naming_the_field(section, field):
    with pytest.raises(ConfigError) as error:
        check_config({"model": "tiny-random", "d3_batching": section})
    assert f"{field}:" in str(error.value)


def test_settings_the_schema_cannot_check_are_refused_before_any_work():
    with pytest.raises(ConfigError, match="d3_batching.prompts"):
        d3_batching.check_settings(tiny_settings(batch_sizes=[1, 8])["d3_batching"])
    with pytest.raises(ConfigError, match="d3_batching.compare_batch_sizes"):
        d3_batching.check_settings(tiny_settings(compare_batch_sizes=[4])["d3_batching"])


def test_dynamic_plan_runs_each_setting_once_with_the_baseline_always_there():
    dynamic = tiny_settings(dynamic={"wait_windows_ms": [10, 50], "max_batches": [4, 8], "operating_window_ms": 10,
                                     "operating_max_batch": 8, "rates_req_per_s": [2.0, 4.0],
                                     "rate_req_per_s": 2.0, "burst_requests": 4})["d3_batching"]["dynamic"]
    plan = d3_batching.dynamic_settings(dynamic)
    variants = [setting.variant for setting in plan]
    assert len(variants) == len(set(variants)) == 4 + 1 + 1 + 1  # grid, baseline, 4 req/s, burst (2 req/s in grid)
    assert "dyn_poisson_2rps_w10ms_cap1" in variants and "dyn_burst_4req_w10ms_cap8" in variants
    same_rate = [setting.arrivals(seed=0) for setting in plan if setting.rate_req_per_s == 2.0]
    assert all(arrivals == same_rate[0] for arrivals in same_rate)  # identical traffic across the grid


# ---- the real workflow (smoke config) -----------------------------------------------------------------------
def test_workflow_writes_the_d3_batching_contract_and_section(workflow_run):
    reports = run_dir_of(workflow_run)
    for name in ("data/d3_batching/measurements.csv", "data/d3_batching/meta.json", "data/d3_batching/timeline.csv",
                 "data/d3_batching/telemetry.csv", "data/d3_batching/summary.csv", "data/d3_batching/batch_table.csv",
                 "data/d3_batching/dynamic_table.csv", "data/d3_batching/findings.json",
                 "traces/d3_batching/static_b1.json.gz", "traces/d3_batching/static_b2.json.gz",
                 "records/d3_batching.txt", "figures/d3_batching_swimlane.png", "figures/d3_batching_utilisation.svg",
                 "logs/d3_batching.log"):
        assert (reports / name).stat().st_size > 0, name
    findings = json.loads((reports / "data/d3_batching/findings.json").read_text())
    text = (reports / "report.md").read_text()
    section = text[text.index("### Batching"):]
    section = section[:section.index("\n## ")] if "\n## " in section else section
    # the section and the progress wall quote this run's numbers (formatted here, not by the answer macro)
    o = findings["operating"]
    operating = (f"Dynamic batcher (window {o['wait_window_ms']:.0f} ms, cap {o['max_batch']}) under Poisson "
                 f"{o['rate_req_per_s']:.1f} req/s: {o['output_tok_per_s_p50']:,.1f} output tok/s")
    first = next(row for row in findings["batch_table"] if row["above_base"])
    trade_off = f"batch {first['batch_size']} gives {first['throughput_ratio']:.1f}× the output tokens/s"
    assert operating in section and trade_off in section
    links = re.findall(r"\]\(([^)\s]+)\)", section)
    assert any(link.startswith("traces/d3_batching/") for link in links)
    for link in links:  # a file of the run, or an anchor of the report (D2's shape curve, when the step jumps)
        assert (f'id="{link[1:]}"' in text) if link.startswith("#") else (reports / link).exists(), link
    record = (reports / "records/d3_batching.txt").read_text()
    assert record.startswith("[d3_batching") and "waiting window = " in record
    progress = (reports / "PROGRESS.md").read_text()
    batcher_line = next(line for line in progress.splitlines() if "动态 batcher" in line)
    assert "☑" in batcher_line and f"{o['output_tok_per_s_p50']:,.1f}" in batcher_line
