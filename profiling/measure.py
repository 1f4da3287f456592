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


# ---- adaptive repeats and warm-ups --------------------------------------------------------------------------------
class RepeatPolicy:
    """How many times a timed measurement runs (DESIGN.md "Measurement rules"), from the config's run-wide
    `adaptive` block (read here, once) and the phase's own `warmup` (fewest warm-up calls) and `repeats` (most
    timed repeats):

        repeats   go on until the 95% CI of every watched figure's median is within ±ci_half_width of it (a
                  share: 0.05 = ±5%), never fewer than min_repeats (nor than 1), at most the phase's `repeats`;
                  a figure that stops at the cap is flagged by the analysis.
        warm-up   goes on until a call's last two decode steps are within warmup_settle of each other (first-call
                  costs paid), at least the phase's `warmup` calls, at most warmup_max.
    """

    DEFAULTS = {"min_repeats": 3, "ci_half_width": 0.05, "warmup_settle": 0.10, "warmup_max": 3}

    def __init__(self, settings: dict, phase_cfg: dict):
        adaptive = {**self.DEFAULTS, **(settings.get("adaptive") or {})}
        self.max_repeats = int(phase_cfg["repeats"])
        self.min_repeats = max(1, min(int(adaptive["min_repeats"]), self.max_repeats))
        self.ci_half_width = float(adaptive["ci_half_width"])
        self.min_warmup = int(phase_cfg.get("warmup", 1))
        self.max_warmup = max(self.min_warmup, int(adaptive["warmup_max"]))
        self.warmup_settle = float(adaptive["warmup_settle"])

    def enough(self, samples: dict) -> bool:
        """Whether every watched figure (name -> its values so far, one per repeat) may stop repeating."""
        from .stats import tight_enough

        return all(tight_enough(values, self.ci_half_width, self.min_repeats, self.max_repeats)
                   for values in samples.values())

    def settled(self, clock) -> bool:
        """Whether a warm-up call's decode steps have settled: its last two steps within warmup_settle of each
        other (a call with fewer than two steps counts as settled)."""
        steps = [span.seconds for span in clock.spans if span.name.startswith("decode_step[")]
        if len(steps) < 2:
            return True
        return abs(steps[-1] - steps[-2]) <= self.warmup_settle * max(steps[-2], 1e-12)

    def warm_up(self, call) -> int:
        """Run `call()` (one untimed generation returning its StageClock) until it settles; returns the calls made
        (none when the phase's warmup is 0: no warm-up asked for)."""
        if self.min_warmup == 0:
            return 0
        calls = 0
        while calls < self.max_warmup:
            clock = call()
            calls += 1
            if calls >= self.min_warmup and self.settled(clock):
                break
        return calls

    def describe(self) -> dict:
        """The policy as meta.json records it."""
        return {"min_repeats": self.min_repeats, "max_repeats": self.max_repeats,
                "ci_half_width": self.ci_half_width, "min_warmup": self.min_warmup, "max_warmup": self.max_warmup,
                "warmup_settle": self.warmup_settle}


def repeat_until_tight(measure, policy: RepeatPolicy, desc: str = "repeats") -> int:
    """Call `measure(repeat)` for repeat = 0, 1, … until `policy.enough(samples)`; `measure` returns the watched
    figures of that repeat as {name: value}. Returns the number of repeats made."""
    from tqdm import tqdm

    samples: dict = {}
    repeat = 0
    with tqdm(total=policy.max_repeats, desc=desc, unit="repeat", leave=False) as bar:
        while repeat < policy.max_repeats:
            for name, value in measure(repeat).items():
                samples.setdefault(name, []).append(value)
            repeat += 1
            bar.update(1)
            if policy.enough(samples):
                break
    return repeat
