"""Where the best variant's decode step goes (D5's step split), on hand-made Chrome traces: the parts add up to the
step's wall time, Inductor's fused kernels and the quantised matmuls land in their categories, framework code is
host time, the linear layers' bytes come from the traced weights, and the analysis writes and words the split."""
import gzip
import json
import math

import pandas as pd
import pytest

from profiling.report.templating import answer, environment
from profiling.shapes import Shapes
from profiling.phases.d5_variants import analysis as d5_analysis
from profiling.phases.d5_variants import step_split as split
from tests.test_d5_variants import hand_made_rows

# hidden 64, intermediate 128, 4 query heads and 2 key/value heads of 16: q/o 64x64, k/v 32x64, gate/up 128x64,
# down 64x128, lm_head 1000x64
SHAPES = Shapes(layers=1, hidden=64, intermediate=128, heads=4, kv_heads=2, head_dim=16, vocab=1000,
                max_positions=256, tied_embeddings=True)
BF16, U8, I8, F32 = "c10::BFloat16", "unsigned char", "signed char", "float"
# int4 weights, group size 32 over 64 input channels: N x 32 packed bytes + a (2, N, 2) bfloat16 scale-and-zero
Q_INT4_BYTES = 64 * 32 + 2 * 64 * 2 * 2
LM_HEAD_INT4_BYTES = 1000 * 32 + 2 * 1000 * 2 * 2


def op(name, ts, dur, dims=None, types=None):
    """A CPU event on the one thread (what the profiler records for operators and framework code alike)."""
    args = {} if dims is None else {"Input Dims": dims, "Input type": types}
    return {"ph": "X", "cat": "cpu_op", "name": name, "pid": 1, "tid": 1, "ts": ts, "dur": dur, "args": args}


def span(name, ts, dur):
    return {"ph": "X", "cat": "user_annotation", "name": name, "pid": 1, "tid": 1, "ts": ts, "dur": dur}


def int4_mm(ts, dur, out_features):
    return op("aten::_weight_int4pack_mm_for_cpu", ts, dur, [[1, 64], [out_features, 32], [], [2, out_features, 2]],
              [BF16, U8, "Scalar", BF16])


def compiled_step(index, start, wall):
    """One compiled int4 decode step of `wall` µs. Inside the compiled region (900 µs, host code): Dynamo's cache
    lookup 50 (host), a fused norm 40, the q projection 200 (an int4 matmul around its 150 µs kernel), a fused
    mask/rotary/cache kernel 60 and flash attention 80 (attention), a fused SiLU 30 (elementwise), the lm_head 300
    (an int4 matmul with one row per vocabulary entry); after it argmax 20 (other). Kernels: 730 µs; host: the
    rest (region 140 + lookup 50 + gaps)."""
    t = start
    return [
        span(f"decode_step[{index}]", t, wall),
        op("Torch-Compiled Region: 0/1", t + 10, 900),
        op("TorchDynamo Cache Lookup", t + 10, 50),
        op("graph_0_cpp_fused__to_copy_add_mean_mul_pow_rsqrt_0", t + 100, 40),
        int4_mm(t + 150, 200, 64),
        op("quantized::int4mm_packed_weight_cpu", t + 160, 150, [[1, 64], [64, 32], [], [2, 64, 2]],
           [BF16, U8, "long int", BF16]),
        op("graph_0_cpp_fused__scaled_dot_product_flash_attention_for_cpu__to_copy_cat_cos_index_copy_sin_1",
           t + 360, 60),
        op("aten::_scaled_dot_product_flash_attention_for_cpu", t + 430, 80,
           [[1, 4, 1, 16], [1, 4, 8, 16], [1, 4, 8, 16]], [BF16, BF16, BF16]),
        op("graph_0_cpp_fused_mul_silu_2", t + 520, 30),
        int4_mm(t + 560, 300, 1000),
        op("aten::argmax", t + 920, 20, [[1, 1000], [], []], [F32, "Scalar", "Scalar"]),
    ]


def write_trace(path, events):
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    return path


@pytest.fixture
def compiled_trace(tmp_path):
    """Prefill (not counted), then two compiled decode steps of 1000 and 1200 µs (the second 200 µs longer on the
    host)."""
    events = [span("prefill", 0, 500), op("aten::linear", 100, 300, [[1, 8, 64], [1000, 64], []], [F32, F32, ""])]
    events += compiled_step(1, 1000, 1000) + compiled_step(2, 3000, 1200)
    return write_trace(tmp_path / "compiled.json.gz", events)


