"""A learner can recompute the report's numbers from its data and get the number printed.

Each function below recomputes ONE printed figure of report.md *independently* from the tidy data the experiments
wrote (measurements.csv, requests.csv, meta.json; pandas only, never the phases' analysis functions, which would
make the check circular), following the metric definitions of DESIGN.md / profiling/metrics.py and the
definitions written in each phase's analysis docstring and in the report's own sentences, and locates the printed
value in report.md by a label around it (a sentence's words or a table's column header and row key). The one
exception is D2's analytic FLOPs and bytes of a forward pass, a model of the hardware work (not a measurement):
the roof-share figure takes them from `costs.py`, and recomputes everything else (which runs, which rows, which
median, which roof) from the data.

A figure agrees when |printed - recomputed| <= half of the printed number's last digit + 0.5% of the recomputed
value. A figure taken from the wrong subset (warm-up or traced runs included, the wrong batch size, a mean
instead of a median) is what this catches.

    pytest tests/test_recomputation.py            # on the smoke run of the real workflow (conftest.workflow_run)
    python tests/test_recomputation.py RUN_DIR    # a table for any run directory (reports/runs/<run tag>)
"""
from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

PHASES = ["d1_request", "d2_bottlenecks", "d3_batching", "d3_kvcache", "d4_serving", "d5_variants"]
TOLERANCE = 0.005  # relative, on top of the printed rounding
WRONG = 0.05  # the issue's bar: a figure off by more than this is wrong whatever its rounding


class Absent(Exception):
    """The figure is not part of this run (its phase skipped it under this config): skipped, with the reason."""


class NotFound(Exception):
    """The printed figure's label was not found in report.md (a failure: the report changed or lost it)."""


# ---- reading the printed number ---------------------------------------------------------------------------------
NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
UNITS = {"ms": 1e-3, "µs": 1e-6, "s": 1.0, "GB/s": 1e9, "GFLOP/s": 1e9, "tok/s": 1.0, "tokens/s": 1.0,
         "req/s": 1.0, "%": 0.01, "×": 1.0, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "B": 1.0}
FIGURE = re.compile(rf"({NUMBER})\s?(GFLOP/s|GB/s|tokens/s|tok/s|req/s|KiB|MiB|GiB|ms|µs|s|%|×|B)?(?![\w/])")


@dataclass
class Printed:
    """A number as the report prints it, in SI (seconds, shares 0-1, bytes, bytes/s) with its rounding."""

    value: float
    half_digit: float  # half of the last printed digit, in SI
    text: str


def printed(text: str) -> Printed:
    """The first number (with its unit, if any) in `text`."""
    found = FIGURE.search(text)
    if not found:
        raise NotFound(f"no number in {text!r}")
    return _printed(found.group(1), found.group(2) or "")


def printed_all(text: str) -> list[Printed]:
    """Every number (with its unit) in `text`, e.g. the "p50 / p99" of one cell."""
    return [_printed(number, unit or "") for number, unit in FIGURE.findall(text)]


def _printed(number: str, unit: str) -> Printed:
    decimals = len(number.split(".")[1]) if "." in number else 0
    scale = UNITS.get(unit, 1.0)
    return Printed(float(number.replace(",", "")) * scale, 0.5 * 10**-decimals * scale, f"{number} {unit}".strip())


# ---- a run: its report and its data -----------------------------------------------------------------------------
class Run:
    """One run directory: report.md (English edition) and the tidy data under data/<phase>/."""

    def __init__(self, run_dir):
        self.dir = Path(run_dir)
        self.report = (self.dir / "report.md").read_text(encoding="utf-8")
        self._frames: dict = {}
        self.located: tuple[int, int] | None = None  # where the last printed figure found sits in the report

    # data
    def csv(self, phase: str, name: str = "measurements.csv") -> pd.DataFrame:
        key = (phase, name)
        if key not in self._frames:
            path = self.dir / "data" / phase / name
            if not path.exists():
                raise Absent(f"{phase}/{name} missing")
            self._frames[key] = pd.read_csv(path)
        return self._frames[key]

    def meta(self, phase: str) -> dict:
        return json.loads((self.dir / "data" / phase / "meta.json").read_text())

    def config(self, phase: str) -> dict:
        return self.meta(phase)["config"][phase]

    # report
    def section(self, phase: str) -> str:
        """The text of one phase's section: from its anchor to the next phase's anchor."""
        return self.report[slice(*self.section_span(phase))]

    def section_span(self, phase: str) -> tuple[int, int]:
        anchor = f'<a id="{phase}"></a>'
        start = self.report.find(anchor)
        if start < 0:
            raise NotFound(f"no section {phase}")
        start += len(anchor)
        ends = [self.report.find(f'<a id="{other}"></a>', start) for other in PHASES if other != phase]
        ends = [end for end in ends if end > 0]
        return start, min(ends) if ends else len(self.report)

    def find(self, phase: str, pattern: str) -> str:
        """The group `n` of the first match of `pattern` in the phase's section. A space in the pattern matches any
        run of white space and blockquote marks (sentences wrap; conclusions are quoted)."""
        regex = pattern.replace(" ", r"[\s>]+").replace("NUM", NUMBER)
        start, end = self.section_span(phase)
        found = re.compile(regex).search(self.report, start, end)
        if not found:
            raise NotFound(f"{phase}: /{pattern}/ not in the report")
        self.located = found.span("n")
        return found.group("n")

    def tables(self, phase: str) -> list[tuple[list[str], list[tuple[list[str], int]]]]:
        """Every Markdown table of the section: (header cells, rows as (cells, offset of the line in the report))."""
        tables, block = [], []
        start, end = self.section_span(phase)
        offset = start
        for line in self.report[start:end].split("\n") + [""]:
            if line.startswith("|"):
                block.append(([cell.strip() for cell in line.strip().strip("|").split("|")], offset))
            elif block:
                if len(block) >= 2:
                    tables.append((block[0][0], block[2:]))
                block = []
            offset += len(line) + 1
        return tables

    def cell(self, phase: str, column: str, keys: dict) -> str:
        """The cell under the header `column` (exact, else the first header starting with it) of the first row
        whose cells under the headers named by `keys` (same matching) read exactly the given text (Markdown bold
        and code marks ignored)."""
        def plain(text):
            return text.replace("**", "").replace("`", "").strip()

        def index(header, name):
            for exact in (True, False):
                for i, cell in enumerate(header):
                    if (cell == name) if exact else cell.startswith(name):
                        return i
            return None

        wanted = {name: str(value) for name, value in keys.items()}
        for header, rows in self.tables(phase):
            at = index(header, column)
            key_at = {name: index(header, name) for name in wanted}
            if at is None or None in key_at.values():
                continue
            for row, offset in rows:
                if len(row) == len(header) and all(plain(row[key_at[name]]) == value for name, value in wanted.items()):
                    line = self.report[offset:self.report.find("\n", offset)]
                    bars = [i for i, char in enumerate(line) if char == "|"]
                    self.located = (offset + bars[at] + 1, offset + bars[at + 1])
                    return row[at]
        raise NotFound(f"{phase}: no table row {wanted} with a column {column!r}")


