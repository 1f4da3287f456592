"""D5's yardsticks: llama.cpp's and vLLM's rows parsed from their scripts' JSON (fixtures), the GGUF byte count,
the targets' verdicts from hand-made frames, a missing llama.cpp as a row saying why, and the section in both
editions. Nothing here times anything or needs .venv-reference."""
import json
import struct
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest

from profiling.metrics import Measurements
from profiling.phases.d5_variants import experiment as E
from profiling.phases.d5_variants import variants as V
from profiling.phases.d5_variants import yardsticks as Y
from profiling.report.templating import environment
from profiling.serving.bench import llama_cpp_bench as bench

FIXTURES = Path(__file__).parent / "fixtures" / "d5_yardsticks"
REFERENCE_TOKENS = [1, 2, 3, 4]
ROOF = 10e9  # bytes/s


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def peer_frame() -> pd.DataFrame:
    rows = Measurements("d5_variants")
    E.record_llama_cpp(fixture("llama_cpp.json"), rows, REFERENCE_TOKENS)
    for mode in ("compiled", "eager"):
        E.record_vllm(fixture(f"vllm_{mode}.json"), rows, 5, REFERENCE_TOKENS, 5.4e8)
    return rows.frame()


def peer_meta(llama_cpp: dict | None = None) -> dict:
    llama = llama_cpp or {"measured": True, "version": "0.3.36", "build": "native", "threads": 2,
                          "source": "SmolLM2-135M-Instruct.Q4_1.gguf", "output_tokens": 4,
                          "failed": fixture("llama_cpp.json")["failed"]}
    return {"notes": {"llama_cpp": llama, "vllm_offline": {
        "measured": True, "version": "0.32.0", "modes": {"compiled": {"measured": True, "startup_s": 120.0},
                                                         "eager": {"measured": True, "startup_s": 30.0}}},
        "variants": {**{name: asdict(V.spec_of(name)) for name in ("reference", "sdpa", "int8wo_bf16")},
                     "int4wo_bf16": asdict(V.Spec(dtype="bfloat16", quant="int4_weight_only"))}}}


CFG = {"reference": {"vllm_modes": ["compiled", "eager"], "llama_cpp_quants": ["q4_1", "q8_0", "f32"]}}


# ---- rows from the scripts' JSON ---------------------------------------------------------------------------------
def test_llama_cpp_rows_from_its_json():
    frame = peer_frame()
    llama = frame[frame["variant"] == "llama.cpp"]
    steps = llama[llama["metric"] == "decode_step_s"]
    assert len(steps) == 2 * 2 * 2 * 3  # types x batch sizes x repeats x (output tokens - 1)
    assert set(steps["quant"]) == {"q4_1", "q8_0"} and set(steps["step"]) == {1, 2, 3}
    weights = llama[llama["metric"] == "step_weight_bytes"].set_index("quant")["value"]
    assert weights["q4_1"] == 96576768
    match = llama[llama["metric"] == "token_match_ratio"].set_index("quant")["value"]
    assert match["q8_0"] == 1.0 and match["q4_1"] == pytest.approx(0.75)  # q4_1's last token differs

    peers = {(p["system"], p["batch_size"]): p for p in Y.peer_table(frame, peer_meta(), CFG, ROOF, [1, 8])}
    q4 = peers[("llama.cpp q4_1", 1)]
    assert q4["step_p50_s"] == pytest.approx(0.011)  # the median of the repeats' medians (0.010, 0.012)
    assert q4["repeats"] == 2 and q4["one_off_s"] == pytest.approx(0.2)
    assert q4["roof_share"] == pytest.approx(96576768 / 0.011 / ROOF)
    assert peers[("llama.cpp q8_0", 8)]["decode_tok_per_s"] == pytest.approx(8 / 0.0305)
    failed = peers[("llama.cpp f32", None)]  # a type that failed is a row saying why
    assert not failed["available"] and "returned 1" in failed["reason"]


def test_vllm_rows_separate_decode_from_prefill_and_start_up():
    frame = peer_frame()
    peers = {(p["system"], p["batch_size"]): p for p in Y.peer_table(frame, peer_meta(), CFG, ROOF, [1, 8])}
    compiled, eager = peers[("vLLM compiled", 8)], peers[("vLLM eager", 1)]
    assert compiled["step_p50_s"] == pytest.approx(0.020 * 1.5)  # (e2e - prefill) / (N - 1), not e2e / N
    assert compiled["one_off_s"] == 120.0 and eager["one_off_s"] == 30.0
    assert eager["step_p50_s"] == pytest.approx(0.030) and eager["prefill_p50_s"] == pytest.approx(0.11)
    assert eager["token_match_ratio"] == 1.0 and eager["step_weight_bytes"] == 5.4e8


def test_a_vllm_mode_left_out_of_the_config_is_a_row_that_says_how_to_add_it():
    cfg = {"reference": {"vllm_modes": ["eager"], "llama_cpp_quants": ["q4_1"]}}
    meta = peer_meta()
    meta["notes"]["vllm_offline"]["modes"].pop("compiled")
    systems = {p["system"]: p for p in Y.peer_table(peer_frame(), meta, cfg, ROOF, [1, 8])}
    assert systems["vLLM compiled"]["reason_key"] == "not_configured"
    assert systems["vLLM eager"]["available"]


