"""What every experiment shares besides the metrics: the run-wide set-up (precision, threads, env record,
meta.json), the rendered prompt, and the one out-of-memory guard (out of memory is a data point, not a crash)."""
from __future__ import annotations

import gc
import time
from datetime import datetime, timezone

from . import env
from .config import apply_threads, confirm_device, resolve_precision
from .io import write_json
from .runs import run_tag


class Run:
    """The run-wide set-up of one experiment: precision, threads, env record, start time."""

    def __init__(self, experiment: str, settings: dict):
        self.experiment = experiment
        self.settings = settings
        self.precision = resolve_precision(settings)
        confirm_device(self.precision)
        self.threads = apply_threads(settings)
        self.env = env.collect(self.precision, self.threads, run_tag(settings), settings["model"])
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


def timed_loads(model_name: str, run: Run, clock=None):
    """Load model and tokenizer once, each a span of `clock`; return (model, tokenizer, load_model_s,
    load_tokenizer_s) in seconds."""
    from . import model as models
    from .timing import StageClock

    clock = clock or StageClock(run.precision.device)
    with clock.span("load_model"):
        model = models.load_model(model_name, run.precision)
    with clock.span("load_tokenizer"):
        tokenizer = models.load_tokenizer(model_name)
    return model, tokenizer, clock.seconds("load_model"), clock.seconds("load_tokenizer")


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


class OutOfMemoryGuard:
    """`with OutOfMemoryGuard(device) as oom: …` swallows an out-of-memory error raised in the block (any other
    error passes through). Afterwards `oom.hit` says whether it happened and `oom.message` says what it was; the
    memory is given back by `oom.record(...)` (or `oom.release()`), outside the block, where the failed run's
    tensors are no longer held by the traceback."""

    def __init__(self, device: str):
        self.device = device
        self.message: str | None = None

    @property
    def hit(self) -> bool:
        return self.message is not None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, error, traceback) -> bool:
        if error is None or not is_out_of_memory(error):
            return False
        self.message = (str(error).splitlines() or [type(error).__name__])[0][:120] or type(error).__name__
        return True

    def release(self) -> None:
        release_memory(self.device)

    def record(self, rows, variant: str, repeat: int = 0, **knobs) -> None:
        """Give the memory back and add the setting's `oom` row (value 1, request_id -1)."""
        from tqdm import tqdm

        self.release()
        rows.add(variant, repeat, "oom", 1, request_id=-1, **knobs)
        tqdm.write(f"{variant}: out of memory ({self.message}); recorded as a row, going on")