# ---- the figures ------------------------------------------------------------------------------------------------
@dataclass
class Figure:
    name: str
    phase: str
    where: str
    compute: Callable[[Run], tuple[Printed, float]]


FIGURES: list[Figure] = []


def phase_of(name: str) -> str:
    """A figure's phase, from its name's prefix (D1 …, D3 KV …)."""
    if name.startswith("D3 KV"):
        return "d3_kvcache"
    return {"D1": "d1_request", "D2": "d2_bottlenecks", "D3": "d3_batching", "D4": "d4_serving",
            "D5": "d5_variants"}[name[:2]]


def figure(name: str, where: str):
    """Register a recomputation: `compute(run)` returns (the printed figure, the recomputed value in SI)."""
    def register(compute):
        FIGURES.append(Figure(name, phase_of(name), where, compute))
        return compute
    return register


def rows(frame: pd.DataFrame, metric: str, **knobs) -> pd.Series:
    """The values of `metric` in the rows whose knob columns equal `knobs`."""
    selected = frame[frame["metric"] == metric]
    for column, value in knobs.items():
        selected = selected[selected[column] == value]
    return selected["value"].astype(float)


def per_repeat_median(frame: pd.DataFrame, metric: str) -> pd.Series:
    """One value per repeat: the median of that repeat's rows of `metric` (e.g. of its decode steps)."""
    return frame[frame["metric"] == metric].groupby("repeat")["value"].median()


# D1 — the untraced requests (variant "untraced"); the traced run and the warm-up are not timed figures.
def d1_untraced(run: Run) -> pd.DataFrame:
    m = run.csv("d1_request")
    return m[m["variant"] == "untraced"]


@figure("D1 prefill p50", "D1 conclusion: 'The prefill of N prompt tokens takes …'")
def d1_prefill(run):
    shown = printed(run.find("d1_request", r"The prefill of \d+ prompt tokens takes (?P<n>NUM ms)"))
    return shown, rows(d1_untraced(run), "prefill_s").median()


@figure("D1 decode step p50", "D1 conclusion: '… one decode step (X ms, ±…'")
def d1_decode_step(run):
    shown = printed(run.find("d1_request", r"one decode step \((?P<n>NUM ms),"))
    return shown, per_repeat_median(d1_untraced(run), "decode_step_s").median()  # each request's median step


@figure("D1 decode stage p50", "D1 stage table, row decode, p50")
def d1_decode_stage(run):
    shown = printed(run.cell("d1_request", "p50", {"stage": "decode"}))
    steps = d1_untraced(run)
    return shown, steps[steps["metric"] == "decode_step_s"].groupby("repeat")["value"].sum().median()


@figure("D1 e2e p50", "D1 stage table, row e2e, p50")
def d1_e2e(run):
    return printed(run.cell("d1_request", "p50", {"stage": "e2e"})), rows(d1_untraced(run), "e2e_s").median()


@figure("D1 TTFT p50", "D1 conclusion: 'Time to first token is …'")
def d1_ttft(run):
    shown = printed(run.find("d1_request", r"Time to first token is (?P<n>NUM ms)"))
    return shown, rows(d1_untraced(run), "ttft_s").median()


@figure("D1 TPOT p50", "D1 conclusion: 'each token costs … (TPOT)'")
def d1_tpot(run):
    shown = printed(run.find("d1_request", r"each token costs (?P<n>NUM ms) \(TPOT\)"))
    return shown, rows(d1_untraced(run), "tpot_s").median()


@figure("D1 output tokens/s p50", "D1 conclusion: 'the request delivers … tokens/s'")
def d1_tok_per_s(run):
    shown = printed(run.find("d1_request", r"request delivers (?P<n>NUM) tokens/s"))
    return shown, rows(d1_untraced(run), "output_tok_per_s").median()


@figure("D1 model load p50", "D1 stage table, row load_model, p50")
def d1_load_model(run):
    shown = printed(run.cell("d1_request", "p50", {"stage": "load_model"}))
    return shown, rows(d1_untraced(run), "load_model_s").median()


