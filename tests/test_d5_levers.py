"""D5's kernel levers on the tiny model: int4 weight-only storage (exact on a representable weight, its bytes per
step), oneDNN prepacked linears and Inductor's freezing (the reference's greedy tokens), int4's match share."""
import pytest
import torch

from profiling.model import provision
from profiling.phases.d5_variants import variants as V
from profiling.phases.d5_variants.experiment import token_match
from profiling.quantize import Int4WeightOnlyLinear, quantize_int4_weight_only
from profiling.timing import StageClock


@pytest.fixture
def tiny_inputs(tmp_path, monkeypatch):
    """(input_ids, attention_mask) of two left-padded prompts for the provisioned tiny model."""
    from profiling.engine import encode_prompts
    from profiling.model import load_tokenizer

    monkeypatch.chdir(tmp_path)
    provision("tiny-random", tmp_path / "resources" / "models" / "tiny-random")
    return encode_prompts(load_tokenizer("tiny-random"), ["Why is the sky blue?", "Hello"], "cpu")


def generate(name: str, inputs, new_tokens: int = 6) -> torch.Tensor:
    return V.build(name, "tiny-random", "cpu").generate(*inputs, new_tokens, StageClock("cpu"))


def representable_linear(out_features=32, in_features=64, group_size=32) -> torch.nn.Linear:
    """A Linear whose every group of `group_size` weights is low + code * scale with codes 0..15, 0 and 15 present:
    4-bit storage holds it exactly."""
    torch.manual_seed(0)
    codes = torch.randint(0, 16, (out_features, in_features // group_size, group_size)).float()
    codes[..., 0], codes[..., 1] = 0, 15
    scales = torch.rand(out_features, in_features // group_size, 1) * 0.01 + 0.001
    lows = torch.randn(out_features, in_features // group_size, 1) * 0.05
    linear = torch.nn.Linear(in_features, out_features, bias=True)
    linear.weight.data = (lows + codes * scales).reshape(out_features, in_features)
    return linear


def test_int4_linear_is_exact_on_a_representable_weight_and_close_on_a_random_one():
    linear = representable_linear()
    x = torch.randn(3, 64)
    quantized = Int4WeightOnlyLinear(linear, torch.float32, group_size=32)
    assert quantized.weight.dtype == torch.uint8 and quantized.weight.shape == (32, 32)  # two codes per byte
    assert quantized.scales_and_zeros.shape == (2, 32, 2)  # (groups, out_features, scale and zero)
    torch.testing.assert_close(quantized(x), linear(x), rtol=1e-4, atol=1e-5)

    torch.manual_seed(1)
    random = torch.nn.Linear(64, 48)
    for dtype in (torch.float32, torch.bfloat16):
        out = Int4WeightOnlyLinear(random, dtype, group_size=32)(x.to(dtype)).float()
        assert out.shape == (3, 48)
        assert (out - random(x)).abs().max() / random(x).abs().max() < 0.15
    with pytest.raises(ValueError, match="group_size"):
        Int4WeightOnlyLinear(torch.nn.Linear(48, 16), torch.float32, group_size=32)
    with pytest.raises(ValueError, match="16"):
        Int4WeightOnlyLinear(torch.nn.Linear(64, 8), torch.float32, group_size=32)


def test_int4_step_weight_bytes_are_half_a_byte_plus_a_scale_and_zero_per_group():
    model = torch.nn.Sequential(torch.nn.Linear(64, 32, bias=False), torch.nn.Linear(32, 16, bias=False),
                                torch.nn.Linear(32, 8, bias=False))  # 8 rows: not a multiple of 16, not quantised
    assert V.step_weight_bytes(model) == (64 * 32 + 32 * 16 + 32 * 8) * 4
    assert quantize_int4_weight_only(model, torch.bfloat16, group_size=32) == 2
    codes = (64 * 32 + 32 * 16) // 2
    scales_and_zeros = (64 // 32 * 32 + 32 // 32 * 16) * 2 * 2  # bfloat16 scale and zero per group and row
    assert V.step_weight_bytes(model) == codes + scales_and_zeros + 32 * 8 * 2  # + the bfloat16 leftover


def test_unavailable_reasons_of_the_levers():
    assert "CPU" in V.unavailable_reason(V.Spec(quant="int4_weight_only", dtype="bfloat16"), "cuda")
    assert V.unavailable_reason(V.Spec(linears="prepacked"), "cuda")
    assert "CPU" in V.unavailable_reason(V.Spec(linears="small_batch"), "cuda")
    assert "compile" in V.unavailable_reason(V.Spec(freezing=True), "cpu")
    for name, spec in V.CATALOG.items():
        if spec.quant in ("int4_weight_only", "int8_weight_only") and name != "int8wo" \
                and spec.linears != "small_batch":  # our kernel takes float32 activations
            assert spec.dtype == "bfloat16", name  # torch's kernels' fast path on a CPU


def test_freezing_is_an_option_of_one_compilation_not_the_global_config():
    import torch._inductor.config as inductor_config

    assert V.compile_options("default", False) == {"mode": None}
    assert V.compile_options("default", True) == {"options": {"freezing": True}}
    assert V.compile_options("reduce-overhead", True)["options"]["freezing"] is True
    before = inductor_config.freezing
    step = V.compiled(lambda x: x * 2, "default", True)
    with torch.no_grad():
        assert torch.equal(step(torch.ones(3)), torch.full((3,), 2.0))
    assert inductor_config.freezing == before


def test_prepacked_variant_gives_the_reference_tokens(tiny_inputs):
    from profiling.prepack import PrepackedLinear

    reference = generate("reference", tiny_inputs)
    built = V.build("prepacked_sdpa", "tiny-random", "cpu")
    assert sum(isinstance(module, PrepackedLinear) for module in built.model.modules()) == 2 * 7 + 1
    assert built.weight_bytes == V.build("reference", "tiny-random", "cpu").weight_bytes  # packed once, read once
    assert torch.equal(built.generate(*tiny_inputs, 6, StageClock("cpu")), reference)


def test_frozen_compiled_variant_gives_the_reference_tokens(tiny_inputs):
    reference = generate("reference", tiny_inputs)
    built = V.build("sdpa_static_compile_frozen", "tiny-random", "cpu")
    assert built.spec.freezing and built.decoder is not None
    # every decoder's step shares one code object: room for variants x batch sizes compiled graphs of it
    assert torch._dynamo.config.recompile_limit >= V.RECOMPILE_LIMIT
    tokens = built.generate(*tiny_inputs, 6, StageClock("cpu"))
    assert torch.equal(tokens, reference)


def test_int4_variant_generates_and_its_match_share_is_computed(tiny_inputs):
    reference = generate("reference", tiny_inputs)
    built = V.build("int4wo_bf16_sdpa", "tiny-random", "cpu")
    assert any(isinstance(module, Int4WeightOnlyLinear) for module in built.model.modules())
    # the tiny vocabulary (259 rows) does not fit the kernel (rows in 16s): its lm_head stays a bfloat16 Linear
    assert type(built.model.lm_head) is torch.nn.Linear and built.model.lm_head.weight.dtype == torch.bfloat16
    assert built.weight_bytes < 0.25 * V.build("reference", "tiny-random", "cpu").weight_bytes
    tokens = built.generate(*tiny_inputs, 6, StageClock("cpu"))
    assert tokens.shape == reference.shape and tokens.dtype == reference.dtype
    share = token_match(tokens.flatten().tolist(), reference.flatten().tolist())
    assert 0.0 <= share <= 1.0


def test_the_schema_enumerates_every_catalogued_variant():
    import yaml

    from conftest import REPO

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    variants = schema["properties"]["d5_variants"]["properties"]["variants"]
    assert set(variants["items"]["enum"]) == set(V.CATALOG)
    assert set(variants["default"]) <= set(V.CATALOG)
