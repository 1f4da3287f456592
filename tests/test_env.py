import json

import torch

from profiling.config import Precision
from profiling.env import collect, run_tag


def test_env_record_describes_this_machine():
    record = collect(Precision("cpu", "float32"), torch.get_num_threads())
    assert record["device"] == "cpu" and record["dtype"] == "float32"
    assert record["torch"] == torch.__version__
    assert record["cpu_logical_cores"] >= 1 and record["ram_bytes"] > 0
    assert record["torch_threads"] == torch.get_num_threads()
    assert record["cpu_model"]
    assert record["git_commit"]
    assert record["run_tag"].endswith("cpu_float32")
    json.dumps(record)  # serialisable as env.json


def test_run_tag_is_file_name_safe():
    assert run_tag("my host", "NVIDIA H100 80GB HBM3", "float16") == "my-host_NVIDIA-H100-80GB-HBM3_float16"