# ---- one trace ---------------------------------------------------------------------------------------------------
def test_the_split_adds_up_to_the_step_and_puts_each_kernel_in_its_category(compiled_trace):
    result = split.step_split(compiled_trace, SHAPES)
    assert result["decode_steps"] == 2
    assert result["step_wall_s"] == pytest.approx(1100e-6)
    parts = result["parts_s"]
    assert sum(parts.values()) == pytest.approx(result["step_wall_s"])
    assert parts["linear"] == pytest.approx(200e-6)  # the int4 matmul and the kernel nested in it
    assert parts["lm_head"] == pytest.approx(300e-6)
    assert parts["attention"] == pytest.approx(140e-6)  # the fused mask/rotary/cache kernel and flash attention
    assert parts["norm"] == pytest.approx(40e-6)
    assert parts["elementwise"] == pytest.approx(30e-6)
    assert parts["other"] == pytest.approx(20e-6)  # argmax
    assert parts["host"] == pytest.approx((270e-6 + 470e-6) / 2)  # the compiled region and Dynamo count as host
    assert split.host_share(compiled_trace) == pytest.approx(parts["host"] / result["step_wall_s"])


def test_the_linear_layers_read_their_traced_weights(compiled_trace):
    result = split.summary(split.step_split(compiled_trace, SHAPES), roof_bytes_per_s=20e6)
    layers = {layer["kind"]: layer for layer in result["layers"]}
    assert set(layers) == {"q/o", "lm_head"}
    assert layers["q/o"]["calls_per_step"] == 1 and layers["q/o"]["part"] == "linear"
    assert layers["q/o"]["weight_bytes"] == Q_INT4_BYTES  # the packed weight and its scales, counted once
    assert layers["lm_head"]["weight_bytes"] == LM_HEAD_INT4_BYTES
    linear = result["weights"]["linear"]
    assert linear["bytes_traced"]
    assert linear["bytes_per_s"] == pytest.approx(Q_INT4_BYTES / 200e-6)
    assert linear["roof_share"] == pytest.approx(Q_INT4_BYTES / 200e-6 / 20e6)
    assert result["weights"]["lm_head"]["bytes_per_s"] == pytest.approx(LM_HEAD_INT4_BYTES / 300e-6)
    assert result["biggest"] == "host"  # 370 µs against the lm_head's 300


@pytest.mark.parametrize("name, dims, types, part", [
    ("aten::_weight_int8pack_mm", [[1, 64], [128, 64], [128]], [BF16, I8, BF16], "linear"),
    ("aten::_weight_int8pack_mm", [[1, 64], [1000, 64], [1000]], [BF16, I8, BF16], "lm_head"),
    ("aten::_weight_int4pack_mm_for_cpu", [[1, 64], [1000, 32], [], [2, 1000, 2]], [BF16, U8, "Scalar", BF16],
     "lm_head"),
    ("mkldnn::_linear_pointwise", [[1, 1, 64], [128, 64], [], [], [], []], [F32, F32, "", "", "ScalarList", ""],
     "linear"),
    ("quantized::linear_dynamic", [[1, 1, 64], [], []], [F32, "", "Scalar"], "linear"),
    ("aten::linear", [[1, 1, 64], [1000, 64], []], [F32, F32, ""], "lm_head"),
    ("graph_3_cpp_fused__to_copy_add_embedding_mean_mul_pow_rsqrt_view_4", None, None, "norm"),
    ("cpp_fused_cat_neg_slice_transpose_view_1", None, None, "elementwise"),
    ("graph_3_cpp_fused_add_copy__15", None, None, "elementwise"),
    ("cpp_fused_expand_view_3", None, None, "other"),  # `expand` is not `exp`
    ("TorchDynamo Cache Lookup", None, None, "host"),
])
def test_each_kernel_kind_lands_in_its_category(name, dims, types, part):
    assert split.own_part(op(name, 0, 1, dims, types), SHAPES) == part


def test_weight_bytes_count_every_input_but_the_activation():
    int8 = op("aten::_weight_int8pack_mm", 0, 1, [[1, 64], [128, 64], [128]], [BF16, I8, BF16])
    assert split.weight_bytes(int8) == 128 * 64 + 128 * 2
    assert split.weight_shape(int8) == (128, 64)
    with_bias = op("aten::linear", 0, 1, [[1, 1, 64], [128, 64], [128]], [F32, F32, F32])
    assert split.weight_bytes(with_bias) == (128 * 64 + 128) * 4
    transposed = op("aten::mm", 0, 1, [[1, 128], [128, 64]], [F32, F32])  # x @ W.T: the weight is (in, out)
    assert split.weight_shape(transposed) == (64, 128)
    assert math.isnan(split.weight_bytes(op("quantized::linear_dynamic", 0, 1, [[1, 1, 64], [], []],
                                            [F32, "", "Scalar"])))


def test_a_dynamic_int8_steps_last_linear_is_its_lm_head(tmp_path):
    dims, types = [[1, 1, 64], [], []], [F32, "", "Scalar"]
    path = write_trace(tmp_path / "dynamic.json.gz", [
        span("decode_step[1]", 0, 100),
        op("quantized::linear_dynamic", 10, 20, dims, types),
        op("aten::quantize_per_tensor", 12, 5, [[1, 1, 64]], [F32]),  # nested: takes its caller's category
        op("quantized::linear_dynamic", 40, 30, dims, types),
        op("aten::quantize_per_tensor", 42, 5, [[1, 1, 64]], [F32])])
    result = split.summary(split.step_split(path, SHAPES), roof_bytes_per_s=1e9)
    assert result["parts_s"]["linear"] == pytest.approx(20e-6)
    assert result["parts_s"]["lm_head"] == pytest.approx(30e-6)
    assert not result["weights"]["linear"]["bytes_traced"]  # the packed weight's shape is not in the trace