# D2 — ceilings (variant "ceilings": one row per repeat, work_bytes / work_flops per repeat), the batch sweep
# (variants b<B>; traced_b<B> and thread-scaling runs are not roofline rows).
def d2_ceiling_rows(run: Run, name: str) -> pd.DataFrame:
    m = run.csv("d2_bottlenecks")
    return m[(m["variant"] == "ceilings") & (m["metric"] == f"{name}_s")]


def d2_bandwidth_roof(run: Run) -> float:
    """The roof: the fastest repeat of any bandwidth ceiling (every ceiling that moves bytes but the matmul)."""
    m = run.csv("d2_bottlenecks")
    ceilings = m[(m["variant"] == "ceilings") & (m["metric"] != "matmul_s") & (m["work_bytes"].fillna(0) > 0)]
    return float((ceilings["work_bytes"] / ceilings["value"]).max())


@figure("D2 bandwidth roof", "D2 ceilings: 'the fastest repeat of the faster bandwidth ceiling, NAME (X GB/s)'")
def d2_roof(run):
    shown = printed(run.find("d2_bottlenecks", r"faster bandwidth ceiling, \w+ \((?P<n>NUM GB/s)\)"))
    return shown, d2_bandwidth_roof(run)


@figure("D2 matmul FLOP/s roof", "D2 ceilings: '… and of the matmul (X GFLOP/s)'")
def d2_matmul(run):
    shown = printed(run.find("d2_bottlenecks", r"and of the matmul \((?P<n>NUM GFLOP/s)\)"))
    matmul = d2_ceiling_rows(run, "matmul")
    return shown, float((matmul["work_flops"] / matmul["value"]).max())


@figure("D2 copy bandwidth median", "D2 ceilings table, row memory_bandwidth, median")
def d2_copy(run):
    shown = printed(run.cell("d2_bottlenecks", "median", {"ceiling": "memory_bandwidth"}))
    copy = d2_ceiling_rows(run, "memory_bandwidth")
    return shown, float(copy["work_bytes"].iloc[0] / copy["value"].median())  # bytes over the median repeat time


@figure("D2 tiny-operator dispatch", "D2 ceilings table, row tiny_op, median (µs per operator)")
def d2_tiny_op(run):
    shown = printed(run.cell("d2_bottlenecks", "median", {"ceiling": "tiny_op"}))
    tiny = d2_ceiling_rows(run, "tiny_op")
    return shown, float((tiny["value"] / tiny["per_call"]).median())


def d2_sweep(run: Run) -> pd.DataFrame:
    m = run.csv("d2_bottlenecks")
    return m[m["variant"].astype(str).str.fullmatch(r"b\d+")]


def d2_seconds_per_forward(run: Run, batch: int, metric: str) -> float:
    """A roofline point's time per forward: per run (repeat), its seconds / its forward passes; median over runs."""
    sweep = d2_sweep(run)
    own = sweep[(sweep["metric"] == metric) & (sweep["batch_size"] == batch)]
    per_run = own.groupby(["repeat", "request_id"])["value"]
    return float((per_run.sum() / per_run.size()).median())


def d2_point(run: Run, column: str, batch: int, stage: str) -> str:
    """A cell of D2's roofline table, in the row of the batch sweep's point at `batch` and `stage`."""
    return run.cell("d2_bottlenecks", column, {"source · variant": f"d2_bottlenecks · b{batch}", "stage": stage})


def d2_batches(run: Run) -> list[int]:
    return sorted(int(b) for b in d2_sweep(run)["batch_size"].dropna().unique())


@figure("D2 decode step, batch 1", "D2 roofline table, row 'd2_bottlenecks · b1' decode, time per forward")
def d2_decode_b1(run):
    shown = printed(d2_point(run, "time per forward", 1, "decode"))
    return shown, d2_seconds_per_forward(run, 1, "decode_step_s")


@figure("D2 decode step, largest batch", "D2 roofline table, row 'd2_bottlenecks · b<max>' decode, time per forward")
def d2_decode_bmax(run):
    batch = d2_batches(run)[-1]
    shown = printed(d2_point(run, "time per forward", batch, "decode"))
    return shown, d2_seconds_per_forward(run, batch, "decode_step_s")


@figure("D2 prefill, batch 1", "D2 roofline table, row 'd2_bottlenecks · b1' prefill, time per forward")
def d2_prefill_b1(run):
    shown = printed(d2_point(run, "time per forward", 1, "prefill"))
    return shown, d2_seconds_per_forward(run, 1, "prefill_s")


@figure("D2 decode tokens/s, largest batch", "D2 conclusion: 'delivering X tokens/s against Y tokens/s at batch 1'")
def d2_decode_tok_per_s(run):
    batch = d2_batches(run)[-1]
    shown = printed(run.find("d2_bottlenecks", r"delivering (?P<n>NUM) tokens/s against"))
    return shown, batch / d2_seconds_per_forward(run, batch, "decode_step_s")


