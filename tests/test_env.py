import json
import socket
import subprocess

import pytest
import torch

from profiling.config import ConfigError, Precision, check_config
from profiling.env import collect
from profiling import allocator
from profiling.runs import plan_runs, run_tag
from tests.conftest import REPO


def test_env_record_describes_this_machine():
    record = collect(Precision("cpu", "float32"), torch.get_num_threads(), "tiny-random_cpu_float32_host",
                     "tiny-random")
    assert record["device"] == "cpu" and record["dtype"] == "float32" and record["model"] == "tiny-random"
    assert record["torch"] == torch.__version__
    assert record["cpu_logical_cores"] >= 1 and record["ram_bytes"] > 0
    assert record["torch_threads"] == torch.get_num_threads()
    assert record["cpu_model"]
    assert record["cpu_allocator"] == allocator.describe()  # this process's setting, as python -m profiling sets it
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert head and record["git_commit"].removesuffix("-dirty") == head  # this checkout's commit, not "unknown"
    assert record["run_tag"] == "tiny-random_cpu_float32_host"
    json.dumps(record)  # serialisable as env.json


def test_env_records_how_the_linears_actually_run(monkeypatch):
    from profiling import prepack
    from profiling.env import cpu_linears

    assert cpu_linears(Precision("cuda", "float16")) is None
    assert cpu_linears(Precision("cpu", "float32", linears="aten")) == "aten"
    assert cpu_linears(Precision("cpu", "float32")) == ("prepacked" if prepack.available() else "aten")
    monkeypatch.setattr(prepack, "available", lambda dtype=torch.float32: dtype == torch.float32)  # AVX2-only
    assert cpu_linears(Precision("cpu", "bfloat16")) == "aten"
    assert cpu_linears(Precision("cpu", "float32")) == "prepacked"


def test_run_tag_names_model_device_dtype_host_and_profile():
    config = check_config({"model": "tiny-random", "device": "cpu"})
    assert run_tag(config, host="my host") == "tiny-random_cpu_float32_my-host"
    assert run_tag({**config, "profile": "quick"}, host="h") == "tiny-random_cpu_float32_h_quick"
    assert run_tag({**config, "model": "HuggingFaceTB/SmolLM2-360M"}, host="h") == \
        "HuggingFaceTB-SmolLM2-360M_cpu_float32_h"


def test_matrix_expands_into_one_run_per_combination():
    config = check_config({"model": "tiny-random", "device": "cpu",
                           "matrix": {"dtypes": ["float32", "bfloat16"], "models": ["tiny-random"]}})
    host = socket.gethostname()
    runs = plan_runs(config)
    assert sorted(runs) == sorted(f"tiny-random_cpu_{dtype}_{host}".replace(" ", "-")
                                  for dtype in ("float32", "bfloat16"))
    assert {run["dtype"] for run in runs.values()} == {"float32", "bfloat16"}


def test_matrix_rejects_two_names_for_one_run():
    config = check_config({"model": "tiny-random", "matrix": {"devices": ["auto", "cpu"]}})
    with pytest.raises(ConfigError, match="matrix"):
        plan_runs(config)
