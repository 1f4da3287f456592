"""Operator attribution on a real torch.profiler trace of the tiny model."""
import gzip
import json

import pytest

from profiling.trace_ops import operator_table, stage_group, stage_spans
from profiling.engine import encode_prompts, generate
from profiling.timing import StageClock
from profiling.tracing import export_gzip_trace, profiled


def traced_request(tiny, path):
    model, tokenizer = tiny
    with profiled("cpu") as prof:
        clock = StageClock("cpu")
        with clock.span("tokenize"):
            ids, mask = encode_prompts(tokenizer, ["profile me"], "cpu")
        generate(model, ids, mask, 4, clock=clock)
    export_gzip_trace(prof, path)
    return clock


def test_trace_is_gzip_json_with_stage_labels(tiny, tmp_path):
    path = tmp_path / "t.json.gz"
    traced_request(tiny, path)
    with gzip.open(path, "rt") as f:
        names = {e["name"] for e in json.load(f)["traceEvents"] if e.get("cat") == "user_annotation"}
    assert {"tokenize", "prefill", "decode_step[1]", "decode_step[3]"} <= names


def test_operator_time_is_attributed_to_stages(tiny, tmp_path):
    path = tmp_path / "t.json.gz"
    traced_request(tiny, path)
    table = operator_table(path)
    assert {"prefill", "decode_step", "tokenize"} <= set(table["stage"])
    decode = table[table["stage"] == "decode_step"]
    assert "aten::mm" in set(decode["op"]) or "aten::addmm" in set(decode["op"])
    assert decode["share_of_stage"].sum() == pytest.approx(1.0)
    # Self time never exceeds the wall time of the spans it sits in.
    spans = stage_spans(path)
    decode_wall = spans[spans["name"].str.startswith("decode_step")]["seconds"].sum()
    assert 0 < decode["self_s"].sum() <= decode_wall
    assert (table["self_s"] >= 0).all() and (table["total_s"] >= table["self_s"] - 1e-9).all()
    # Every decode step runs each layer's seven projections (q, k, v, o, gate, up, down) and the lm_head once.
    config = tiny[0].config
    linears_per_step = config.num_hidden_layers * 7 + 1
    steps = spans["name"].str.startswith("decode_step").sum()
    assert steps == 3  # 4 new tokens: the prefill makes the first, 3 decode steps the rest
    linear_calls = int(decode.loc[decode["op"].isin(["aten::mm", "aten::addmm"]), "calls"].sum())
    assert linear_calls == steps * linears_per_step


def test_stage_group_pools_decode_steps():
    assert stage_group("decode_step[12]") == "decode_step"
    assert stage_group("prefill") == "prefill"


def test_self_time_subtracts_nested_ops(tmp_path):
    # A hand-made trace: outer op 10 µs containing a 4 µs child, inside a 20 µs "prefill" span.
    events = [
        {"ph": "X", "cat": "user_annotation", "name": "prefill", "pid": 1, "tid": 1, "ts": 0, "dur": 20},
        {"ph": "X", "cat": "cpu_op", "name": "aten::linear", "pid": 1, "tid": 1, "ts": 1, "dur": 10},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 2, "dur": 4},
        {"ph": "X", "cat": "cpu_op", "name": "aten::add", "pid": 1, "tid": 1, "ts": 30, "dur": 3},
    ]
    path = tmp_path / "hand.json"
    path.write_text(json.dumps({"traceEvents": events}))
    table = operator_table(path).set_index("op")
    assert table.loc["aten::linear", "self_s"] == pytest.approx(6e-6)
    assert table.loc["aten::mm", "self_s"] == pytest.approx(4e-6)
    assert table.loc["aten::linear", "stage"] == "prefill"
    assert table.loc["aten::add", "stage"] == "(outside stages)"
    assert table.loc["aten::linear", "total_s"] == pytest.approx(10e-6)
    assert table.loc["aten::mm", "total_s"] == pytest.approx(4e-6)
    assert table.loc["aten::linear", "calls"] == 1