# ---- the analysis ------------------------------------------------------------------------------------------------
def reference_step(index, start):
    """An eager float32 step of 2000 µs: a gate projection (aten::linear around aten::mm) 1000, the lm_head 500."""
    return [span(f"decode_step[{index}]", start, 2000),
            op("aten::linear", start + 100, 1000, [[1, 1, 64], [128, 64], []], [F32, F32, ""]),
            op("aten::mm", start + 150, 900, [[1, 64], [64, 128]], [F32, F32]),
            op("aten::linear", start + 1200, 500, [[1, 1, 64], [1000, 64], []], [F32, F32, ""]),
            op("aten::mm", start + 1210, 480, [[1, 64], [64, 1000]], [F32, F32])]


def test_the_analysis_writes_the_split_of_the_best_variant_and_the_reference(tmp_path, monkeypatch):
    hand_made_rows(tmp_path / "measurements.csv")  # "fast" is the best variant at batch 1
    traces = [write_trace(tmp_path / "fast.json.gz", compiled_step(1, 0, 1000)),
              write_trace(tmp_path / "reference.json.gz", reference_step(1, 0))]
    (tmp_path / "meta.json").write_text(json.dumps({"notes": {
        "unavailable": {}, "traces": {"reference": "reference.json.gz", "fast": "fast.json.gz"}}}))
    (tmp_path / "ceilings.json").write_text(json.dumps({"ceilings": {"memory_read": {"bytes_per_s": 1e10}}}))
    monkeypatch.setattr(split, "model_shapes", lambda model: SHAPES)
    settings = {"model": "hand-made", "cv_warn": 0.1, "d5_variants": {"batch_sizes": [1, 8], "warmup": 1}}
    outputs = [tmp_path / name for name in ("summary.csv", "variants.csv", "findings.json", "step_split.csv")]
    d5_analysis.analyze(settings, tmp_path / "measurements.csv", tmp_path / "meta.json", tmp_path / "ceilings.json",
                        traces, *outputs)

    table = pd.read_csv(outputs[3])
    assert list(table.columns) == split.COLUMNS
    parts = table[table["kind"] == split.ALL_LAYERS]
    for variant, rows in parts.groupby("variant"):
        assert rows["per_step_s"].sum() == pytest.approx(rows["step_wall_s"].iloc[0]), variant
    reference = parts[parts["variant"] == "reference"].set_index("part")
    assert reference.loc["linear", "per_step_s"] == pytest.approx(1000e-6)
    assert reference.loc["lm_head", "per_step_s"] == pytest.approx(500e-6)
    assert reference.loc["linear", "weight_bytes_per_step"] == 128 * 64 * 4
    assert reference.loc["linear", "roof_share"] == pytest.approx(128 * 64 * 4 / 1000e-6 / 1e10)
    assert reference.loc["host", "per_step_s"] == pytest.approx(500e-6)
    gate = table[(table["variant"] == "reference") & (table["kind"] == "gate/up")].iloc[0]
    assert gate["calls_per_step"] == 1

    findings = json.loads(outputs[2].read_text())
    entry = findings["step_split"]
    assert entry["best"] == "fast" and entry["variants"] == ["fast", "reference"]
    assert entry["by_variant"]["fast"]["biggest"] == "lm_head"  # 300 µs; host 270, linear 200
    assert entry["by_variant"]["reference"]["biggest"] == "linear"
    # the host share of the timelines is the split's
    assert findings["timelines"]["fast"]["host_overhead_share"] == pytest.approx(0.27)

    english = answer(environment("en"), "d5_variants", findings, "directions")
    assert "the biggest remaining cost of fast's traced decode step is lm_head: 0.30 ms of 1.00 ms (30%)" in english
    assert "its linear layers read 2.5 KiB of weights per step in 0.20 ms" in english
    chinese = answer(environment("zh"), "d5_variants", findings, "directions")
    assert "fast 的解码步（traced）里剩下最大的开销是lm_head：1.00 ms 中占 0.30 ms（30%）" in chinese


def test_without_traces_the_split_is_absent_and_its_table_empty(tmp_path):
    hand_made_rows(tmp_path / "measurements.csv")
    (tmp_path / "meta.json").write_text(json.dumps({"notes": {"unavailable": {}, "traces": {}}}))
    settings = {"cv_warn": 0.1, "d5_variants": {"batch_sizes": [1, 8], "warmup": 1}}
    outputs = [tmp_path / name for name in ("summary.csv", "variants.csv", "findings.json", "step_split.csv")]
    d5_analysis.analyze(settings, tmp_path / "measurements.csv", tmp_path / "meta.json", None, [], *outputs)
    assert json.loads(outputs[2].read_text())["step_split"] is None
    assert pd.read_csv(outputs[3]).empty
    assert "biggest remaining cost" not in answer(environment("en"), "d5_variants",
                                                  json.loads(outputs[2].read_text()), "directions")
