"""D2's linear-layer shape curve: the verdict keys from hand-made curves on three CPUs (AVX2 only, AMX, AVX-512 BF16)
and for the two kernels (F.linear, prepacked), the table's columns and bytes from a real run on the tiny model by
both kernels, the chart, and the section's wording in both editions. No assertion on a measured time."""
import pandas as pd
import pytest
import torch

from profiling.config import check_config, phase_config
from profiling.metrics import Measurements
from profiling.phases.d2_bottlenecks import linear_shapes, shape_curve
from profiling.phases.d2_bottlenecks.view import d2_linear_shapes
from profiling.report.templating import environment

ROOF = 40e9  # bytes/s
WEIGHT_ELEMENTS = 134_000_000
ROWS = [1, 2, 4, 8, 16]
# ms per pass at M = 1, 2, 4, 8, 16 (the numbers seen on this project's machines)
AMD_AVX2 = {"float32": [37, 76, 90, 110, 150], "bfloat16": [19, 30, 60, 115, 227]}
INTEL_AMX = {"float32": [25.9, 27.8, 35, 45, 63.3], "bfloat16": [31, 31.2, 30.8, 31.5, 32]}
AMD_PREPACKED = {"float32": [21, 22, 23, 24, 26], "bfloat16": [12, 13, 13.5, 14, 15]}  # packed once: flat
ENVS = {
    "avx2": {"device": "cpu", "cpu_capability": "AVX2", "cpu_flags": ["avx2"]},
    "amx": {"device": "cpu", "cpu_capability": "AVX512", "cpu_flags": ["amx_bf16", "amx_tile", "avx512_bf16",
                                                                         "avx512f", "avx2"]},
    "avx512_bf16": {"device": "cpu", "cpu_capability": "AVX512", "cpu_flags": ["avx512_bf16", "avx512f", "avx2"]},
}


def curve_rows(times_ms: dict, repeats: int = 5, prepacked: dict | None = None,
               small_batch: dict | None = None) -> pd.DataFrame:
    """Tidy rows as linear_shapes.measure writes them (`times_ms` by aten, `prepacked` by the packed kernel,
    `small_batch` by our C kernel), each point's repeats spread ±1% around its time."""
    rows = Measurements("d2_bottlenecks")
    for kernel, curves in (("aten", times_ms), ("prepacked", prepacked or {}), ("small_batch", small_batch or {})):
        for dtype, times in curves.items():
            size = 4 if dtype == "float32" else 2
            for count, ms in zip(ROWS, times):
                for repeat in range(repeats):
                    rows.add(f"linear_{dtype}_{kernel}", repeat, linear_shapes.METRIC,
                             ms / 1e3 * (1 + 0.01 * (repeat - 2)), request_id=-1, rows=count, dtype=dtype,
                             kernel=kernel, threads=2, work_bytes=WEIGHT_ELEMENTS * size,
                             work_flops=2 * count * WEIGHT_ELEMENTS, matrices=211)
    return rows.frame()


def verdict(times_ms: dict, env: dict, prepacked: dict | None = None, small_batch: dict | None = None) -> dict:
    measurements = curve_rows(times_ms, prepacked=prepacked, small_batch=small_batch)
    table = shape_curve.curve_table(measurements, ROOF, {"max_repeats": 7, "ci_half_width": 0.05})
    return shape_curve.curve_findings(table, measurements, env, 1.5)


# ---- the verdict ----------------------------------------------------------------------------------------------------
def test_avx2_only_machine_emulates_bfloat16_and_jumps_at_two_rows_in_float32():
    found = verdict(AMD_AVX2, ENVS["avx2"])
    assert found["bf16_path"] == "emulated" and found["vector_isa"] == "avx2"
    assert found["float32_jump"] == "gemv_to_gemm"
    fp32, bf16 = found["shapes"]["aten"]["float32"], found["shapes"]["aten"]["bfloat16"]
    assert fp32["jump_rows"] == 2 and fp32["jump_step"] == pytest.approx(76 / 37, rel=0.02)
    assert fp32["per_row_stops_falling_at"] == 2  # 37 ms per row at M=1, 38 at M=2
    assert fp32["ratio_2_1"] == pytest.approx(76 / 37, rel=0.02)
    assert fp32["ratio_2_1_low"] <= fp32["ratio_2_1"] <= fp32["ratio_2_1_high"]
    assert bf16["scaling"] == "linear" and bf16["growth"] == pytest.approx(227 / 19, rel=0.02)
    versus = found["bf16_vs_float32"]["aten"]
    assert (versus["rows_min"], versus["at_min"]) == (1, "faster")
    assert (versus["rows_max"], versus["at_max"]) == (16, "slower")


