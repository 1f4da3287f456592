"""The metric definitions (DESIGN.md "Metric definitions"), the tidy rows they are written as, and the one
recorder that turns a timed generation into those rows for every phase.

    ttft_s    request start -> first generated token on the host
    tpot_s    (e2e - ttft) / (output_tokens - 1)
    e2e_s     request start -> last token detokenized (or on the host, when nothing is detokenized)
    output_tok_per_s   generated tokens / wall seconds

Times are seconds. A clock's spans start at the request's start (StageClock's origin).
"""
from __future__ import annotations

import numbers

import pandas as pd

CONTRACT_COLUMNS = ["experiment", "variant", "repeat", "request_id", "metric", "value", "unit"]
RUN_ROW = -1  # request_id of a row that belongs to a whole run or batch, not to one request


def tpot_s(e2e_s: float, ttft_s: float, output_tokens: int) -> float:
    """Time per output token after the first: (e2e - ttft) / (output_tokens - 1), seconds."""
    if output_tokens < 2:
        return float("nan")
    return (e2e_s - ttft_s) / (output_tokens - 1)


def output_tok_per_s(generated_tokens: int, wall_s: float) -> float:
    """Generated tokens per second of wall time."""
    return generated_tokens / wall_s if wall_s > 0 else float("nan")


def decode_tok_per_s(batch_size: int, output_tokens: int, decode_wall_s: float) -> float:
    """Tokens made by the decode steps (all but the first of each sequence) per second of the decode phase."""
    return output_tok_per_s(batch_size * (output_tokens - 1), decode_wall_s)


def unit_of(metric: str) -> str:
    """The unit a metric's name declares by its suffix (DESIGN.md: units are SI in names)."""
    for suffix, unit in (("_tok_per_s", "tok/s"), ("_req_per_s", "req/s"), ("_bytes_per_s", "bytes/s"),
                         ("_flop_per_s", "FLOP/s"), ("_bytes", "bytes"), ("_flop", "FLOP"), ("_ms", "ms"),
                         ("_s", "s"), ("_tokens", "tokens"), ("_ratio", "ratio"), ("_j", "J")):
        if metric.endswith(suffix):
            return unit
    return ""


class Measurements:
    """Collects tidy rows (one observation each) for measurements.csv.

    Knob columns (batch_size, prompt_tokens, …) are passed as keyword arguments and become extra columns; integer
    knobs are written as integers (pandas' nullable Int64, so a column with empty cells stays integral).
    """

    def __init__(self, experiment: str):
        self.experiment = experiment
        self.rows: list[dict] = []

    def add(self, variant: str, repeat: int, metric: str, value: float, request_id: int = 0, **knobs) -> None:
        self.rows.append({"experiment": self.experiment, "variant": variant, "repeat": int(repeat),
                          "request_id": int(request_id), "metric": metric, "value": float(value),
                          "unit": unit_of(metric), **knobs})

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows)
        knob_columns = [c for c in frame.columns if c not in CONTRACT_COLUMNS]
        for column in knob_columns:
            values = [row[column] for row in self.rows if row.get(column) is not None]
            if values and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
                frame[column] = frame[column].astype("Int64")
        return frame[CONTRACT_COLUMNS + knob_columns]

    def write(self, path) -> None:
        self.frame().to_csv(path, index=False)


def record_generation(rows: Measurements, variant: str, repeat: int, clock, output_tokens: int,
                      request_ids=(0,), waited_s=None, per_run: bool = True, **knobs) -> dict:
    """The one recorder: rows of one timed generation (one request, or one batch of `len(request_ids)` requests
    that share every span) from its StageClock.

    Stage rows (request_id -1): `<stage>_s` for tokenize / prefill / detokenize when present, and every
    `decode_step_s` with its `step` (1, 2, …). Per request: ttft_s, tpot_s, e2e_s, counted from the request's
    start: the clock's origin, or `waited_s[i]` seconds before it for a request that queued (then queue_wait_s
    too). Per run (request_id -1, unless `per_run` is False because the caller writes its own run rows):
    output_tokens (per sequence) and output_tok_per_s (all sequences' tokens / the generation's e2e). Returns the generation's ttft, tpot, e2e and throughput (from the clock's origin).
    """
    names = {span.name for span in clock.spans}
    for stage in ("tokenize", "prefill", "detokenize"):
        if stage in names:
            rows.add(variant, repeat, f"{stage}_s", clock.seconds(stage), request_id=RUN_ROW, **knobs)
    step = 0
    for span in clock.spans:
        if span.name.startswith("decode_step["):
            step += 1
            rows.add(variant, repeat, "decode_step_s", span.seconds, request_id=RUN_ROW, step=step, **knobs)
    ttft = clock.end_of("prefill")
    e2e = clock.end_of("detokenize") if "detokenize" in names else max(s.start + s.seconds for s in clock.spans)
    tpot = tpot_s(e2e, ttft, output_tokens)
    request_ids = list(request_ids)
    for index, request_id in enumerate(request_ids):
        waited = 0.0 if waited_s is None else waited_s[index]
        if waited_s is not None:
            rows.add(variant, repeat, "queue_wait_s", waited, request_id=request_id, **knobs)
        rows.add(variant, repeat, "ttft_s", waited + ttft, request_id=request_id, **knobs)
        rows.add(variant, repeat, "tpot_s", tpot, request_id=request_id, **knobs)
        rows.add(variant, repeat, "e2e_s", waited + e2e, request_id=request_id, **knobs)
    throughput = output_tok_per_s(output_tokens * len(request_ids), e2e)
    if per_run:
        rows.add(variant, repeat, "output_tokens", output_tokens, request_id=RUN_ROW, **knobs)
        rows.add(variant, repeat, "output_tok_per_s", throughput, request_id=RUN_ROW, **knobs)
    return {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e, "output_tok_per_s": throughput}