@figure("D2 roof share, decode batch 1", "D2 roofline table, row 'd2_bottlenecks · b1' decode, roof share")
def d2_roof_share(run):
    from profiling.phases.d2_bottlenecks.costs import decode_context_tokens, decode_step_cost
    from profiling.shapes import Shapes

    shown = printed(d2_point(run, "roof share", 1, "decode"))
    notes = run.meta("d2_bottlenecks")["notes"]
    shapes, element = Shapes(**notes["model_shapes"]), int(notes["bytes_per_element"])
    sweep = d2_sweep(run)
    steps = sweep[(sweep["metric"] == "decode_step_s") & (sweep["batch_size"] == 1)].copy()
    costs = [decode_step_cost(shapes, 1, decode_context_tokens(int(p), int(s)), element)
             for p, s in zip(steps["prompt_tokens"], steps["step"])]
    steps["flops"], steps["bytes"] = [c.flops for c in costs], [c.bytes for c in costs]
    per_run = steps.groupby("repeat")[["flops", "value"]].sum()
    achieved = (per_run["flops"] / per_run["value"]).median()  # FLOP/s, median over runs
    matmul = d2_ceiling_rows(run, "matmul")
    peak = float((matmul["work_flops"] / matmul["value"]).max())
    roof = min(peak, steps["flops"].sum() / steps["bytes"].sum() * d2_bandwidth_roof(run))
    return shown, achieved / roof


# D3 batching — static sweep (variants static_b<B>; traced_b<B> and generate_b<B> are other subsets).
def d3_static(run: Run, batch: int) -> pd.DataFrame:
    m = run.csv("d3_batching")
    return m[m["variant"] == f"static_b{batch}"]


def d3_largest(run: Run) -> int:
    m = run.csv("d3_batching")
    static = m[m["variant"].str.fullmatch(r"static_b\d+")]
    ran = [int(b) for b, group in static.groupby("batch_size") if not (group["metric"] == "oom").any()]
    return max(ran)


def d3_static_median(run, column: str, metric: str):
    """(printed, recomputed) of the static batch table's `column` at the largest batch: the median of `metric`."""
    batch = d3_largest(run)
    shown = printed(run.cell("d3_batching", column, {"batch": batch}))
    return shown, rows(d3_static(run, batch), metric).median()


@figure("D3 static output tok/s, largest batch", "D3 static batch table, row batch=<max>, output tok/s p50")
def d3_static_tok_per_s(run):
    return d3_static_median(run, "output tok/s p50", "output_tok_per_s")


@figure("D3 static TTFT p50, largest batch", "D3 static batch table, row batch=<max>, TTFT p50")
def d3_static_ttft(run):
    return d3_static_median(run, "TTFT p50", "ttft_s")


@figure("D3 static TPOT p50, largest batch", "D3 static batch table, row batch=<max>, TPOT p50")
def d3_static_tpot(run):
    return d3_static_median(run, "TPOT p50", "tpot_s")


@figure("D3 static e2e p95, largest batch", "D3 static batch table, row batch=<max>, e2e p95 (over every request)")
def d3_static_e2e_p95(run):
    batch = d3_largest(run)
    shown = printed(run.cell("d3_batching", "e2e p95", {"batch": batch}))
    return shown, float(np.percentile(rows(d3_static(run, batch), "e2e_s"), 95))  # one row per request


@figure("D3 batch speed-up", "D3: 'Batch L over batch S, output tokens/s: **X×**'")
def d3_batch_speedup(run):
    shown = printed(run.find("d3_batching", r"over batch \d+, output tokens/s: \*\*(?P<n>NUM×)\*\*"))
    sizes = sorted(run.config("d3_batching")["compare_batch_sizes"])
    small, large = sizes[0], min(sizes[-1], d3_largest(run))
    tok = {b: rows(d3_static(run, b), "output_tok_per_s").median() for b in (small, large)}
    return shown, tok[large] / tok[small]


@figure("D3 engine / generate decode, batch 1", "D3 engine-versus-generate table, row batch=1, ratio")
def d3_engine_vs_generate(run):
    shown = printed(run.cell("d3_batching", "ratio [paired", {"batch": 1}))
    m = run.csv("d3_batching")
    engine = rows(m[m["variant"] == "static_b1"], "decode_tok_per_s").median()
    generate = rows(m[m["variant"] == "generate_b1"], "decode_tok_per_s").median()
    return shown, engine / generate


def d3_operating(run: Run) -> tuple[str, pd.DataFrame]:
    """The dynamic batcher's operating point (Poisson at the grid's rate, the operating window and cap)."""
    grid = run.config("d3_batching")["dynamic"]
    m = run.csv("d3_batching")
    dynamic = m[m["variant"].str.startswith("dyn_")]
    own = dynamic[(dynamic["arrival"] == "poisson") & (dynamic["rate_req_per_s"] == float(grid["rate_req_per_s"]))
                  & (dynamic["wait_window_ms"] == float(grid["operating_window_ms"]))
                  & (dynamic["max_batch"] == int(grid["operating_max_batch"]))]
    if own.empty:
        raise Absent("no dynamic run at the operating point")
    variant = own["variant"].iloc[0]
    return variant, dynamic[dynamic["variant"] == variant]


@figure("D3 dynamic e2e p95", "D3 dynamic table, row of the operating point, e2e p95")
def d3_dynamic_e2e_p95(run):
    variant, own = d3_operating(run)
    shown = printed(run.cell("d3_batching", "e2e p95", {"setting": variant}))
    return shown, float(np.percentile(rows(own, "e2e_s"), 95))


@figure("D3 dynamic e2e p50", "D3 dynamic table, row of the operating point, e2e p50")
def d3_dynamic_e2e_p50(run):
    variant, own = d3_operating(run)
    return printed(run.cell("d3_batching", "e2e p50", {"setting": variant})), rows(own, "e2e_s").median()


@figure("D3 dynamic mean batch", "D3 dynamic table, row of the operating point, mean batch")
def d3_dynamic_mean_batch(run):
    variant, own = d3_operating(run)
    return printed(run.cell("d3_batching", "mean batch", {"setting": variant})), rows(own, "achieved_batch_size").mean()