def test_amx_machine_keeps_bfloat16_flat_and_float32_has_no_jump():
    found = verdict(INTEL_AMX, ENVS["amx"])
    assert found["bf16_path"] == "amx" and found["vector_isa"] == "avx512f"
    aten = found["shapes"]["aten"]
    assert found["float32_jump"] == "none" and aten["float32"]["jump_rows"] is None
    assert aten["float32"]["scaling"] == "grows"  # 2.4x over 16x the rows
    assert aten["bfloat16"]["scaling"] == "flat"
    assert aten["float32"]["per_row_stops_falling_at"] is None  # falls all the way to 16 rows


def test_avx512_bf16_machine_and_the_other_paths():
    assert verdict(INTEL_AMX, ENVS["avx512_bf16"])["bf16_path"] == "avx512_bf16"
    assert shape_curve.bf16_path({"device": "cuda", "cpu_flags": ["avx2"]}) == "cuda"
    assert shape_curve.bf16_path({"device": "cpu", "cpu_capability": "AVX512"}) == "emulated"  # no flags recorded
    assert shape_curve.bf16_path({"device": "cpu", "cpu_flags": None, "torch_amx_tile": True}) == "amx"
    assert shape_curve.bf16_path({}) == "unknown"


def test_a_jump_after_two_rows_is_later_and_a_late_jump_is_found():
    times = {"float32": [30, 33, 36, 80, 90]}
    found = verdict(times, ENVS["avx2"])
    assert found["float32_jump"] == "later" and found["shapes"]["aten"]["float32"]["jump_rows"] == 8
    assert found["bf16_vs_float32"] == {} and found["prepacked_vs_aten"] == {}


def test_table_rates_follow_the_medians():
    table = shape_curve.curve_table(curve_rows(AMD_AVX2), ROOF, None).set_index(["dtype", "kernel", "rows"])
    row = table.loc[("bfloat16", "aten", 16)]
    assert row["pass_ms_p50"] == pytest.approx(227)
    assert row["gb_per_s"] == pytest.approx(WEIGHT_ELEMENTS * 2 / 0.227 / 1e9)
    assert row["roof_share"] == pytest.approx(WEIGHT_ELEMENTS * 2 / 0.227 / ROOF)
    assert row["gflop_per_s"] == pytest.approx(2 * 16 * WEIGHT_ELEMENTS / 0.227 / 1e9)
    assert row["per_row_ms"] == pytest.approx(227 / 16)
    assert row["pass_ms_ci95_low"] <= row["pass_ms_p50"] <= row["pass_ms_ci95_high"] and row["n"] == 5
    assert list(table.reset_index()["dtype"].unique()) == ["float32", "bfloat16"]


# ---- the two kernels ------------------------------------------------------------------------------------------------
def test_prepacked_flat_where_aten_jumps():
    found = verdict(AMD_AVX2, ENVS["avx512_bf16"], prepacked=AMD_PREPACKED)
    assert found["kernels"] == ["aten", "prepacked"] and found["dtypes"] == ["float32", "bfloat16"]
    packed = found["shapes"]["prepacked"]
    assert packed["float32"]["jump_rows"] is None and packed["float32"]["scaling"] == "flat"
    assert found["float32_jump"] == "gemv_to_gemm"  # the jump is F.linear's, never the packed curve's
    k = found["prepacked_vs_aten"]["float32"]
    assert k["jumps"] == "only_aten"
    assert (k["rows_min"], k["at_min"], k["rows_max"], k["at_max"]) == (1, "faster", 16, "faster")
    assert k["ratio_min"] == pytest.approx(21 / 37) and k["ratio_max"] == pytest.approx(26 / 150)
    assert found["prepacked_vs_aten"]["bfloat16"]["jumps"] == "only_aten"  # 19 -> 30 ms is a jump
    assert set(found["bf16_vs_float32"]) == {"aten", "prepacked"}
    assert found["bf16_vs_float32"]["prepacked"]["ratio_min"] == pytest.approx(12 / 21)
    table = shape_curve.curve_table(curve_rows(AMD_AVX2, prepacked=AMD_PREPACKED), ROOF, None)
    assert list(table["kernel"].unique()) == ["aten", "prepacked"] and len(table) == 20