def profiler_overhead_ratio(measurements: pd.DataFrame, traced_variant: str, untraced_variant: str) -> float:
    """How much the profiler slows a decode step: the traced run's median `decode_step_s` over the untraced runs'
    median at the same step numbers and the same batch sizes (like with like; NaN when either is missing).
    Traced runs are short, so only their steps are compared."""
    steps = measurements[measurements["metric"] == "decode_step_s"]
    traced = steps[steps["variant"] == traced_variant]
    untraced = steps[(steps["variant"] == untraced_variant) & steps["step"].isin(traced["step"])]
    if "batch_size" in steps:
        untraced = untraced[untraced["batch_size"].isin(traced["batch_size"])]
    if traced.empty or untraced.empty:
        return float("nan")
    return float(traced["value"].median() / untraced["value"].median())


def per_repeat(rows: pd.DataFrame, metric: str) -> list[float]:
    """One value of `metric` per repeat (the median of that repeat's rows, e.g. of its decode steps)."""
    return rows[rows["metric"] == metric].groupby("repeat")["value"].median().tolist()


def headline(label: str, values, unit: str, better: str) -> dict:
    """A headline figure of a phase for findings.json: its per-repeat samples (so runs can be compared with a
    confidence interval), unit, and whether `higher` or `lower` is better."""
    return {"label": label, "values": [float(v) for v in values], "unit": unit, "better": better}


def energy_per_token(rows: pd.DataFrame, meter_note: dict) -> dict:
    """Energy per generated token of a phase's timed generations: per repeat, energy_j / (output_tokens x
    batch_size) (joules per token), and its median with n; or, when no energy counter was readable, the reason.
    `meter_note` is what the experiment recorded (EnergyMeter.note(): "method", "missing" as a key, "detail").
    Returns {"per_token_j", "n", "method", "missing"}: per_token_j None and `missing` the meter's key (no_rapl,
    rapl_unreadable, no_nvml, nvml_no_energy_counter, or no_reading) when not measured."""
    energy = rows[rows["metric"] == "energy_j"]
    values = []
    for repeat, joules in energy.groupby("repeat")["value"].sum().items():
        of_repeat = rows[rows["repeat"] == repeat]
        tokens = of_repeat.loc[of_repeat["metric"] == "output_tokens", "value"].median()
        batch = of_repeat["batch_size"].median() if "batch_size" in of_repeat else 1
        if tokens and batch and tokens == tokens:
            values.append(float(joules) / (float(tokens) * float(batch)))
    measured = bool(values)
    return {"per_token_j": float(pd.Series(values).median()) if measured else None, "n": len(values),
            "method": meter_note.get("method") if measured else None,
            "missing": None if measured else (meter_note.get("missing") or "no_reading")}


def meta_notes(measurements_path) -> dict:
    """The notes of the meta.json written beside a phase's measurements.csv by the same step ({} when absent)."""
    import json
    from pathlib import Path

    meta = Path(measurements_path).parent / "meta.json"
    return json.loads(meta.read_text()).get("notes", {}) if meta.exists() else {}


def energy_meter(measurements_path) -> dict:
    """The energy meter a phase's experiment used (notes.energy: {"method", "missing"}); {} for a run made before
    energy was recorded."""
    return meta_notes(measurements_path).get("energy", {})


def record_energy(rows: Measurements, variant: str, repeat: int, joules, **knobs) -> None:
    """The `energy_j` row of one timed generation (nothing when the meter gave no reading)."""
    if joules is not None:
        rows.add(variant, repeat, "energy_j", joules, request_id=RUN_ROW, **knobs)
