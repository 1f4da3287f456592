"""What every experiment shares: tidy measurement rows, meta.json, model/tokenizer set-up, the prompt."""
from __future__ import annotations

import gc
import time
from datetime import datetime, timezone

import pandas as pd

from .. import env
from ..config import apply_threads, resolve_precision
from ..io import write_json

CONTRACT_COLUMNS = ["experiment", "variant", "repeat", "request_id", "metric", "value", "unit"]


def unit_of(metric: str) -> str:
    """The unit a metric's name declares by its suffix (DESIGN.md: units are SI in names)."""
    for suffix, unit in (("_tok_per_s", "tok/s"), ("_req_per_s", "req/s"), ("_bytes_per_s", "bytes/s"),
                         ("_flop_per_s", "FLOP/s"), ("_bytes", "bytes"), ("_flop", "FLOP"), ("_ms", "ms"),
                         ("_s", "s"), ("_tokens", "tokens"), ("_ratio", "ratio")):
        if metric.endswith(suffix):
            return unit
    return ""


class Measurements:
    """Collects tidy rows (one observation each) for measurements.csv.

    Knob columns (batch_size, prompt_tokens, …) are passed as keyword arguments and become extra columns.
    """

    def __init__(self, experiment: str):
        self.experiment = experiment
        self.rows: list[dict] = []

    def add(self, variant: str, repeat: int, metric: str, value: float, request_id: int = 0, **knobs) -> None:
        self.rows.append({"experiment": self.experiment, "variant": variant, "repeat": repeat,
                          "request_id": request_id, "metric": metric, "value": float(value),
                          "unit": unit_of(metric), **knobs})

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows)
        knob_columns = [c for c in frame.columns if c not in CONTRACT_COLUMNS]
        return frame[CONTRACT_COLUMNS + knob_columns]

    def write(self, path) -> None:
        self.frame().to_csv(path, index=False)


class Run:
    """The run-wide set-up of one experiment: precision, threads, env record, start time."""

    def __init__(self, experiment: str, settings: dict):
        self.experiment = experiment
        self.settings = settings
        self.precision = resolve_precision(settings)
        self.threads = apply_threads(settings)
        self.env = env.collect(self.precision, self.threads)
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.started = time.perf_counter()

    def write_meta(self, path, notes: dict) -> None:
        write_json(path, {
            "experiment": self.experiment,
            "run_tag": self.env["run_tag"],
            "config": self.settings,
            "env": self.env,
            "started_at": self.started_at,
            "ended_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_s": time.perf_counter() - self.started,
            "notes": notes,
        })


def render_prompt(tokenizer, prompt: str, chat_template: bool) -> str:
    """The text actually tokenized: the prompt inside the tokenizer's chat template when asked and available."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt


# ---- out of memory: a data point, not a crash ---------------------------------------------------------------
def is_out_of_memory(error: BaseException) -> bool:
    """True for the errors that mean "this setting does not fit": torch's CUDA OutOfMemoryError, the CPU
    allocator's RuntimeError ("can't allocate memory" / "out of memory"), and Python's MemoryError."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def release_memory(device: str) -> None:
    """Give back what a failed setting left allocated, so the next setting starts clean."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