def test_kernels_that_match_and_a_packed_jump():
    found = verdict(INTEL_AMX, ENVS["amx"], prepacked=INTEL_AMX)
    k = found["prepacked_vs_aten"]["float32"]
    assert k["jumps"] == "neither" and (k["at_min"], k["at_max"]) == ("similar", "similar")
    assert k["ratio_min"] == pytest.approx(1) and k["ratio_max"] == pytest.approx(1)
    jumpy = verdict(INTEL_AMX, ENVS["amx"], prepacked={"float32": [20, 40, 41, 42, 43]})
    assert jumpy["prepacked_vs_aten"]["float32"]["jumps"] == "only_prepacked"
    assert set(jumpy["prepacked_vs_aten"]) == {"float32"}  # bfloat16 timed by aten alone: nothing to compare
    both = verdict(AMD_AVX2, ENVS["avx2"], prepacked={"float32": [20, 40, 41, 42, 43]})
    assert both["prepacked_vs_aten"]["float32"]["jumps"] == "both"


def test_engine_kernel_and_rows_without_a_kernel():
    assert verdict(AMD_AVX2, {**ENVS["avx2"], "engine_kernel": "prepacked"})["engine_kernel"] == "prepacked"
    assert verdict(AMD_AVX2, {**ENVS["avx2"], "cpu_linears": "aten"})["engine_kernel"] == "aten"  # env.json only
    assert verdict(AMD_AVX2, {"device": "cuda", "cpu_linears": None})["engine_kernel"] is None
    older = curve_rows(AMD_AVX2).drop(columns="kernel")  # measured before the kernels were compared
    table = shape_curve.curve_table(older, ROOF, None)
    assert set(table["kernel"]) == {"aten"} and len(table) == 10
    assert shape_curve.curve_findings(table, older, ENVS["avx2"], 1.5)["float32_jump"] == "gemv_to_gemm"


def test_prepacked_runs_only_where_onednn_packs():
    from profiling.prepack import available

    both = ["aten", "prepacked"]
    assert linear_shapes.kernels_for(both, "cuda", torch.float32) == ["aten"]
    assert linear_shapes.kernels_for(both, "cpu", torch.float16) == ["aten"]
    assert linear_shapes.kernels_for(["prepacked"], "cpu", torch.float32) == (["prepacked"] if available() else [])
    assert linear_shapes.kernels_for(both, "cpu", torch.bfloat16) == (both if available(torch.bfloat16) else ["aten"])


# ---- a real run on the tiny model -------------------------------------------------------------------------------
@pytest.fixture
def tiny_curve(tiny, monkeypatch):
    """The curve of the tiny model (M = 1, 2, 4; both kernels), each product call counted per kernel with the
    matrix it was given."""
    model, _ = tiny
    config = check_config({"model": "tiny-random", "device": "cpu", "threads": 1,
                           "d2_bottlenecks": {"linear_rows": [1, 2, 4], "linear_repeats": 2}})
    settings = phase_config(config, "d2_bottlenecks")
    calls = {kernel: [] for kernel in linear_shapes.PRODUCTS}
    for kernel, product in dict(linear_shapes.PRODUCTS).items():
        def counted(x, matrix, kernel=kernel, product=product):
            if isinstance(matrix, tuple):  # small_batch: the weight and its panels (None where the shape has none)
                calls[kernel].append("panels" if matrix[1] is not None and matrix[1].dim() == 3 else "weight")
            else:
                calls[kernel].append("packed" if matrix.is_mkldnn else "plain")
            return product(x, matrix)
        monkeypatch.setitem(linear_shapes.PRODUCTS, kernel, counted)
    rows = Measurements("d2_bottlenecks")
    out_of_memory = linear_shapes.measure(model, settings["d2_bottlenecks"], settings, "cpu", 1, rows)
    return model, settings, rows.frame(), out_of_memory, calls


