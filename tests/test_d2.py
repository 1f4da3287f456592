"""D2 bottlenecks: operator categories on a real trace, roofline points on contract-shaped frames, the experiment
and analysis on the tiny model, the CUDA kernel-timeline arithmetic on a hand-made trace, and the end-to-end run."""
import gzip
import json
import re

import pandas as pd
import pytest
import torch

from profiling.report.templating import answer, environment
from profiling.phases.d2_bottlenecks import analysis
from profiling.phases.d2_bottlenecks.costs import decode_step_cost, prefill_cost
from profiling.phases.d2_bottlenecks.op_categories import CATEGORIES, categorize, category_table
from profiling.trace_ops import operator_table
from profiling.config import check_config, load_config, phase_config
from profiling.engine import generate
from profiling.phases.d1_request import experiment as d1_request
from profiling.phases.d2_bottlenecks import experiment as d2_bottlenecks
from profiling.metrics import CONTRACT_COLUMNS
from profiling.model import provision
from profiling.shapes import Shapes
from profiling.model import build_tiny_model
from profiling.tracing import export_gzip_trace, profiled

from tests.conftest import SMOKE, run_dir_of


def trace_events(path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return json.load(f)["traceEvents"]


def assert_traced_steps(path, decode_steps: int) -> None:
    """The trace holds the prefill and `decode_steps` decode-step spans with aten operators under them (an empty
    trace, which an out-of-memory setting writes, fails this)."""
    events = trace_events(path)
    spans = {e["name"] for e in events if e.get("cat") == "user_annotation"}
    assert {"prefill"} | {f"decode_step[{step}]" for step in range(1, decode_steps + 1)} <= spans, (path, spans)
    assert sum(e.get("cat") == "cpu_op" for e in events) > 0, path


# ---- operator categories ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_trace(tiny, tmp_path_factory):
    """A real trace of the tiny model: prefill + 3 decode steps at batch 2, and the model's shapes."""
    model, _ = tiny
    path = tmp_path_factory.mktemp("d2trace") / "decode.json.gz"
    input_ids = torch.randint(0, 200, (2, 7), generator=torch.Generator().manual_seed(0))
    generate(model, input_ids, torch.ones_like(input_ids), 2)  # warm-up
    with profiled("cpu") as prof:
        generate(model, input_ids, torch.ones_like(input_ids), 4)
    export_gzip_trace(prof, path)
    return path, Shapes.from_config(model.config)


def test_every_model_part_is_found_in_a_real_decode_trace(tiny_trace):
    path, shapes = tiny_trace
    table = category_table(path, shapes)
    decode = table[(table["stage"] == "decode_step") & (table["device"] == "cpu")].set_index("category")
    assert set(CATEGORIES) - {"other"} <= set(decode.index)
    assert (decode["calls"] > 0).all() and (decode["self_s"] >= 0).all()
    # most operator time is attributed to a model part, not left as "other"
    assert decode.loc["other", "share_of_stage"] < 0.25
    # the categories partition the same self time as the operator table, stage by stage
    operators = operator_table(path)
    for stage in ("prefill", "decode_step"):
        assert table.loc[table["stage"] == stage, "self_s"].sum() == pytest.approx(
            operators.loc[operators["stage"] == stage, "self_s"].sum())


def test_lm_head_is_the_linear_with_the_vocabulary(tiny_trace):
    """One lm_head linear per forward pass (the mm inside it inherits the category)."""
    path, shapes = tiny_trace
    with gzip.open(path, "rt") as f:
        events = [e for e in json.load(f)["traceEvents"] if e.get("cat") == "cpu_op"]
    lm_heads = [e for e in events if e["name"] == "aten::linear"
                and categorize(e["name"], e["args"]["Input Dims"], shapes) == "lm_head"]
    assert len(lm_heads) == 4  # prefill + 3 decode steps
    H, V, D, I = shapes.hidden, shapes.vocab, shapes.head_dim, shapes.intermediate
    assert categorize("aten::linear", [[2, 1, H], [H, H], []], shapes) == "linear"
    assert categorize("aten::cat", [[[2, 2, 8, D], [2, 2, 1, D]], []], shapes) == "kv_cache"
    assert categorize("aten::cat", [[[2, 4, 1, D // 2], [2, 4, 1, D // 2]], []], shapes) == "rotary"
    assert categorize("aten::mul", [[2, 1, I], [2, 1, I]], shapes) == "activation"
    assert categorize("aten::argmax", [[2, V], [], []], shapes) == "sampling"
    assert categorize("aten::add", [[2, 1, H], [2, 1, H], []], shapes) == "other"  # residual
    assert categorize("llm_infer::paged_decode_attention", [[2, 4, D], [9, 16, 2, D], [9, 16, 2, D], [2, 3], [2],
                                                            []], shapes) == "attention"  # the server's kernel


# ---- roofline points on frames that follow the shared timing contract -------------------------------------------
SHAPES = Shapes.from_config(build_tiny_model(seed=0)[0].config)  # the tiny model's shapes, read from its config
ROOFS = {"peak_flop_per_s": 1e11, "bandwidth_bytes_per_s": 1e10}  # ridge at 10 FLOP/byte


def contract_rows(experiment, variant, batch, prompt, seconds_prefill, seconds_step, steps=3, use_cache=None,
                  repeats=2):
    """Timing rows as a phase writes them: prefill_s and decode_step_s with the contract's knob columns."""
    rows = []
    for repeat in range(repeats):
        knobs = {"batch_size": batch, "prompt_tokens": prompt, **({} if use_cache is None else
                                                                  {"use_cache": use_cache})}
        rows.append({"experiment": experiment, "variant": variant, "repeat": repeat, "request_id": -1,
                     "metric": "prefill_s", "value": seconds_prefill, "unit": "s", **knobs})
        for step in range(1, steps + 1):
            rows.append({"experiment": experiment, "variant": variant, "repeat": repeat, "request_id": -1,
                         "metric": "decode_step_s", "value": seconds_step, "unit": "s", "step": step, **knobs})
    return rows


def test_verdicts_follow_the_roofs():
    # memory side of the ridge (0.5 FLOP/byte): roof = 5e9 FLOP/s
    assert analysis.verdict(0.5, 4e9, 1e11, 1e10, 0.2)[0] == "memory-bound"
    assert analysis.verdict(0.5, 0.5e9, 1e11, 1e10, 0.2)[0] == "overhead-bound"  # 10% of its roof
    # compute side (50 FLOP/byte): roof = 1e11
    label, roof, share = analysis.verdict(50, 6e10, 1e11, 1e10, 0.2)
    assert (label, roof, share) == ("compute-bound", 1e11, pytest.approx(0.6))


def test_roofline_points_from_every_phase(tmp_path):
    # Times chosen from the analytic costs so each point lands where we want it.
    prefill = prefill_cost(SHAPES, 4, 32, 4)
    step = decode_step_cost(SHAPES, 1, 32, 4)
    d1 = pd.DataFrame(contract_rows("d1_request", "untraced", 1, 32, 0.01, step.bytes / 1e10 / 0.5)
                      + contract_rows("d1_request", "traced", 1, 32, 1.0, 1.0))  # traced rows are left out
    batching = pd.DataFrame(contract_rows("d3_batching", "static_b4", 4, 32, prefill.flops / 1e11 / 0.6, 0.001,
                                          use_cache=True))
    kvcache = pd.DataFrame(contract_rows("d3_kvcache", "p32_cache_off_b1", 1, 32, 0.01, 0.01, use_cache="False"))
    forwards = pd.concat([analysis.timing_rows(d1, "d1_request"), analysis.timing_rows(batching, "d3_batching"),
                          analysis.timing_rows(kvcache, "d3_kvcache")], ignore_index=True)
    assert set(forwards["variant"]) == {"untraced", "static_b4", "p32_cache_off_b1"}
    forwards = analysis.with_costs(forwards, SHAPES, 4)
    points = analysis.roofline_points(forwards, ROOFS, 0.2).set_index(["source", "stage"])
    assert len(points) == 6 and (points["runs"] == 2).all()
    assert points.loc[("d1_request", "decode"), "verdict"] == "memory-bound"
    assert points.loc[("d1_request", "decode"), "mbu"] == pytest.approx(0.5, rel=0.02)  # context grows a little per step
    assert points.loc[("d1_request", "decode"), "context_min"] == 33 and points.loc[("d1_request", "decode"), "context_max"] == 35
    assert points.loc[("d3_batching", "prefill"), "mfu"] == pytest.approx(0.6)
    assert points.loc[("d3_kvcache", "decode"), "use_cache"] == False  # noqa: E712 (numpy bool)
    no_cache_step = decode_step_cost(SHAPES, 1, 32, 4, use_cache=False)  # step 1 recomputes 33 tokens
    assert points.loc[("d3_kvcache", "decode"), "flops_per_forward"] > no_cache_step.flops


# ---- the experiment and the analysis on the tiny model -------------------------------------------------------
@pytest.fixture
def tiny_d2(tmp_path, monkeypatch):
    """D1 and D2 run on the tiny model (2 threads, so thread scaling runs) in a temporary directory."""
    monkeypatch.chdir(tmp_path)
    provision("tiny-random", tmp_path / "resources" / "models" / "tiny-random")
    config = check_config({"model": "tiny-random", "device": "cpu", "threads": 2,
                           "d1_request": {"max_new_tokens": 3, "warmup": 1, "repeats": 2, "load_repeats": 1,
                                  "trace_decode_steps": 1},
                           "d2_bottlenecks": {"batch_sizes": [1, 2], "prompt_tokens": 6, "decode_steps": 3, "repeats": 2,
                                  "trace_decode_steps": 2, "copy_mib": 2, "matmul_size": 64, "matvec_size": 128,
                                  "tiny_op_calls": 20, "ceiling_repeats": 2}})
    out = tmp_path / "out"
    d1 = out / "d1_request"  # the roofline names each source by its folder, the phase's name
    d1_request.run(phase_config(config, "d1_request"), d1 / "measurements.csv", d1 / "meta.json", d1 / "trace.json.gz")
    settings = phase_config(config, "d2_bottlenecks")
    return settings, out


def run_d2(settings, out):
    traces = [out / f"decode_b{batch}.json.gz" for batch in settings["d2_bottlenecks"]["batch_sizes"]]
    d2_bottlenecks.run(settings, out / "measurements.csv", out / "meta.json", out / "ceilings.json", traces)
    analysis.analyze(settings, out / "measurements.csv", out / "meta.json", out / "ceilings.json", traces,
                     [out / "d1_request" / "measurements.csv"], out / "summary.csv", out / "roofline.csv", out / "breakdown.csv",
                     out / "findings.json", out / "linear_shapes.csv")
    return json.loads((out / "findings.json").read_text())


def test_d2_writes_its_contract_and_findings(tiny_d2):
    settings, out = tiny_d2
    findings = run_d2(settings, out)
    frame = pd.read_csv(out / "measurements.csv")
    assert list(frame.columns[:len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
    steps = frame[(frame["variant"] == "b2") & (frame["metric"] == "decode_step_s")]
    assert len(steps) == 2 * 3 and set(steps["step"]) == {1, 2, 3} and (steps["batch_size"] == 2).all()
    assert {"threads_1", "threads_2", "traced_b1", "ceilings"} <= set(frame["variant"])
    ceilings = json.loads((out / "ceilings.json").read_text())
    assert ceilings["run_tag"] and ceilings["device"] == "cpu"  # the env record, plus the ceilings
    assert ceilings["ceilings"]["memory_bandwidth"]["bytes_per_s"] > 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["notes"]["model_shapes"]["vocab"] == SHAPES.vocab
    assert meta["config"]["d2_bottlenecks"] == settings["d2_bottlenecks"]
    for batch in settings["d2_bottlenecks"]["batch_sizes"]:
        assert_traced_steps(out / f"decode_b{batch}.json.gz", settings["d2_bottlenecks"]["trace_decode_steps"])

    points = pd.read_csv(out / "roofline.csv")
    assert set(points["source"]) == {"d1_request", "d2_bottlenecks"}
    assert set(points.loc[points["source"] == "d2_bottlenecks", "batch_size"]) == {1, 2}
    assert set(points["verdict"]) <= {"memory-bound", "compute-bound", "overhead-bound"}
    assert ((points["mfu"] > 0) & (points["mbu"] > 0)).all()
    breakdown = pd.read_csv(out / "breakdown.csv")
    cpu = breakdown[breakdown["device"] == "cpu"]
    for _, group in cpu.groupby(["batch_size", "stage"]):
        assert group["share_of_wall"].sum() == pytest.approx(1.0)  # categories + host time = the span's wall
    assert answer(environment(), "d2_bottlenecks", findings).startswith("decode at batch 1 moves")
    assert {row["threads"] for row in findings["thread_scaling"]} == {1, 2}
    assert set(findings["profiler_overhead_ratio"]) == {"1", "2"}
    assert findings["gpu"] == {}  # a CPU run has no kernel timeline


def test_out_of_memory_at_one_batch_size_is_a_data_point(tiny_d2, monkeypatch):
    settings, out = tiny_d2
    real_generate = d2_bottlenecks.generate

    def generate_or_oom(model, input_ids, *args, **kwargs):
        if input_ids.shape[0] == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_generate(model, input_ids, *args, **kwargs)

    monkeypatch.setattr(d2_bottlenecks, "generate", generate_or_oom)
    findings = run_d2(settings, out)
    frame = pd.read_csv(out / "measurements.csv")
    oom = frame[frame["metric"] == "oom"]
    assert len(oom) == 1 and oom["batch_size"].iloc[0] == 2 and oom["value"].iloc[0] == 1
    assert json.loads((out / "meta.json").read_text())["notes"]["out_of_memory_batch_sizes"] == [2]
    assert trace_events(out / "decode_b2.json.gz") == []  # an empty trace keeps the outputs complete
    assert_traced_steps(out / "decode_b1.json.gz", settings["d2_bottlenecks"]["trace_decode_steps"])
    points = pd.read_csv(out / "roofline.csv")
    assert set(points.loc[points["source"] == "d2_bottlenecks", "batch_size"]) == {1}
    assert answer(environment(), "d2_bottlenecks", findings).startswith("decode at batch 1 moves")


# ---- the CUDA kernel timeline, on a hand-made trace ---------------------------------------------------------------
def test_gpu_timeline_and_kernel_categories_from_a_cuda_trace(tmp_path):
    """One decode step span of 100 µs: an lm_head linear launches two kernels (30 µs and 20 µs, overlapping by
    10 µs), then a token copy device -> host (5 µs): busy 45 µs of 100."""
    events = [
        {"ph": "X", "cat": "user_annotation", "name": "decode_step[1]", "pid": 1, "tid": 1, "ts": 0, "dur": 100},
        {"ph": "X", "cat": "cpu_op", "name": "aten::linear", "pid": 1, "tid": 1, "ts": 1, "dur": 20,
         "args": {"Input Dims": [[1, 1, SHAPES.hidden], [SHAPES.vocab, SHAPES.hidden], []]}},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 2, "dur": 10,
         "args": {"Input Dims": [[1, SHAPES.hidden], [SHAPES.hidden, SHAPES.vocab]]}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 3, "dur": 2,
         "args": {"correlation": 7}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 6, "dur": 2,
         "args": {"correlation": 8}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaMemcpyAsync", "pid": 1, "tid": 1, "ts": 40, "dur": 2,
         "args": {"correlation": 9}},
        {"ph": "X", "cat": "kernel", "name": "gemv_kernel", "pid": 0, "tid": 7, "ts": 10, "dur": 30,
         "args": {"correlation": 7}},
        {"ph": "X", "cat": "kernel", "name": "splitk_reduce", "pid": 0, "tid": 7, "ts": 30, "dur": 20,
         "args": {"correlation": 8}},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoH (Device -> Pageable)", "pid": 0, "tid": 8, "ts": 60,
         "dur": 5, "args": {"correlation": 9, "bytes": 8}},
    ]
    path = tmp_path / "cuda.json"
    path.write_text(json.dumps({"traceEvents": events}))
    (decode,) = analysis.gpu_timeline(path)
    assert decode["gpu_busy_share"] == pytest.approx(0.45)
    assert decode["kernels_per_forward"] == 2 and decode["memcpy_per_forward"] == 1
    assert decode["memcpy_bytes_per_forward"] == 8
    table = category_table(path, SHAPES)
    kernels = table[table["device"] == "cuda"].set_index("category")
    assert list(kernels.index) == ["lm_head"] and kernels.loc["lm_head", "calls"] == 2
    assert kernels.loc["lm_head", "self_s"] == pytest.approx(50e-6)


# ---- end to end -----------------------------------------------------------------------------------------------
def test_workflow_writes_d2_and_renders_its_section(workflow_run):
    reports = run_dir_of(workflow_run)
    for name in ("data/d2_bottlenecks/measurements.csv", "data/d2_bottlenecks/meta.json",
                 "data/d2_bottlenecks/ceilings.json", "data/d2_bottlenecks/summary.csv",
                 "data/d2_bottlenecks/roofline.csv", "data/d2_bottlenecks/breakdown.csv",
                 "data/d2_bottlenecks/findings.json", "traces/d2_bottlenecks/decode_b1.json.gz",
                 "traces/d2_bottlenecks/decode_b2.json.gz", "records/d2_bottlenecks.txt",
                 "figures/d2_bottlenecks_roofline.png", "figures/d2_bottlenecks_breakdown.svg", "logs/d2_bottlenecks.log"):
        assert (reports / name).stat().st_size > 0, name
    for trace in ("decode_b1", "decode_b2"):
        assert_traced_steps(reports / "traces/d2_bottlenecks" / f"{trace}.json.gz",
                            load_config(SMOKE)["d2_bottlenecks"]["trace_decode_steps"])
    report = (reports / "report.md").read_text()
    section = report[report.index("## D2"):report.index("## D3")]
    assert "Not yet measured" not in section
    findings = json.loads((reports / "data/d2_bottlenecks/findings.json").read_text())
    assert "MBU" in section and "MFU" in section
    for point in findings["points"]:  # the closing note quotes every point's verdict
        assert f"{point['source']} · {point['variant']} · {point['stage']} · batch {point['batch_size']}" in section
    links = re.findall(r"\]\(([^)\s]+)\)", section)
    assert "figures/d2_bottlenecks_roofline.png" in links and "traces/d2_bottlenecks/decode_b1.json.gz" in links
    for link in links:
        assert (reports / link).exists(), link
    wall = (reports / "PROGRESS.md").read_text()
    d2_row = next(line for line in wall.splitlines() if "D2 性能瓶颈认知" in line)
    d = findings["decode_point"]  # the wall quotes this run's decode point (formatted here, not by the macro)
    moves = f"decode at batch {d['batch_size']} moves {d['achieved_bytes_per_s'] / 1e9:.1f} GB/s"
    assert "☑" in d2_row and moves in d2_row and f"({d['verdict']}, MFU " in d2_row
    record = (reports / "records/d2_bottlenecks.txt").read_text()
    assert record.startswith("[d2_bottlenecks") and "Observations" in record
