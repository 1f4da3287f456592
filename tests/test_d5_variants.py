"""D5 variants on the tiny model: the contract files with every configured variant (or its `unavailable` row),
agreement between variants that must agree, int8 bytes, and the analysis' derived numbers from hand-made rows."""
import gzip
import json

import pandas as pd
import pytest
import torch

from profiling.report.templating import answer, environment
from profiling.config import check_config, run_config
from profiling.metrics import CONTRACT_COLUMNS, Measurements
from profiling.model import provision
from profiling.phases.d5_variants import analysis as d5_analysis
from profiling.phases.d5_variants import experiment as d5_experiment
from profiling.phases.d5_variants import variants as V
from profiling.timing import StageClock


@pytest.fixture
def provisioned(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    provision("tiny-random", tmp_path / "resources" / "models" / "tiny-random")
    return tmp_path


def d5_settings(variants, batch_sizes=(1, 2)):
    config = check_config({"model": "tiny-random", "device": "cpu", "threads": 1})
    return {**run_config(config), "d5_variants": {
        "variants": list(variants), "prompt": "Why is the sky blue?", "chat_template": False,
        "batch_sizes": list(batch_sizes), "costly_batch_sizes": [1], "max_new_tokens": 4, "warmup": 1, "repeats": 2,
        "trace_decode_steps": 2}}


def test_experiment_writes_every_variant_as_rows_or_unavailable(provisioned, monkeypatch):
    # a variant whose build fails (an attention implementation that does not exist) must become a row too
    monkeypatch.setitem(V.CATALOG, "broken", V.Spec(attn="no_such_attention"))
    # a compiled variant (its compilation skipped: too slow for a unit test) runs at costly_batch_sizes only
    monkeypatch.setitem(V.CATALOG, "compiled", V.Spec(cache="static", compile="default"))
    monkeypatch.setattr(V, "compiled", lambda fn, mode, freezing, **kwargs: fn)
    names = ["reference", "sdpa", "int8wo_bf16", "static", "cuda_graphs", "broken", "compiled"]
    settings = d5_settings(names)
    out = provisioned / "out"
    traces = [out / "traces" / f"{name}.json.gz" for name in names]
    d5_experiment.run(settings, out / "measurements.csv", out / "meta.json", traces)

    frame = pd.read_csv(out / "measurements.csv")
    meta = json.loads((out / "meta.json").read_text())
    assert list(frame.columns[:len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
    assert set(frame["variant"]) == set(names)
    unavailable = set(frame.loc[frame["metric"] == "unavailable", "variant"])
    assert unavailable == {"cuda_graphs", "broken"}
    assert "CUDA" in meta["notes"]["unavailable"]["cuda_graphs"]
    assert "failed" in meta["notes"]["unavailable"]["broken"]
    timed = frame[frame["traced"] == 0]
    for name in ("reference", "sdpa", "int8wo_bf16", "static"):
        for batch in (1, 2):
            steps = timed[(timed["variant"] == name) & (timed["metric"] == "decode_step_s")
                          & (timed["batch_size"] == batch)]
            assert len(steps) == 2 * 3  # repeats x (max_new_tokens - 1)
        for metric in ("build_s", "peak_memory_bytes", "step_weight_bytes", "warmup_s", "token_match_ratio",
                       "first_logit_max_abs_diff", "step_kv_bytes", "output_tok_per_s", "prefill_s"):
            assert metric in set(frame.loc[frame["variant"] == name, "metric"]), (name, metric)
    compiled_steps = timed[(timed["variant"] == "compiled") & (timed["metric"] == "decode_step_s")]
    assert set(compiled_steps["batch_size"]) == {1}
    assert meta["notes"]["not_run"] == {"compiled": {"batch_sizes": [2], "reason": d5_experiment.not_run_reason(
        "compiled", V.spec_of("compiled"), settings["d5_variants"])}}
    match = frame[frame["metric"] == "token_match_ratio"].set_index(["variant", "batch_size"])["value"]
    assert match[("reference", 1)] == 1.0 and match[("sdpa", 1)] == 1.0 and match[("static", 2)] == 1.0
    weights = frame[frame["metric"] == "step_weight_bytes"].set_index("variant")["value"]
    assert weights["int8wo_bf16"] < 0.3 * weights["reference"]
    for name, path in zip(names, traces):
        with gzip.open(path, "rt") as f:
            events = json.load(f)["traceEvents"]
        if name in unavailable:  # an empty trace that opens, for every declared file
            assert events == []
            continue
        spans = {e["name"] for e in events if e.get("cat") == "user_annotation"}
        steps = {f"decode_step[{step}]" for step in range(1, settings["d5_variants"]["trace_decode_steps"] + 1)}
        assert {"prefill"} | steps <= spans, (name, spans)
        assert any(e.get("cat") == "cpu_op" for e in events), name
    traced = frame[frame["traced"] == 1]
    assert set(traced["variant"]) == {"reference", "sdpa", "int8wo_bf16", "static", "compiled"}


def test_eager_sdpa_and_static_cache_give_the_same_greedy_tokens(provisioned):
    from profiling.engine import encode_prompts
    from profiling.model import load_tokenizer

    tokenizer = load_tokenizer("tiny-random")
    # two prompts of different lengths: the batch is left-padded
    input_ids, attention_mask = encode_prompts(tokenizer, ["Why is the sky blue?", "Hello"], "cpu")
    tokens = {name: V.build(name, "tiny-random", "cpu").generate(input_ids, attention_mask, 6, StageClock("cpu"))
              for name in ("reference", "sdpa", "static")}
    assert torch.equal(tokens["reference"], tokens["sdpa"])
    assert torch.equal(tokens["reference"], tokens["static"])


def test_int8_weight_only_linear_is_close_and_reads_a_quarter_of_the_bytes():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    from profiling.quantize import Int8WeightOnlyLinear

    quantized = Int8WeightOnlyLinear(linear, torch.float32)
    x = torch.randn(3, 64)
    reference = linear(x)
    error = (quantized(x) - reference).abs().max() / reference.abs().max()
    assert error < 0.02
    model = torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False))
    before = V.step_weight_bytes(model)
    V.quantize_int8_weight_only(model, torch.float32)
    assert V.step_weight_bytes(model) == 64 * 64 + 64 * 4  # int8 weights + one float32 scale per row
    assert before == 64 * 64 * 4


def test_unavailable_reasons_before_building():
    assert "CUDA" in V.unavailable_reason(V.spec_of("cuda_graphs"), "cpu")
    assert V.unavailable_reason(V.spec_of("float16"), "cpu")
    assert V.unavailable_reason(V.spec_of("int8_dynamic"), "cuda")
    assert V.unavailable_reason(V.spec_of("bfloat16"), "cpu") is None


def hand_made_rows(path):
    """Reference steps 0.1 s and a variant 'fast' at 0.04 s; weights 1e9 and 0.25e9 bytes per step."""
    rows = Measurements("d5_variants")
    for variant, step_s, weight_bytes in (("reference", 0.1, 1e9), ("fast", 0.04, 0.25e9)):
        for batch, scale in ((1, 1.0), (8, 2.0)):
            knobs = {"batch_size": batch, "traced": 0}
            for repeat in range(3):
                for step in range(1, 5):
                    jitter = 1 + 0.01 * ((repeat + step) % 3 - 1)
                    rows.add(variant, repeat, "decode_step_s", step_s * scale * jitter, request_id=-1, step=step,
                             **knobs)
                rows.add(variant, repeat, "prefill_s", 2 * step_s, request_id=-1, **knobs)
                rows.add(variant, repeat, "e2e_s", 6 * step_s * scale, **knobs)
                rows.add(variant, repeat, "output_tokens", 5, request_id=-1, **knobs)
                rows.add(variant, repeat, "output_tok_per_s", 5 * batch / (6 * step_s * scale), request_id=-1,
                         **knobs)
                rows.add(variant, repeat, "energy_j", 10.0 * batch, request_id=-1, **knobs)
            rows.add(variant, 0, "warmup_s", 1.0, request_id=-1, batch_size=batch)
            rows.add(variant, 0, "token_match_ratio", 1.0 if variant == "reference" else 0.9, request_id=-1,
                     batch_size=batch)
            rows.add(variant, 0, "first_logit_max_abs_diff", 0.0, request_id=-1, batch_size=batch)
            rows.add(variant, 0, "step_kv_bytes", 1e6 * batch, request_id=-1, batch_size=batch)
        rows.add(variant, 0, "build_s", 0.5, request_id=-1)
        rows.add(variant, 0, "peak_memory_bytes", 2e9, request_id=-1)
        rows.add(variant, 0, "step_weight_bytes", weight_bytes, request_id=-1)
    rows.add("cuda_graphs", 0, "unavailable", 1, request_id=-1)
    rows.write(path)


def test_analysis_computes_speedups_and_roof_shares_from_hand_made_rows(tmp_path):
    hand_made_rows(tmp_path / "measurements.csv")
    (tmp_path / "meta.json").write_text(json.dumps({"notes": {
        "unavailable": {"cuda_graphs": "needs a CUDA GPU (this run is on cpu)"}, "traces": {},
        "not_run": {"fast": {"batch_sizes": [8], "reason": "compiled variants run at batch 1 only"}}}}))
    (tmp_path / "ceilings.json").write_text(json.dumps({"ceilings": {
        "memory_bandwidth": {"bytes_per_s": 1.0e10, "bytes_per_s_range": [0.8e10, 1.2e10]},
        "memory_read": {"bytes_per_s": 1.5e10, "bytes_per_s_range": [1.0e10, 2.0e10]},
        "matmul": {"bytes_per_s": 5e11, "bytes_per_s_range": [4e11, 5e11]}}}))
    settings = {"cv_warn": 0.1, "d5_variants": {"batch_sizes": [1, 8], "warmup": 1}}
    outputs = [tmp_path / name for name in ("summary.csv", "variants.csv", "findings.json")]
    d5_analysis.analyze(settings, tmp_path / "measurements.csv", tmp_path / "meta.json", tmp_path / "ceilings.json",
                        [], *outputs)

    table = pd.read_csv(outputs[1]).set_index(["variant", "batch_size"])
    fast = table.loc[("fast", 1)]
    assert fast["speedup"] == pytest.approx(2.5, rel=1e-6)
    assert fast["speedup_ci95_low"] <= 2.5 <= fast["speedup_ci95_high"]
    assert fast["roof_bytes_per_s"] == 2.0e10  # the highest bandwidth, not the matmul's bytes/s
    assert fast["roof_share"] == pytest.approx(0.25e9 / 0.04 / 2.0e10)
    assert table.loc[("reference", 1), "roof_share"] == pytest.approx(1e9 / 0.1 / 2.0e10)
    assert fast["energy_per_token_j"] == pytest.approx(10.0 / 5)
    assert fast["one_off_s"] == pytest.approx(0.5 + 1.0 - 6 * 0.04)
    assert fast["decode_tok_per_s"] == pytest.approx(1 / 0.04)
    assert not table.loc[("cuda_graphs", 1), "available"]
    assert not table.loc[("fast", 8), "available"] and table.loc[("fast", 8), "reason"].startswith("compiled")

    findings = json.loads(outputs[2].read_text())
    assert findings["best_variant"] == "fast"
    assert findings["best_speedup_b1"] == pytest.approx(2.5)
    assert findings["roof_source"] == "memory_read"
    assert findings["not_run"] == {"fast": [8]}
    # the batching direction reads a variant that ran at the largest batch: fast did not, so the reference
    batching = next(d for d in findings["directions"] if d["limit"] == "batching")
    assert batching["numbers"]["best_variant"] == "reference" and batching["numbers"]["large_batch"] == 8
    sentence = answer(environment(), "d5_variants", findings, "directions")
    assert "the best variant, fast, 2.50× faster" in sentence and "; next: " in sentence
    assert findings["directions"]
    assert all(d["line"] in ("kernel", "serving", "systems") for d in findings["directions"])
    headrooms = [d["headroom_s_per_token"] for d in findings["directions"]]
    assert headrooms == sorted(headrooms, reverse=True)


def test_analysis_without_ceilings_says_so(tmp_path):
    assert d5_analysis.roof_bandwidth(None)["source"] is None
    hand_made_rows(tmp_path / "measurements.csv")
    (tmp_path / "meta.json").write_text(json.dumps({"notes": {"unavailable": {}, "traces": {}}}))
    settings = {"cv_warn": 0.1, "d5_variants": {"batch_sizes": [1, 8], "warmup": 1}}
    outputs = [tmp_path / name for name in ("summary.csv", "variants.csv", "findings.json")]
    d5_analysis.analyze(settings, tmp_path / "measurements.csv", tmp_path / "meta.json", None, [], *outputs)
    findings = json.loads(outputs[2].read_text())
    assert findings["roof_note"]
    assert "no bandwidth roof" in answer(environment(), "d5_variants", findings, "directions")


def test_a_variant_named_in_costly_variants_runs_at_costly_batch_sizes_only():
    cfg = {"batch_sizes": [1, 8, 16], "costly_batch_sizes": [1], "costly_variants": ["sdpa"]}
    assert d5_experiment.batches_of("sdpa", V.spec_of("sdpa"), cfg) == [1]
    assert d5_experiment.batches_of("reference", V.spec_of("reference"), cfg) == [1, 8, 16]
    assert d5_experiment.batches_of("threads_1", V.spec_of("threads_1"), cfg) == [1]
    assert "costly_variants" in d5_experiment.not_run_reason("sdpa", V.spec_of("sdpa"), cfg)
    assert "thread scaling" in d5_experiment.not_run_reason("threads_1", V.spec_of("threads_1"), cfg)