@figure("D3 dynamic goodput", "D3 dynamic table, row of the operating point, goodput req/s")
def d3_dynamic_goodput(run):
    variant, own = d3_operating(run)
    cfg = run.config("d3_batching")
    shown = printed(run.cell("d3_batching", "goodput req/s", {"setting": variant}))
    per_request = own[own["request_id"] != -1].pivot_table(index=["repeat", "request_id"], columns="metric",
                                                            values="value")
    good = (per_request["ttft_s"] <= cfg["slo_ttft_s"]) & (per_request["tpot_s"] <= cfg["slo_tpot_s"])
    walls = own[own["metric"] == "wall_s"].set_index("repeat")["value"]
    return shown, float((good.groupby(level="repeat").sum() / walls).median())


# D3 KV cache — batch-1 latency settings (p<P>_cache_<on|off>_b1); traced_* and the b<B> memory runs excluded.
def kv_latency(run: Run, prompt: int, cache: bool) -> pd.DataFrame:
    m = run.csv("d3_kvcache")
    return m[m["variant"] == f"p{prompt}_cache_{'on' if cache else 'off'}_b1"]


def kv_per_run(frame: pd.DataFrame, metric: str) -> pd.Series:
    """One value of a per-run metric per repeat (the run row, or request 0's)."""
    own = frame[(frame["metric"] == metric) & frame["request_id"].isin([-1, 0])]
    return own.groupby("repeat")["value"].first()


def kv_prompts(run: Run) -> list[int]:
    return sorted(int(p) for p in run.meta("d3_kvcache")["config"]["d3_kvcache"]["prompt_lengths"])


@figure("D3 KV per-token p50, cache on, shortest prompt", "D3 KV prompt × cache table, row <min> on, per-token p50")
def kv_on_short(run):
    prompt = kv_prompts(run)[0]
    shown = printed(run.cell("d3_kvcache", "per-token p50", {"prompt": prompt, "cache": "on"}))
    return shown, kv_per_run(kv_latency(run, prompt, True), "tpot_s").median()


@figure("D3 KV per-token p50, no cache, longest prompt", "D3 KV prompt × cache table, row <max> off, per-token p50")
def kv_off_long(run):
    prompt = kv_prompts(run)[-1]
    shown = printed(run.cell("d3_kvcache", "per-token p50", {"prompt": prompt, "cache": "off"}))
    return shown, kv_per_run(kv_latency(run, prompt, False), "tpot_s").median()


@figure("D3 KV prefill p50, cache on, longest prompt", "D3 KV prompt × cache table, row <max> on, prefill p50")
def kv_prefill_long(run):
    prompt = kv_prompts(run)[-1]
    shown = printed(run.cell("d3_kvcache", "prefill p50", {"prompt": prompt, "cache": "on"}))
    return shown, kv_per_run(kv_latency(run, prompt, True), "prefill_s").median()


@figure("D3 KV cache speed-up, longest prompt", "D3 KV prompt × cache table, row <max> on, speed-up")
def kv_speedup(run):
    prompt = kv_prompts(run)[-1]
    shown = printed(run.cell("d3_kvcache", "speed-up", {"prompt": prompt, "cache": "on"}))
    on, off = kv_latency(run, prompt, True), kv_latency(run, prompt, False)
    tokens = int(min(rows(on, "output_tokens").min(), rows(off, "output_tokens").min()))

    def time_to_tokens(frame):  # prefill + decode steps 1 .. tokens - 1, per repeat
        prefill = kv_per_run(frame, "prefill_s")
        steps = frame[(frame["metric"] == "decode_step_s") & (frame["step"] < tokens)]
        return prefill + steps.groupby("repeat")["value"].sum().reindex(prefill.index, fill_value=0.0)

    return shown, time_to_tokens(off).median() / time_to_tokens(on).median()


def kv_memory_setting(run: Run) -> tuple[int, int, pd.DataFrame]:
    """The largest cache measured: longest prompt at the largest batch, cache on."""
    prompt, batch = kv_prompts(run)[-1], max(int(b) for b in run.config("d3_kvcache")["batch_sizes"])
    m = run.csv("d3_kvcache")
    own = m[(m["variant"] == f"p{prompt}_cache_on_b{batch}")]
    if own.empty or (own["metric"] == "oom").any():
        raise Absent(f"prompt {prompt} × batch {batch} ran out of memory")
    return prompt, batch, own


@figure("D3 KV bytes measured, longest prompt × largest batch", "D3 KV memory table, row <max> × <max B>, measured")
def kv_bytes_measured(run):
    prompt, batch, own = kv_memory_setting(run)
    shown = printed(run.cell("d3_kvcache", "measured", {"prompt": prompt, "batch": batch}))
    return shown, float(rows(own, "kv_cache_bytes").iloc[0])


@figure("D3 KV bytes by formula, longest prompt × largest batch", "D3 KV memory table, row <max> × <max B>, formula")
def kv_bytes_formula(run):
    prompt, batch, own = kv_memory_setting(run)
    shown = printed(run.cell("d3_kvcache", "formula", {"prompt": prompt, "batch": batch}))
    notes = run.meta("d3_kvcache")["notes"]
    s = notes["shapes"]
    positions = prompt + int(rows(own, "output_tokens").iloc[0]) - 1  # the last generated token is never cached
    return shown, 2.0 * s["layers"] * s["kv_heads"] * s["head_dim"] * positions * batch * notes["bytes_per_element"]