def test_the_measuring_function_writes_every_point_and_the_table_its_columns(tiny_curve):
    from profiling.prepack import available

    model, settings, measurements, out_of_memory, calls = tiny_curve
    assert out_of_memory == []
    from profiling.kernels import small_batch

    kernels = {d: ["aten", "prepacked"] if available(getattr(torch, d)) else ["aten"] for d in ("float32", "bfloat16")}
    kernels["float32"] += ["small_batch"] if small_batch.available() else []  # our C kernel: float32 only
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    table = shape_curve.curve_table(measurements, ROOF, {"max_repeats": 2, "ci_half_width": 0.05})
    assert list(table.columns) == shape_curve.COLUMNS
    assert set(zip(table["dtype"], table["kernel"], table["rows"])) == {
        (d, k, r) for d in ("float32", "bfloat16") for k in kernels[d] for r in (1, 2, 4)}
    passes = measurements[measurements["metric"] == linear_shapes.METRIC]
    assert set(passes["variant"]) == {f"linear_{d}_{k}" for d in ("float32", "bfloat16") for k in kernels[d]}
    assert (passes["variant"] == "linear_" + passes["dtype"] + "_" + passes["kernel"]).all()
    # every timed pass ran its own kernel over every matrix: plain weights for aten, packed ones for prepacked,
    # the weights laid out in panels for small_batch (where the shape allows, as SmallBatchLinear does)
    width = small_batch.library().panel_width() if small_batch.available() else 0
    layouts = {"aten": ["plain"] * len(linears), "prepacked": ["packed"] * len(linears),
               "small_batch": ["panels" if m.out_features % max(width, 1) == 0 else "weight" for m in linears]}
    assert "panels" in layouts["small_batch"]
    for kernel in kernels["float32"]:
        dtypes = sum(kernel in kernels[d] for d in kernels)
        runs = len(passes[passes["kernel"] == kernel]) + 3 * dtypes  # + one warm-up pass per (dtype, M)
        assert calls[kernel] == layouts[kernel] * runs
    assert (table["matrices"] == len(linears)).all() and (table["n"] >= 1).all()
    elements = sum(m.weight.numel() for m in linears)
    by_dtype = table.groupby("dtype")["weight_bytes"].first()
    assert by_dtype["float32"] == 4 * elements and by_dtype["bfloat16"] == 2 * elements
    assert ((table["gb_per_s"] > 0) & (table["roof_share"] > 0) & (table["gflop_per_s"] > 0)).all()
    assert next(model.parameters()).dtype == torch.float32  # the bfloat16 copy left the model as it was
    env = {"device": "cpu", **linear_shapes.cpu_isa(), "engine_kernel": linear_shapes.engine_kernel(model)}
    found = shape_curve.curve_findings(table, measurements, env, 1.5)
    assert found["bf16_path"] in {"amx", "avx512_bf16", "emulated"} and found["dtypes"] == ["float32", "bfloat16"]
    assert found["kernels"] == kernels["float32"] and found["engine_kernel"] == "aten"  # the model is not packed
    assert set(found["prepacked_vs_aten"]) == {d for d in kernels if "prepacked" in kernels[d]}
    if {"prepacked", "small_batch"} <= set(kernels["float32"]):
        ours = found["small_batch_vs_prepacked"]
        assert (ours["rows_min"], ours["rows_max"], ours["max_rows"]) == (1, 4, None)  # no meta note in this env
        mine, packed = (table[(table["dtype"] == "float32") & (table["kernel"] == k)].set_index("rows")["pass_ms_p50"]
                        for k in ("small_batch", "prepacked"))
        assert ours["ratio_min"] == pytest.approx(mine[1] / packed[1])
        slower = [rows for rows in (1, 2, 4) if mine[rows] > packed[rows]]
        assert ours["slower_from_rows"] == (slower[0] if slower else None)


