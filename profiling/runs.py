"""Runs: one directory per run under reports/runs/<run tag>/, so runs never overwrite each other.

A run is one model on one device in one dtype on one host (plus a profile suffix when not `default`). The config's
`matrix:` (lists of models, dtypes, devices) expands into one run per combination; without it the config's own
model/device/dtype make the single run. Everything here is cheap (no torch): the workflow calls it before any job.
"""
from __future__ import annotations

import copy
import itertools
import re
import socket
from pathlib import Path

from .config import ConfigError, resolve_precision

RUNS_DIR = Path("reports") / "runs"


def model_slug(model: str) -> str:
    """A model's name as a tag part: the known name, the Hugging Face id with '/' as '-', or a directory's name."""
    path = Path(model)
    name = path.name if path.is_dir() else model.replace("/", "-")
    return name


def safe(text: str) -> str:
    """`text` with anything but letters, digits, '.', '_' and '-' replaced by '-' (file-name safe)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def run_tag(config: dict, host: str | None = None) -> str:
    """`<model>_<device>_<dtype>_<host>[_<profile>]` with device and dtype as the run really uses them."""
    precision = resolve_precision(config)
    parts = [model_slug(config["model"]), precision.device, precision.dtype, host or socket.gethostname()]
    if config.get("profile", "default") != "default":
        parts.append(config["profile"])
    return safe("_".join(parts))


def plan_runs(config: dict) -> dict[str, dict]:
    """{run tag: that run's config} for every run the config asks for (the matrix, or the single run)."""
    matrix = config.get("matrix") or {}
    models = matrix.get("models") or [config["model"]]
    dtypes = matrix.get("dtypes") or [config["dtype"]]
    devices = matrix.get("devices") or [config["device"]]
    runs = {}
    for model, dtype, device in itertools.product(models, dtypes, devices):
        run = copy.deepcopy(config)
        run.update(model=model, dtype=dtype, device=device)
        precision = resolve_precision(run)  # stored resolved, so `auto` and what it means are one run
        run.update(device=precision.device, dtype=precision.dtype)
        tag = run_tag(run)
        if tag in runs:
            raise ConfigError(f"matrix: two combinations give the same run {tag!r} (e.g. auto and the device it "
                              "resolves to); list each model, dtype and device once.")
        runs[tag] = run
    return runs


def run_dirs(reports: str | Path = "reports") -> list[Path]:
    """Every run directory under `reports`/runs that holds an env.json (including runs copied from elsewhere),
    oldest first (by the time its env.json records), so the first run made is the comparison's baseline."""
    import json

    def recorded(env_path: Path) -> tuple[str, str]:
        with open(env_path) as f:
            return json.load(f).get("recorded_at", ""), env_path.parent.name

    return [path.parent for path in sorted((Path(reports) / "runs").glob("*/env.json"), key=recorded)]