# D4 serving — per-request CSV (timed requests only: the load generator's warm-ups are not records), the run's
# duration from meta.json.
def d4_requests(run: Run, variant: str) -> pd.DataFrame:
    r = run.csv("d4_serving", "requests.csv")
    own = r[r["variant"] == variant]
    if own.empty:
        raise Absent(f"no run {variant}")
    return own


def d4_done(run: Run, variant: str) -> pd.DataFrame:
    own = d4_requests(run, variant)
    return own[own["success"].astype(str).str.lower() == "true"]


def d4_duration(run: Run, variant: str) -> float:
    return float(run.meta("d4_serving")["notes"]["runs"][variant]["duration_s"])


@figure("D4 ablation paged: TTFT p50", "D4 ablation table, row paged, TTFT p50")
def d4_paged_ttft_p50(run):
    shown = printed_all(run.cell("d4_serving", "TTFT p50", {"step": "paged"}))[0]
    return shown, d4_done(run, "ablation_paged")["ttft_s"].median()


@figure("D4 ablation paged: TTFT p99", "D4 ablation table, row paged, TTFT p99")
def d4_paged_ttft_p99(run):
    shown = printed_all(run.cell("d4_serving", "TTFT p50", {"step": "paged"}))[1]
    return shown, float(np.percentile(d4_done(run, "ablation_paged")["ttft_s"], 99))


@figure("D4 ablation paged: TPOT p50", "D4 ablation table, row paged, TPOT p50")
def d4_paged_tpot(run):
    shown = printed_all(run.cell("d4_serving", "TPOT p50", {"step": "paged"}))[0]
    return shown, d4_done(run, "ablation_paged")["tpot_s"].dropna().median()


@figure("D4 ablation slab: output tok/s", "D4 ablation table, row slab, output tok/s")
def d4_slab_tok_per_s(run):
    shown = printed(run.cell("d4_serving", "output tok/s", {"step": "slab"}))
    return shown, d4_done(run, "ablation_slab")["output_tokens"].sum() / d4_duration(run, "ablation_slab")


@figure("D4 saturated rate", "D4: '… saturated rate, X req/s: its requests / duration …'")
def d4_saturated_rate(run):
    shown = printed(run.find("d4_serving", r"saturated rate, (?P<n>NUM) req/s"))
    return shown, len(d4_done(run, "continuous_sat")) / d4_duration(run, "continuous_sat")


@figure("D4 saturated output tok/s", "D4 answer: '… saturated output X tok/s'")
def d4_saturated_tok_per_s(run):
    shown = printed(run.find("d4_serving", r"saturated output (?P<n>NUM) tok/s"))
    return shown, d4_done(run, "continuous_sat")["output_tokens"].sum() / d4_duration(run, "continuous_sat")


@figure("D4 capacity (ours)", "D4 capacity: 'Capacity: ours [at least] X req/s'")
def d4_capacity(run):
    shown = printed(run.find("d4_serving", r"Capacity: ours (?:at least )?(?P<n>NUM) req/s"))
    cfg = run.config("d4_serving")
    r = run.csv("d4_serving", "requests.csv")
    sweep = r[(r["server"] == "ours") & r["variant"].str.startswith("continuous_") & (r["workload"] == "random")
              & np.isfinite(r["request_rate"].astype(float))]
    within = []
    for rate, requests in sweep.groupby("request_rate"):
        good = (requests["success"].astype(str).str.lower() == "true") & (requests["ttft_s"] <= cfg["slo_ttft_s"]) \
            & (requests["tpot_s"].fillna(0) <= cfg["slo_tpot_s"])
        if good.mean() >= cfg["slo_attainment"]:
            within.append(float(rate))
    return shown, max(within) if within else 0.0


@figure("D4 prefix-cache TTFT ratio", "D4 measured targets: 'TTFT p50 with the shared prefix cached ÷ without'")
def d4_prefix_ratio(run):
    shown = printed(run.find("d4_serving", r"\| TTFT p50 with the shared prefix cached ÷ without [^|]*"
                                           r"\| (?P<n>NUM×)"))
    return shown, d4_done(run, "prefix_on")["ttft_s"].median() / d4_done(run, "prefix_off")["ttft_s"].median()


@figure("D4 offline engine step, batch 1", "D4 measured targets: '… ÷ the engine's step at batch 1 (X ms)'")
def d4_offline_step(run):
    shown = printed(run.find("d4_serving", r"the same TPOT ÷ the engine's step at batch 1 \((?P<n>NUM ms)\)"))
    m = run.csv("d4_serving")
    return shown, rows(m[m["variant"] == "offline_b1"], "decode_step_s").median()


@figure("D4 offline engine prompt", "D4 measured targets: '… the engine's step at batch B after a N-token prompt, as "
                                   "the served ones'")
def d4_offline_prompt(run):
    shown = printed(run.find("d4_serving", r"after a (?P<n>NUM)-token prompt, as the served ones"))
    served = run.csv("d4_serving", "requests.csv")
    return shown, served.loc[served["workload"] == "random", "prompt_tokens"].median()


@figure("D4 TPOT split: share of step time with prompt tokens", "D4 measured targets: 'where that TPOT goes: … · X%'")
def d4_prompt_step_share(run):
    rate = printed(run.find("d4_serving", r"\| TPOT p50 at (?P<n>NUM) req/s ÷ the engine's step")).value
    shown = printed(run.find("d4_serving", r"carry prompt tokens \(every running stream waits for them\) \| NUM× · "
                                           r"(?P<n>NUM%)"))
    rates = run.csv("d4_serving", "requests.csv").groupby("variant")["request_rate"].first()
    variant = next(v for v, r in rates.items() if v.startswith("continuous_") and abs(float(r) - rate) < 0.01)
    steps = run.csv("d4_serving", "steps.csv")
    own = steps[steps["variant"] == variant]
    return shown, own.loc[own["phase"] != "decode", "seconds"].sum() / own["seconds"].sum()