def test_the_packed_product_equals_f_linear():
    from profiling.prepack import available

    if not available():
        pytest.skip("this torch has no oneDNN linear ops")
    weight = torch.randn(48, 32, generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    (packed, width), = linear_shapes.matrices_for([weight], "prepacked")
    assert width == 32 and packed.is_mkldnn
    with torch.inference_mode():
        torch.testing.assert_close(linear_shapes.prepacked_product(x, packed), torch.nn.functional.linear(x, weight),
                                   rtol=1e-4, atol=1e-4)


def test_prepacked_linears_are_timed_on_their_weights():
    from profiling.model import build_tiny_model
    from profiling.prepack import available, prepack_linears

    model, _ = build_tiny_model(seed=0)
    plain = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if available():
        assert prepack_linears(model) == len(plain)
    assert [w.data_ptr() for w in linear_shapes.linear_weights(model)] == [w.data_ptr() for w in plain]
    assert linear_shapes.engine_kernel(model) == ("prepacked" if available() else "aten")


def test_no_rows_means_no_curve(tiny):
    model, _ = tiny
    config = check_config({"model": "tiny-random", "device": "cpu", "d2_bottlenecks": {"linear_rows": []}})
    settings = phase_config(config, "d2_bottlenecks")
    rows = Measurements("d2_bottlenecks")
    rows.add("ceilings", 0, "tiny_op_s", 1.0)
    linear_shapes.measure(model, settings["d2_bottlenecks"], settings, "cpu", 1, rows)
    table = shape_curve.curve_table(rows.frame(), ROOF, None)
    assert table.empty and shape_curve.curve_findings(table, rows.frame(), {}, 1.5) is None


# ---- the chart and the words ----------------------------------------------------------------------------------------
def test_the_chart_renders(tmp_path):
    table = shape_curve.curve_table(curve_rows(AMD_AVX2, prepacked=AMD_PREPACKED), ROOF, None)
    name = d2_linear_shapes(table, ROOF, tmp_path)
    assert name == "d2_bottlenecks_linear_shapes.png"
    assert (tmp_path / name).stat().st_size > 1000 and (tmp_path / "d2_bottlenecks_linear_shapes.svg").exists()
    svg = (tmp_path / "d2_bottlenecks_linear_shapes.svg").read_text()
    assert "float32 prepacked (oneDNN)" in svg and "float32 F.linear (aten)" in svg
    older = table[table["kernel"] == "aten"].drop(columns="kernel")  # a table from before the kernels
    assert d2_linear_shapes(older, ROOF, tmp_path) == name


def render(found: dict | None, language: str) -> str:
    section = {"findings": {"linear_shapes": found, "bandwidth_source": "memory_read", "bandwidth_bytes_per_s": ROOF},
               "meta": {"config": {"d2_bottlenecks": {"linear_repeats": 7}}, "env": {"torch_threads": 2}},
               "figures": {"linear_shapes": "d2_bottlenecks_linear_shapes.png"},
               "linear_shapes_csv": "data/d2_bottlenecks/linear_shapes.csv"}
    return environment(language).get_template("d2_bottlenecks/shape_curve.md.j2").render(section=section)


@pytest.mark.parametrize("language, words", [
    ("en", {"emulated": "neither AMX tiles nor AVX-512 BF16 (AVX2 only)", "amx": "AMX tiles",
            "gemv_to_gemm": "matrix-matrix product (GEMM)", "none": "No jump"}),
    ("zh", {"emulated": "既没有 AMX 矩阵单元，也没有 AVX-512 BF16（只有 AVX2）", "amx": "AMX 矩阵单元",
            "gemv_to_gemm": "矩阵-矩阵乘（GEMM）", "none": "没有跳变"}),
])
def test_the_section_words_each_verdict_in_both_editions(language, words):
    avx2 = render(verdict(AMD_AVX2, ENVS["avx2"]), language)
    amx = render(verdict(INTEL_AMX, ENVS["amx"]), language)
    for text in (avx2, amx):
        assert '<a id="d2_bottlenecks_shape_curve"></a>' in text
        assert "n/a" not in text and "figures/d2_bottlenecks_linear_shapes.png" in text
        assert "| bfloat16 | aten | 16 | **" in text
    assert words["emulated"] in avx2 and words["gemv_to_gemm"] in avx2 and words["none"] not in avx2
    assert words["amx"] in amx and words["none"] in amx and words["gemv_to_gemm"] not in amx
    assert "d2_bottlenecks_shape_curve" in render(None, language)  # the anchor stays for links when not measured


KERNEL_WORDS = {
    "en": {"engine": "the engine runs the model's linear layers prepacked", "aten_engine": "through `F.linear`**",
           "heading": "Packed once against `F.linear`.", "only_aten": "the packed kernel does not",
           "match": "the two match here", "only_prepacked": "packing once does not pay at every M",
           "both": "Both kernels jump", "gpu": "the prepacked kernel is the CPU's only",
           "older": "analysed before the two kernels were compared"},
    "zh": {"engine": "引擎以预打包方式运行模型的线性层", "aten_engine": "引擎通过 `F.linear` 运行模型的线性层",
           "heading": "打包一次 vs `F.linear`。", "only_aten": "预打包内核没有", "match": "两者在这里相当",
           "only_prepacked": "打包一次并非在每个 M 都划算", "both": "两种内核都跳变", "gpu": "预打包内核只用于 CPU",
           "older": "在比较两种内核之前分析的"},
}


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_section_words_the_kernel_verdict_and_the_engine_kernel(language):
    words = KERNEL_WORDS[language]
    packed_env = {**ENVS["avx2"], "engine_kernel": "prepacked"}
    flat = render(verdict(AMD_AVX2, packed_env, prepacked=AMD_PREPACKED), language)
    assert words["engine"] in flat and words["heading"] in flat and words["only_aten"] in flat
    assert "| float32 | prepacked | 16 | **26.0** |" in flat and "0.57" in flat and "0.17" in flat  # 21/37, 26/150
    assert words["match"] not in flat
    match = render(verdict(INTEL_AMX, {**ENVS["amx"], "engine_kernel": "aten"}, prepacked=INTEL_AMX), language)
    assert words["match"] in match and words["aten_engine"] in match and words["only_aten"] not in match
    jumpy = verdict(INTEL_AMX, ENVS["amx"], prepacked={"float32": [20, 40, 41, 42, 43]})
    assert words["only_prepacked"] in render(jumpy, language)
    both = verdict(AMD_AVX2, ENVS["avx2"], prepacked={"float32": [20, 40, 41, 42, 43]})
    assert words["both"] in render(both, language)
    gpu = render(verdict(AMD_AVX2, {"device": "cuda"}), language)
    assert words["gpu"] in gpu and words["heading"] not in gpu
    older = {key: value for key, value in verdict(AMD_AVX2, ENVS["avx2"]).items() if key != "kernels"}
    assert words["older"] in render(older, language)


# measured on a 2-core AVX-512 CPU (this project's machine, float32, the model's 211 matrices): ms per pass at M =
# 1, 2, 4, 8, 16 by oneDNN prepacked and by our small-batch kernel
AVX512_PREPACKED = {"float32": [33.5, 32.0, 27.9, 31.0, 35.5]}
AVX512_SMALL_BATCH = {"float32": [19.3, 21.8, 24.9, 40.0, 71.1]}


@pytest.mark.parametrize("language, words", [
    ("en", {"heading": "Our small-batch kernel against oneDNN (float32).", "slower": "it is slower from M = 8 on",
            "engine": "by our small-batch kernel up to M = 4", "uses": "runs it up to M = 4"}),
    ("zh", {"heading": "我们的小批量内核对比 oneDNN（float32）。", "slower": "从 M = 8 起它更慢",
            "engine": "M ≤ 4 时用我们的小批量内核", "uses": "在 M ≤ 4 时用它"}),
])
def test_the_section_compares_our_small_batch_kernel_with_onednn(language, words):
    env = {**ENVS["amx"], "engine_kernel": "small_batch", "small_batch_max_rows": 4}
    found = verdict(INTEL_AMX, env, prepacked=AVX512_PREPACKED, small_batch=AVX512_SMALL_BATCH)
    ours = found["small_batch_vs_prepacked"]
    assert ours["ratio_min"] == pytest.approx(19.3 / 33.5, rel=0.01) and ours["at_min"] == "faster"
    assert ours["ratio_max"] == pytest.approx(71.1 / 35.5, rel=0.01) and ours["slower_from_rows"] == 8
    text = render(found, language)
    assert all(word in text for word in words.values()), text
    assert "| float32 | small_batch | 1 | **19.3** |" in text and "0.58" in text and "2.00" in text
    packed_only = render(verdict(INTEL_AMX, ENVS["amx"], prepacked=AVX512_PREPACKED), language)
    assert words["heading"] not in packed_only  # not timed: no comparison


# ---- D3 links to the curve where its decode step jumps ----------------------------------------------------------
def d3_table(steps: dict) -> pd.DataFrame:
    return pd.DataFrame([{"batch_size": batch, "status": "ok", "decode_step_p50_s": seconds}
                         for batch, seconds in steps.items()])


def test_d3_names_a_step_jump_from_batch_one():
    from profiling.phases.d3_batching.analysis import step_jump

    jump = step_jump(d3_table({1: 0.040, 4: 0.080, 8: 0.090}))
    assert jump == {"from_batch": 1, "to_batch": 4, "step_ratio": pytest.approx(2.0), "verdict": "jumps"}
    assert step_jump(d3_table({1: 0.040, 2: 0.044}))["verdict"] == "steady"
    assert step_jump(d3_table({2: 0.040, 4: 0.090})) is None  # no batch 1
    assert step_jump(d3_table({1: 0.040})) is None


@pytest.fixture(scope="module")
def d3_section(tmp_path_factory):
    """A seconds-long D3 batching run on the tiny model, analysed and viewed as the report does."""
    import os

    from profiling.model import provision
    from profiling.phases.d3_batching import analysis as d3_analysis, experiment as d3_experiment, view as d3_view

    root = tmp_path_factory.mktemp("d3_link")
    provision("tiny-random", root / "resources" / "models" / "tiny-random")
    config = check_config({"model": "tiny-random", "device": "cpu", "threads": 1, "d3_batching": {
        "prompts": ["hello there", "a short question"], "batch_sizes": [1, 2], "max_new_tokens": 3, "warmup": 0,
        "repeats": 1, "trace_decode_steps": 1, "compare_batch_sizes": [1, 2], "telemetry_hz": 20,
        "dynamic": {"max_new_tokens": 2, "requests": 2, "rate_req_per_s": 200.0, "wait_windows_ms": [0],
                    "max_batches": [1], "operating_window_ms": 0, "operating_max_batch": 1, "rates_req_per_s": [],
                    "burst_requests": 2}}})
    settings = phase_config(config, "d3_batching")
    data = root / "reports" / "data" / "d3_batching"
    names = ["measurements.csv", "meta.json", "timeline.csv", "telemetry.csv"]
    previous = os.getcwd()
    os.chdir(root)
    try:
        d3_experiment.run(settings, *(data / name for name in names), [data / "b1.json.gz", data / "b2.json.gz"])
    finally:
        os.chdir(previous)
    d3_analysis.analyze(settings, data / "measurements.csv", data / "timeline.csv", data / "telemetry.csv",
                        data / "summary.csv", data / "batch_table.csv", data / "dynamic_table.csv",
                        data / "findings.json")
    return d3_view.view(root / "reports", root / "reports" / "figures")


@pytest.mark.parametrize("language, words", [("en", "D2's linear-layer shape curve"), ("zh", "D2 的线性层形状曲线")])
def test_d3_links_to_the_shape_curve_only_where_its_step_jumps(d3_section, language, words):
    env = d3_section["meta"]["env"]  # the run's env record, as env.json holds it
    template = environment(language).get_template("d3_batching/section.md.j2")
    link = f"[{words}](#d2_bottlenecks_shape_curve)"
    jumps = {**d3_section["findings"], "step_jump": {"from_batch": 1, "to_batch": 2, "step_ratio": 2.05,
                                                     "verdict": "jumps"}}
    text = template.render(section={**d3_section, "findings": jumps}, env=env)
    assert link in text and "2.05×" in text
    steady = {**d3_section["findings"], "step_jump": {**jumps["step_jump"], "step_ratio": 1.1, "verdict": "steady"}}
    assert link not in template.render(section={**d3_section, "findings": steady}, env=env)
