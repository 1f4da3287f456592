"""End to end: the real Snakemake workflow on the tiny model in a temporary directory."""
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_dir_of, REPO, snakemake

STAGE_LABELS = {"load_model", "load_tokenizer", "tokenize", "prefill", "decode_step[1]", "detokenize"}


def test_every_contract_file_is_written(workflow_run):
    reports = run_dir_of(workflow_run)
    for name in ("env.json", "report.md", "index.html", "PROGRESS.md", "progress.html", "records/d1_request.txt",
                 "data/d1_request/measurements.csv", "data/d1_request/meta.json", "data/d1_request/summary.csv",
                 "data/d1_request/operators.csv", "traces/d1_request/request.json.gz",
                 "figures/d1_request_waterfall.png", "figures/d1_request_waterfall.svg", "logs/d1_request.log"):
        assert (reports / name).stat().st_size > 0, name
    measurements = pd.read_csv(reports / "data/d1_request/measurements.csv")
    assert set(measurements["metric"]) >= {"load_model_s", "load_tokenizer_s", "tokenize_s", "prefill_s",
                                           "decode_step_s", "detokenize_s", "ttft_s", "e2e_s", "output_tok_per_s"}
    meta = json.loads((reports / "data/d1_request/meta.json").read_text())
    assert meta["config"]["model"] == "tiny-random" and meta["run_tag"] == reports.name


def test_trace_is_gzip_json_with_the_stage_labels(workflow_run):
    with gzip.open(run_dir_of(workflow_run) / "traces/d1_request/request.json.gz", "rt") as f:
        events = json.load(f)["traceEvents"]
    labels = {e["name"] for e in events if e.get("cat") == "user_annotation"}
    assert STAGE_LABELS <= labels
    assert any(e.get("cat") == "cpu_op" for e in events)


def local_links(path: Path) -> list[str]:
    text = path.read_text()
    if path.suffix == ".md":
        links = re.findall(r"\]\(([^)\s]+)\)", text)
    else:
        links = re.findall(r'(?:href|src)="([^"]+)"', text)
    return [link for link in links if not link.startswith(("http://", "https://", "#", "mailto:"))]


@pytest.mark.parametrize("page", ["report.md", "index.html", "PROGRESS.md", "progress.html"])
def test_local_links_resolve(workflow_run, page):
    reports = run_dir_of(workflow_run)
    links = local_links(reports / page)
    assert links, f"{page} links nothing"
    for link in links:
        assert (reports / link.split("#")[0]).exists(), f"{page} links missing {link}"


def test_html_needs_no_network(workflow_run):
    html = (run_dir_of(workflow_run) / "index.html").read_text()
    assert not re.search(r'(?:href|src)="https?://', html)
    assert "<table>" in html and 'src="figures/d1_request_waterfall.png"' in html


def test_report_states_measured_numbers(workflow_run):
    findings = json.loads((run_dir_of(workflow_run) / "data/d1_request/findings.json").read_text())
    report = (run_dir_of(workflow_run) / "report.md").read_text()
    assert f"{findings['e2e_p50_s']:.3f} s" in report  # the conclusion quotes this run's median
    record = (run_dir_of(workflow_run) / "records/d1_request.txt").read_text()
    assert record.startswith("[d1_request") and "per_token_latency : [" in record


def test_second_run_does_no_work(workflow_run):
    result = snakemake(workflow_run, "--dry-run")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_progress_item_flips_when_its_artifact_is_removed(workflow_run, tmp_path):
    reports = run_dir_of(workflow_run)
    progress_cmd = [sys.executable, "-m", "profiling", "progress", "--run-dir", str(reports)]
    line = lambda: next(l for l in (reports / "PROGRESS.md").read_text().splitlines() if "分段 STATS" in l)
    assert "☑" in line()
    findings = reports / "data/d1_request/findings.json"
    saved = findings.read_bytes()
    findings.unlink()
    try:
        subprocess.run(progress_cmd, check=True, cwd=REPO, timeout=120)
        assert "☐" in line() and "not yet measured" in line()
    finally:
        findings.write_bytes(saved)
        subprocess.run(progress_cmd, check=True, cwd=REPO, timeout=120)
    assert "☑" in line()


def test_bad_config_stops_before_any_work_and_keeps_results(workflow_run, tmp_path):
    reports = workflow_run / "reports"
    before = {p: p.read_bytes() for p in reports.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.yaml"
    bad.write_text("d1_request:\n  repeats: 0\n")
    result = snakemake(workflow_run, "--configfile", str(bad))
    assert result.returncode != 0
    assert "d1_request.repeats" in result.stdout + result.stderr
    after = {p: p.read_bytes() for p in reports.rglob("*") if p.is_file()}
    assert after == before
