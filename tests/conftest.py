"""Shared fixtures: the tiny random model (built in memory, no files) and paths."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "tests" / "configs" / "smoke.yaml"


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the real workflow on the smoke config (tiny model) in `workdir`."""
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(workdir), "--configfile", str(SMOKE), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def workflow_run(tmp_path_factory) -> Path:
    """The working directory of one complete `snakemake --cores 1` run on the smoke config (shared by tests)."""
    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return workdir


def run_dir_of(workdir: Path) -> Path:
    """The one run directory (reports/runs/<run tag>) of a workflow run on the smoke config."""
    runs = sorted((workdir / "reports" / "runs").glob("*/env.json"))
    assert len(runs) == 1, runs
    return runs[0].parent


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny random Llama, seed 0."""
    from profiling.model import build_tiny_model

    torch.manual_seed(0)
    return build_tiny_model(seed=0)


@pytest.fixture
def settings():
    """A checked config (tiny model, CPU) as the experiments receive it."""
    from profiling.config import check_config, phase_config

    config = check_config({"model": "tiny-random", "device": "cpu", "threads": 1,
                           "d1_request": {"max_new_tokens": 4, "warmup": 1, "repeats": 2, "load_repeats": 1,
                                  "trace_decode_steps": 2, "top_ops": 5}})
    return phase_config(config, "d1_request")
