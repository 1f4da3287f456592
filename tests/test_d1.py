"""The D1 experiment and its analysis on the tiny model: contract files, derived numbers, all-or-nothing writes."""
import json

import pandas as pd
import pytest

from profiling.phases.d1_request import analysis as d1_analysis
from profiling.phases.d1_request import experiment as d1_request
from profiling.metrics import CONTRACT_COLUMNS
from profiling.model import provision


@pytest.fixture
def provisioned(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    provision("tiny-random", tmp_path / "resources" / "models" / "tiny-random")
    return tmp_path


def run_d1(settings, out):
    paths = {name: out / name for name in ("measurements.csv", "meta.json", "request.json.gz")}
    d1_request.run(settings, paths["measurements.csv"], paths["meta.json"], paths["request.json.gz"])
    return paths


def test_d1_writes_the_data_contract(provisioned, settings):
    paths = run_d1(settings, provisioned / "out")
    frame = pd.read_csv(paths["measurements.csv"])
    assert list(frame.columns[:len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
    untraced = frame[frame["variant"] == "untraced"]
    repeats, new_tokens = settings["d1_request"]["repeats"], settings["d1_request"]["max_new_tokens"]
    steps = untraced[untraced["metric"] == "decode_step_s"]
    assert len(steps) == repeats * (new_tokens - 1)
    assert sorted(steps["step"].unique()) == list(range(1, new_tokens))
    assert len(untraced[untraced["metric"] == "load_model_s"]) == settings["d1_request"]["load_repeats"]
    assert (untraced["value"] > 0).all()
    # e2e covers its stages, and ttft is the end of the prefill
    by_repeat = untraced[untraced["step"].isna()].pivot_table(index="repeat", columns="metric", values="value")
    stage_sum = by_repeat[["tokenize_s", "prefill_s", "detokenize_s"]].sum(axis=1) \
        + steps.groupby("repeat")["value"].sum()
    assert (by_repeat["e2e_s"] >= stage_sum).all()
    assert (by_repeat["ttft_s"] >= by_repeat["tokenize_s"] + by_repeat["prefill_s"]).all()
    meta = json.loads(paths["meta.json"].read_text())
    assert meta["experiment"] == "d1_request" and meta["run_tag"] and meta["env"]["device"] == "cpu"
    assert meta["notes"]["prompt_tokens"] > 0 and meta["config"]["d1_request"] == settings["d1_request"]


def test_d1_analysis_findings_are_consistent(provisioned, settings):
    out = provisioned / "out"
    paths = run_d1(settings, out)
    d1_analysis.analyze(settings, paths["measurements.csv"], paths["request.json.gz"], out / "summary.csv",
                        out / "operators.csv", out / "findings.json")
    findings = json.loads((out / "findings.json").read_text())
    stages = {row["stage"]: row for row in findings["stages"]}
    shares = sum(stages[s]["share_of_e2e"] for s in ("tokenize", "prefill", "decode", "detokenize", "other"))
    assert shares == pytest.approx(1.0, abs=0.05)  # medians of per-request shares: close to, not exactly, 1
    assert findings["dominant_stage"] in ("tokenize", "prefill", "decode", "detokenize")
    assert findings["prefill_over_step"] > 0 and findings["profiler_overhead_ratio"] > 0
    summary = pd.read_csv(out / "summary.csv")
    e2e = summary[(summary["metric"] == "e2e_s") & (summary["variant"] == "untraced")].iloc[0]
    assert e2e["n"] == settings["d1_request"]["repeats"] and e2e["p50"] == pytest.approx(findings["e2e_p50_s"])


def test_a_failing_run_writes_nothing_and_keeps_earlier_results(provisioned, settings, monkeypatch):
    out = provisioned / "out"
    out.mkdir()
    earlier = {name: f"earlier {name}" for name in ("measurements.csv", "meta.json", "request.json.gz")}
    for name, text in earlier.items():
        (out / name).write_text(text)

    def broken_export(prof, path):
        raise RuntimeError("disk full")

    monkeypatch.setattr(d1_request, "export_gzip_trace", broken_export)
    with pytest.raises(RuntimeError, match="disk full"):
        run_d1(settings, out)
    assert {p.name: p.read_text() for p in out.iterdir()} == earlier  # untouched, no .partial files left
