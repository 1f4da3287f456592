"""The one recorder, the metric definitions and the tidy rows' knob columns."""
import pandas as pd
import pytest

from profiling.metrics import Measurements, profiler_overhead_ratio, record_generation, tpot_s
from profiling.timing import Span, StageClock


def clock_with(spans: list[tuple[str, float, float]]) -> StageClock:
    """A clock holding hand-made spans (name, start s, seconds), as a timed generation leaves it."""
    clock = StageClock("cpu")
    clock.spans = [Span(name, start, seconds) for name, start, seconds in spans]
    return clock


def test_recorder_writes_the_contract_metrics_from_one_clock():
    clock = clock_with([("tokenize", 0.0, 0.01), ("prefill", 0.01, 0.1), ("decode_step[1]", 0.11, 0.05),
                        ("decode_step[2]", 0.16, 0.05), ("detokenize", 0.21, 0.01)])
    rows = Measurements("x")
    numbers = record_generation(rows, "v", 0, clock, 3, request_ids=[0, 1], batch_size=2)
    frame = rows.frame()
    assert numbers["ttft_s"] == pytest.approx(0.11) and numbers["e2e_s"] == pytest.approx(0.22)
    assert numbers["tpot_s"] == pytest.approx(tpot_s(0.22, 0.11, 3)) == pytest.approx(0.055)
    per_request = frame[frame["request_id"] >= 0]
    assert sorted(per_request["metric"].unique()) == ["e2e_s", "tpot_s", "ttft_s"]
    assert len(per_request) == 6  # two requests share the batch's spans
    steps = frame[frame["metric"] == "decode_step_s"]
    assert list(steps["step"]) == [1, 2] and (steps["request_id"] == -1).all()
    throughput = frame.loc[frame["metric"] == "output_tok_per_s", "value"].item()
    assert throughput == pytest.approx(2 * 3 / 0.22)


def test_recorder_counts_queue_wait_into_ttft_and_e2e():
    clock = clock_with([("prefill", 0.0, 0.1), ("decode_step[1]", 0.1, 0.05)])
    rows = Measurements("x")
    record_generation(rows, "v", 0, clock, 2, request_ids=[7], waited_s=[0.5], per_run=False)
    frame = rows.frame().set_index("metric")
    assert frame.loc["queue_wait_s", "value"] == pytest.approx(0.5)
    assert frame.loc["ttft_s", "value"] == pytest.approx(0.6) and frame.loc["e2e_s", "value"] == pytest.approx(0.65)
    assert "output_tok_per_s" not in frame.index


def test_integer_knobs_are_written_as_integers(tmp_path):
    rows = Measurements("x")
    rows.add("a", 0, "prefill_s", 0.1, request_id=-1, batch_size=8, prompt_tokens=128, rate_req_per_s=2.0)
    rows.add("a", 0, "load_model_s", 0.2, request_id=-1)  # no knobs: empty cells
    rows.write(tmp_path / "m.csv")
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[1].endswith(",8,128,2.0") and lines[2].endswith(",,,")


def test_profiler_overhead_compares_the_same_steps():
    frame = pd.DataFrame({"variant": ["traced"] * 2 + ["untraced"] * 4, "metric": ["decode_step_s"] * 6,
                          "step": [1, 2, 1, 2, 3, 3], "value": [0.2, 0.2, 0.1, 0.1, 0.9, 0.9]})
    assert profiler_overhead_ratio(frame, "traced", "untraced") == pytest.approx(2.0)
    assert profiler_overhead_ratio(frame, "missing", "untraced") != profiler_overhead_ratio(frame, "missing", "untraced")