# D5 variants — untraced rows (traced != 1) at the smallest batch size.
def d5_timed(run: Run, variant: str, batch: int) -> pd.DataFrame:
    m = run.csv("d5_variants")
    traced = m["traced"].fillna(0) if "traced" in m else pd.Series(0, index=m.index)
    return m[(traced != 1) & (m["variant"] == variant) & (m["batch_size"] == batch)]


def d5_small(run: Run) -> int:
    return min(int(b) for b in run.config("d5_variants")["batch_sizes"])


def d5_step(run: Run, variant: str, batch: int) -> float:
    return per_repeat_median(d5_timed(run, variant, batch), "decode_step_s").median()  # each generation's median


def d5_variant(run: Run) -> str:
    """The variant these figures follow: sdpa when measured, else the first measured one but the reference."""
    m = run.csv("d5_variants")
    measured = [v for v in dict.fromkeys(m.loc[m["metric"] == "decode_step_s", "variant"]) if v != "reference"]
    if not measured:
        raise Absent("no variant but the reference was measured")
    return "sdpa" if "sdpa" in measured else measured[0]


@figure("D5 reference decode step p50, smallest batch", "D5 variant table, row reference B=<min>, decode step p50")
def d5_reference_step(run):
    batch = d5_small(run)
    shown = printed(run.cell("d5_variants", "decode step p50", {"variant": "reference", "B": batch}))
    return shown, d5_step(run, "reference", batch)


@figure("D5 decode speed-up of a variant, smallest batch", "D5 variant table, row sdpa B=<min>, decode speed-up")
def d5_speedup(run):
    batch, variant = d5_small(run), d5_variant(run)
    shown = printed(run.cell("d5_variants", "decode speed-up", {"variant": variant, "B": batch}))
    return shown, d5_step(run, "reference", batch) / d5_step(run, variant, batch)


@figure("D5 end-to-end speed-up of a variant, smallest batch", "D5 variant table, row sdpa B=<min>, e2e speed-up")
def d5_e2e_speedup(run):
    batch, variant = d5_small(run), d5_variant(run)
    shown = printed(run.cell("d5_variants", "end-to-end speed-up", {"variant": variant, "B": batch}))
    e2e = {v: per_repeat_median(d5_timed(run, v, batch), "e2e_s").median() for v in ("reference", variant)}
    return shown, e2e["reference"] / e2e[variant]


@figure("D5 output tok/s of a variant, smallest batch", "D5 variant table, row sdpa B=<min>, output tok/s")
def d5_tok_per_s(run):
    batch, variant = d5_small(run), d5_variant(run)
    shown = printed(run.cell("d5_variants", "output tok/s", {"variant": variant, "B": batch}))
    return shown, rows(d5_timed(run, variant, batch), "output_tok_per_s").median()


@figure("D5 token match of a variant, smallest batch", "D5 variant table, row sdpa B=<min>, tokens = reference")
def d5_token_match(run):
    batch, variant = d5_small(run), d5_variant(run)
    shown = printed(run.cell("d5_variants", "tokens = reference", {"variant": variant, "B": batch}))
    return shown, rows(d5_timed(run, variant, batch), "token_match_ratio").median()


@figure("D5 best decode speed-up, smallest batch", "D5 measured targets: best variant's batch-<min> decode speed-up")
def d5_best_speedup(run):
    batch = d5_small(run)
    shown = printed(run.find("d5_variants", r"best variant's batch-\d+ decode speed-up[^|]*\| (?P<n>NUM×)"))
    m = run.csv("d5_variants")
    ours = ~m["variant"].isin(["llama.cpp", "vllm_offline"])  # the yardsticks are no variants of ours
    measured = dict.fromkeys(m.loc[(m["metric"] == "decode_step_s") & (m["batch_size"] == batch) & ours, "variant"])
    reference = d5_step(run, "reference", batch)
    return shown, max(reference / d5_step(run, v, batch) for v in measured)


@figure("D5 reference share of the bandwidth roof, smallest batch", "D5 variant table, row reference B=<min>, of roof")
def d5_roof_share(run):
    batch = d5_small(run)
    shown = printed(run.cell("d5_variants", "of roof", {"variant": "reference", "B": batch}))
    m = run.csv("d5_variants")
    weights = rows(m[m["variant"] == "reference"], "step_weight_bytes").median()
    return shown, weights / d5_step(run, "reference", batch) / d2_bandwidth_roof(run)


# ---- comparing --------------------------------------------------------------------------------------------------
@dataclass
class Result:
    figure: Figure
    status: str  # OK, OFF, MISSING (label not found or failed), SKIP (absent in this run)
    printed: str = ""
    recomputed: float = math.nan
    relative: float = math.nan
    note: str = ""


def check(figure: Figure, run: Run) -> Result:
    try:
        shown, value = figure.compute(run)
    except Absent as why:
        return Result(figure, "SKIP", note=str(why))
    except NotFound as why:
        return Result(figure, "MISSING", note=str(why))
    except Exception as error:  # noqa: BLE001 — a broken recomputation is a failure to report, not a crash
        return Result(figure, "MISSING", note=f"{type(error).__name__}: {error}")
    value = float(value)
    difference = abs(shown.value - value)
    relative = difference / abs(value) if value else (0.0 if difference == 0 else math.inf)
    agrees = math.isfinite(value) and difference <= shown.half_digit + TOLERANCE * abs(value) + 1e-15
    return Result(figure, "OK" if agrees else "OFF", shown.text, value, relative,
                  "" if agrees else ("by more than 5%" if relative > WRONG else "beyond its rounding + 0.5%"))


