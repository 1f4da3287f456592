"""Runs keep their results: one directory per run, a comparison page, bad input stopped before any job, an
interrupted run that touches no other run, and the cluster profile's dry run."""
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SMOKE, snakemake

MATRIX = "matrix={dtypes: [float32, bfloat16]}"


def checksums(reports: Path) -> dict:
    return {path: path.read_bytes() for path in reports.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """A workflow run of the smoke config as a matrix of two dtypes: two run directories and their comparison."""
    workdir = tmp_path_factory.mktemp("two_runs")
    result = snakemake(workdir, "--config", MATRIX)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return workdir


def test_two_runs_coexist_and_compare_with_ratios(two_runs):
    runs = sorted(path.parent.name for path in (two_runs / "reports/runs").glob("*/env.json"))
    assert len(runs) == 2 and {run.split("_")[2] for run in runs} == {"float32", "bfloat16"}
    for run in runs:
        env = json.loads((two_runs / "reports/runs" / run / "env.json").read_text())
        assert env["run_tag"] == run and env["dtype"] in run
        assert (two_runs / "reports/runs" / run / "index.html").exists()
    compare = (two_runs / "reports/compare.md").read_text()
    assert all(run in compare for run in runs)
    assert compare.count("(baseline)") == 1
    assert "not measured" not in compare
    # each headline of the other run carries its ratio to the baseline: the ratio of the two runs' medians
    baseline = re.search(r"\[([^\]]+)\]\(runs/[^)]+\) \(baseline\)", compare).group(1)
    other = next(run for run in runs if run != baseline)
    medians = {run: {h["label"]: statistics.median(h["values"]) for h in json.loads(
        (two_runs / "reports/runs" / run / "data/d1_request/findings.json").read_text())["headlines"]} for run in runs}
    for label, base in medians[baseline].items():
        row = next(line for line in compare.splitlines() if line.startswith(f"| {label} ("))
        ratio, low, high = (float(x) for x in re.search(r"\*\*([\d.]+)×\*\* \[([\d.]+)× – ([\d.]+)×\]", row).groups())
        assert ratio == pytest.approx(medians[other][label] / base, abs=0.006), (label, row)
        assert low <= ratio <= high
    index = (two_runs / "reports/index.html").read_text()
    assert '<base href="runs/' in index and "compare runs side by side" in index


def test_compare_command_takes_named_runs_and_reports_a_missing_phase(two_runs, tmp_path):
    runs = sorted(path.parent.name for path in (two_runs / "reports/runs").glob("*/env.json"))
    copy = tmp_path / "reports"
    subprocess.run(["cp", "-r", str(two_runs / "reports"), str(copy)], check=True)
    # a run copied from elsewhere that lacks a phase
    missing = copy / "runs" / runs[1] / "data" / "d3_kvcache"
    subprocess.run(["rm", "-r", str(missing)], check=True)
    result = subprocess.run([sys.executable, "-m", "profiling", "compare", "--reports", str(copy), "--runs",
                             runs[1], runs[0]], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    compare = (copy / "compare.md").read_text()
    assert compare.index(runs[1]) < compare.index(runs[0]) and "not measured" in compare
    bad = subprocess.run([sys.executable, "-m", "profiling", "compare", "--reports", str(copy), "--runs", "nope"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "RUNS: no run directory nope" in bad.stderr


def test_unknown_model_stops_before_any_job_and_changes_nothing(two_runs):
    before = checksums(two_runs / "reports")
    start = time.perf_counter()
    result = snakemake(two_runs, "--config", "model=Qwen/Qwen9-999B")
    elapsed = time.perf_counter() - start
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "model: 'Qwen/Qwen9-999B' is not in the local Hugging Face cache" in output
    assert "models--Qwen--Qwen9-999B" in output and "Fix:" in output
    assert "Traceback" not in output and elapsed < 30
    assert checksums(two_runs / "reports") == before


def test_interrupted_run_leaves_the_other_runs_untouched_and_resumes(two_runs):
    before = checksums(two_runs / "reports" / "runs")
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(two_runs), "--configfile", str(SMOKE), "--config", "profiles={quick: {}}", "profile=quick"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    quick = None
    deadline = time.time() + 120
    while time.time() < deadline and quick is None:  # interrupt once the new run's first measurement started
        time.sleep(0.5)
        quick = next((path for path in (two_runs / "reports/runs").glob("*_quick/logs/d*.log")), None)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert quick is not None, "the quick run never started"
    after = {path: data for path, data in checksums(two_runs / "reports" / "runs").items()
             if "_quick" not in str(path)}
    assert after == before
    partial = [path for path in (two_runs / "reports/runs").rglob("*.partial")]
    assert partial == []
    # the interrupted step resumes to completion: its phase's findings, and nothing left to do for them
    findings = quick.parent.parent / "data" / quick.stem / "findings.json"
    target = str(findings.relative_to(two_runs))
    resumed = snakemake(two_runs, "--config", "profiles={quick: {}}", "profile=quick", "--rerun-incomplete", target)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert json.loads(findings.read_text())["headlines"]
    assert list((two_runs / "reports/runs").rglob("*.partial")) == []
    again = snakemake(two_runs, "--config", "profiles={quick: {}}", "profile=quick", "--dry-run", target)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_slurm_profile_plans_every_job_with_its_resources(tmp_path):
    """The cluster profile's settings on a dry run (no cluster needed: the local executor plans the same jobs)."""
    profile = REPO / "workflow" / "profiles" / "slurm"
    plan = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                           "--directory", str(tmp_path), "--configfile", str(SMOKE), "--config", MATRIX,
                           "--profile", str(profile), "--executor", "local", "-n"],
                          capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    text = plan.stdout + plan.stderr
    jobs = text.split("\nrule ")
    for rule in ("d1_request", "d2_bottlenecks", "d3_batching", "d3_kvcache", "report"):
        assert sum(job.startswith(f"{rule}:") for job in jobs) == 2, rule  # one job per run of the matrix
    measuring = [job for job in jobs if job.startswith("d3_batching:")]
    assert all("threads: 8" in job and "mem_mb=4000" in job and "gpu=0" in job and "runtime=120" in job
               and "slurm_partition=cpu" in job for job in measuring), measuring[0]
    light = [job for job in jobs if job.startswith("d3_batching_analysis:")]
    assert light and all("mem_mb=2000" in job and "runtime=30" in job for job in light), light[0]