# ---- the GGUF's bytes --------------------------------------------------------------------------------------------
def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def tiny_gguf(path: Path, with_output: bool) -> None:
    """A GGUF with a q8_0 token embedding (64 x 8), one f32 matrix (32 x 8) and optionally a q4_1 output (64 x 8)."""
    tensors = [("token_embd.weight", [64, 8], 8), ("blk.0.ffn_up.weight", [32, 8], 0)]
    if with_output:
        tensors.append(("output.weight", [64, 8], 3))
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 1)
    header += gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("llama")
    sizes = {8: 64 * 8 // 32 * 34, 0: 32 * 8 * 4, 3: 64 * 8 // 32 * 20}
    offset = 0
    for name, shape, kind in tensors:
        header += gguf_string(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        header += struct.pack("<IQ", kind, offset)
        offset += -(-sizes[kind] // 32) * 32
    header += b"\0" * (-len(header) % 32)
    path.write_bytes(header + b"\0" * offset)


@pytest.mark.parametrize("with_output", [False, True])
def test_step_weight_bytes_from_the_gguf_header(tmp_path, with_output):
    tiny_gguf(tmp_path / "m.gguf", with_output)
    tensors = bench.gguf_tensors(tmp_path / "m.gguf")
    assert [t["bytes"] for t in tensors][:2] == [544, 1024]
    counted = bench.step_weight_bytes(tensors)
    if with_output:  # a step reads one embedding row per sequence: the table is not counted, the output is
        assert counted == {"tensor_bytes": 544 + 1024 + 320, "step_weight_bytes": 1024 + 320,
                           "tied_embeddings": False, "types": ["f32", "q4_1", "q8_0"]}
    else:  # tied: the output projection reads the whole embedding table
        assert counted["step_weight_bytes"] == 544 + 1024 and counted["tied_embeddings"]
    assert bench.file_quant(tensors) == "f32"


# ---- the verdicts from hand-made frames --------------------------------------------------------------------------
def variant_frame(int4_b1_step: float = 0.009, with_int4: bool = True) -> pd.DataFrame:
    """Our variants at batch 1 and 8: step seconds, greedy-token match."""
    made = {"reference": (0.030, 0.060, 1.0), "sdpa": (0.028, 0.050, 1.0), "int8wo_bf16": (0.014, 0.040, 0.9)}
    if with_int4:
        made["int4wo_bf16"] = (int4_b1_step, 0.030, 0.8)
    rows = []
    for variant, (b1, b8, match) in made.items():
        for batch, step in ((1, b1), (8, b8)):
            rows.append({"variant": variant, "batch_size": batch, "available": True, "step_p50_s": step,
                         "decode_tok_per_s": batch / step, "token_match_ratio": match, "repeats": 3,
                         "step_weight_bytes": 5.4e8, "roof_share": 0.5})
    rows.append({"variant": "cuda_graphs", "batch_size": 1, "available": False})
    return pd.DataFrame(rows)


def verdicts(table: pd.DataFrame, meta: dict | None = None) -> dict:
    meta = meta or peer_meta()
    peers = Y.peer_table(peer_frame(), meta, CFG, ROOF, [1, 8])
    return {(t["key"], t["batch_size"]): t for t in Y.targets(Y.classified(table, meta), peers, [1, 8])}


def test_verdicts_against_llama_cpp_and_vllm():
    found = verdicts(variant_frame())
    eight_bit = found[("exact_or_8bit_vs_llama_q8_0", 1)]
    assert eight_bit["ours"] == "int8wo_bf16"  # 8-bit counts though approximate; the 4-bit one does not
    assert eight_bit["ratio"] == pytest.approx(0.014 / 0.0155) and eight_bit["verdict"] == "met"
    four_bit = found[("4bit_vs_llama_q4_1", 1)]
    assert four_bit["ours"] == "int4wo_bf16" and four_bit["verdict"] == "met"
    engine = found[("engine_float32_vs_llama_f32", 1)]
    assert engine["ours"] == "sdpa" and engine["verdict"] == "no_peer"  # the engine's fastest float32 setting;
    # llama.cpp's f32 failed
    vllm = found[("best_exact_vs_vllm", 8)]  # the fastest exact variant: int4wo_bf16 (0.030 s) is approximate
    assert vllm["peer"] == "vLLM compiled" and vllm["ours"] == "sdpa" and vllm["ours_token_match_ratio"] == 1.0
    assert vllm["ratio"] == pytest.approx((8 / 0.050) / (8 / 0.030)) and vllm["verdict"] == "missed"
    slower = verdicts(variant_frame(int4_b1_step=0.012))[("4bit_vs_llama_q4_1", 1)]
    assert slower["ratio"] == pytest.approx(0.012 / 0.011) and slower["verdict"] == "missed"


def test_engine_float32_path_is_the_engines_own_settings():
    """The float32 target's candidates: the variants that change only the engine's settings (linears, attention)."""
    chosen = {name for name, spec in V.CATALOG.items() if Y.engine_float32(asdict(spec))}
    # the engine's settings: linears, attention, and its decode steps by our fused layer (cpu_decoder: fused)
    assert chosen == {"reference", "sdpa", "prepacked_sdpa", "small_batch_sdpa", "small_batch_fused"}


def test_no_4bit_variant_and_vllm_eager_only():
    meta = peer_meta()
    meta["notes"]["vllm_offline"]["modes"]["compiled"] = {"measured": False, "note": "start-up timed out"}
    found = verdicts(variant_frame(with_int4=False), meta)
    assert found[("4bit_vs_llama_q4_1", 1)]["verdict"] == "no_candidate"
    vllm = found[("best_exact_vs_vllm", 8)]
    assert vllm["peer"] == "vLLM eager"  # compiled was not measured: the row names the mode it compares with
    assert vllm["ours"] == "sdpa" and vllm["ratio"] == pytest.approx((8 / 0.050) / (8 / 0.045))
    assert vllm["verdict"] == "missed"


def test_exact_variants_rank_before_approximate_ones():
    meta = peer_meta()
    table = Y.classified(variant_frame(), meta)
    rows = Y.side_by_side(table, Y.peer_table(peer_frame(), meta, CFG, ROOF, [1, 8]), [1, 8])
    ours = [row["system"] for row in rows if row["kind"] == "ours"]
    assert ours == ["sdpa", "reference", "int4wo_bf16", "int8wo_bf16"]
    assert [row["weight_bits"] for row in rows if row["kind"] == "ours"] == [32, 32, 4, 8]
    assert rows[0]["step_s"] == [0.028, 0.050]


# ---- a missing llama.cpp -----------------------------------------------------------------------------------------
def test_absent_llama_cpp_is_a_note_and_a_row(monkeypatch):
    from profiling.serving.bench import reference

    why = "llama.cpp not installed (.venv-reference is missing): run `make reference` to enable it"
    monkeypatch.setattr(reference, "llama_cpp_available", lambda *a, **k: (False, why))
    rows = Measurements("d5_variants")
    cfg = {"reference": {"enabled": True, "llama_cpp_quants": ["q4_1"], "output_tokens": 4, "repeats": 1},
           "batch_sizes": [1]}
    note = E.llama_cpp_yardstick({"model": "smollm2-135m-instruct"}, cfg, [1, 2], rows, REFERENCE_TOKENS)
    assert note == {"measured": False, "note": why} and not rows.rows
    other = E.llama_cpp_yardstick({"model": "tiny-random"}, cfg, [1, 2], rows, REFERENCE_TOKENS)
    assert not other["measured"] and "GGUF" in other["note"]

    peers = Y.peer_table(peer_frame(), peer_meta(note), CFG, ROOF, [1, 8])
    llama = [p for p in peers if p["peer"] == "llama.cpp"]
    assert llama == [Y.missing("llama.cpp", None, why)]
    side = Y.side_by_side(Y.classified(variant_frame(), peer_meta()), peers, [1, 8])
    assert {"system": "llama.cpp", "kind": "llama.cpp", "available": False, "reason": why,
            "reason_key": ""} in side
    found = {t["key"]: t["verdict"] for t in Y.targets(Y.classified(variant_frame(), peer_meta()), peers, [1, 8])}
    assert found["exact_or_8bit_vs_llama_q8_0"] == "no_peer" and found["best_exact_vs_vllm"] == "missed"


# ---- the section, both editions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_yardstick_section_words_the_verdicts(language):
    meta = peer_meta()
    meta["config"] = {"d5_variants": {"reference": {"output_tokens": 4}}}
    meta["notes"]["vllm_offline"]["modes"].pop("compiled")
    table = variant_frame()
    found = Y.yardsticks(peer_frame(), meta, {"reference": {"vllm_modes": ["eager"]}}, table, ROOF, [1, 8])
    json.dumps(found)  # findings.json holds it
    section = {"findings": {"batch_sizes": [1, 8], "yardsticks": found, "vllm_offline": {"against_best": []}},
               "meta": meta}
    text = environment(language).get_template("d5_variants/yardsticks.md.j2").render(section=section)
    assert "`llama.cpp q8_0`" in text and "`vLLM eager`" in text and "`int8wo_bf16`" in text
    # 8-bit and 4-bit met; batch 8 missed by the fastest exact variant (sdpa); f32: no yardstick
    assert text.count("✅") == 2 and text.count("❌") == 1
    exact = "the best exact variant's decode tok/s" if language == "en" else "最好的精确变体的解码 tok/s"
    assert exact in text
    assert ("add `compiled` to `d5_variants.reference.vllm_modes`" if language == "en" else
            "加上 `compiled`") in text
    header = next(line for line in text.splitlines() if line.startswith("| system |") or line.startswith("| 系统 |"))
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == 9 and {row.count("|") for row in rows} == {header.count("|")}  # a missing one: as wide