def check_all(run_dir) -> list[Result]:
    run = Run(run_dir)
    return [check(figure, run) for figure in FIGURES]


def si_text(value: float, printed_text: str) -> str:
    """The recomputed value in the printed figure's unit."""
    unit = printed_text.split(" ")[-1] if " " in printed_text else ""
    if unit in UNITS and not math.isnan(value):
        return f"{value / UNITS[unit]:.6g} {unit}"
    return f"{value:.6g}"


def table(results: list[Result]) -> str:
    """One line per figure: name, where in report.md, printed, recomputed (in the printed unit), relative
    difference, status (OK / OFF / MISSING / SKIP) and a note; then the counts."""
    header = ("figure", "where in report.md", "printed", "recomputed", "rel. diff", "status")
    body = [(r.figure.name, r.figure.where, r.printed,
             "" if math.isnan(r.recomputed) else si_text(r.recomputed, r.printed),
             "" if math.isnan(r.relative) else f"{r.relative:.2%}", f"{r.status}{'  ' + r.note if r.note else ''}")
            for r in results]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(5)]
    lines = ["  ".join([*(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))),
                        line[5]]) for line in [header, *body]]
    counts = {status: sum(r.status == status for r in results) for status in ("OK", "OFF", "MISSING", "SKIP")}
    wrong = sum(r.status == "OFF" and r.relative > WRONG for r in results)
    lines.append(f"\n{len(results)} figures: {counts['OK']} OK, {counts['OFF']} OFF ({wrong} by more than 5%), "
                 f"{counts['MISSING']} not found, {counts['SKIP']} skipped (absent in this run)")
    return "\n".join(lines)


# ---- the test ---------------------------------------------------------------------------------------------------
def test_every_printed_figure_follows_from_the_data(workflow_run):
    from tests.conftest import run_dir_of

    results = check_all(run_dir_of(workflow_run))
    print(table(results))
    bad = [f"{r.figure.name} ({r.figure.where}): printed {r.printed}, recomputed {si_text(r.recomputed, r.printed)}"
           f"{f' ({r.relative:.1%} off)' if r.status == 'OFF' else ''} — {r.status} {r.note}"
           for r in results if r.status in ("OFF", "MISSING")]
    assert not bad, "figures that do not follow from the data:\n" + "\n".join(bad)
    checked = [r for r in results if r.status == "OK"]
    assert len(checked) >= 20, f"only {len(checked)} figures checked on the smoke run"
    assert len(FIGURES) >= 25


def d3_ttft_with_traced(run: Run) -> float:
    m = run.csv("d3_batching")
    own = m[(m["batch_size"] == d3_largest(run)) & m["variant"].str.match(r"(static|traced)_b")]
    return rows(own, "ttft_s").median()


def d5_step_with_traced(run: Run) -> float:
    m = run.csv("d5_variants")
    own = m[(m["variant"] == "reference") & (m["batch_size"] == d5_small(run))]
    return per_repeat_median(own, "decode_step_s").median()


# A figure printed from the wrong subset or the wrong statistic, as an analysis bug would print it.
WRONG_SUBSETS = {
    "D1 TTFT p50": lambda run: rows(run.csv("d1_request"), "ttft_s").median(),  # the traced run included
    "D1 decode step p50": lambda run: rows(d1_untraced(run), "decode_step_s").mean(),  # the mean of every step
    "D3 static TTFT p50, largest batch": d3_ttft_with_traced,  # the traced batch included
    "D5 reference decode step p50, smallest batch": d5_step_with_traced,  # the traced generation included
}


def with_printed(run: Run, figure: Figure, value: float) -> Run:
    """A copy of `run` whose report prints `value` (SI) for `figure`, in the same unit and digits."""
    figure.compute(run)
    start, end = run.located
    found = FIGURE.search(run.report, start, end)
    number, unit = found.group(1), found.group(2) or ""
    digits = len(number.split(".")[1]) if "." in number else 0
    shown = f"{value / UNITS.get(unit, 1.0):{',' if ',' in number else ''}.{digits}f}"
    altered = Run.__new__(Run)
    altered.__dict__.update(run.__dict__, report=run.report[:found.start(1)] + shown + run.report[found.end(1):])
    return altered


def test_a_figure_from_the_wrong_subset_is_caught(workflow_run):
    from tests.conftest import run_dir_of

    run = Run(run_dir_of(workflow_run))
    by_name = {figure.name: figure for figure in FIGURES}
    caught = []
    for name, wrong in WRONG_SUBSETS.items():
        figure = by_name[name]
        shown, right = figure.compute(run)
        mistaken = float(wrong(run))
        if abs(mistaken - right) <= 2 * (shown.half_digit + TOLERANCE * abs(right)):
            continue  # this run's data cannot tell the two subsets apart at the printed precision
        result = check(figure, with_printed(run, figure, mistaken))
        assert result.status == "OFF", (name, right, mistaken, result)
        caught.append(name)
    assert len(caught) >= 2, caught


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/test_recomputation.py reports/runs/<run tag>")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # profiling (the D2 cost model)
    outcome = check_all(sys.argv[1])
    print(table(outcome))
    sys.exit(1 if any(r.status in ("OFF", "MISSING") for r in outcome) else 0)
