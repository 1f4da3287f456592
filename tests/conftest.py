"""Shared fixtures: the tiny random model (built in memory, no files) and paths."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny random Llama, seed 0."""
    from profiling.model import build_tiny_model

    torch.manual_seed(0)
    return build_tiny_model(seed=0)


@pytest.fixture
def settings():
    """A checked config (tiny model, CPU) as the experiments receive it."""
    from profiling.config import check_config, experiment_config

    config = check_config({"model": "tiny-random", "device": "cpu", "threads": 1,
                           "d1": {"max_new_tokens": 4, "warmup": 1, "repeats": 2, "load_repeats": 1,
                                  "trace_decode_steps": 2, "top_ops": 5}})
    return experiment_config(config, "d1")
