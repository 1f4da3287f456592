"""Our fused decoder layer (profiling/kernels/decoder_layer.c, fused_decoder.py) on the tiny model: D5's fused
variants give the reference's greedy tokens over left-padded prompts, one layer call equals transformers' layer,
bad inputs are refused by name, and a real trace of a fused step splits into the fused part with its weight bytes."""
import pytest
import torch

from profiling.kernels import small_batch
from profiling.phases.d5_variants import step_split as split
from profiling.phases.d5_variants import variants as V
from profiling.timing import StageClock
from tests.test_d5_levers import generate, tiny_inputs  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(not small_batch.available(),
                                reason=f"our C kernels cannot be built here: {small_batch.unavailable_reason()}")


def test_the_fused_variants_give_the_tokens_of_their_unfused_twins(tiny_inputs):  # noqa: F811
    reference = generate("reference", tiny_inputs, 8)
    assert torch.equal(generate("small_batch_fused", tiny_inputs, 8), reference)
    assert torch.equal(generate("int8wo_small_batch_fused", tiny_inputs, 8),
                       generate("int8wo_small_batch_sdpa", tiny_inputs, 8))
    assert torch.equal(generate("int4wo_small_batch_fused", tiny_inputs, 8),
                       generate("int4wo_small_batch_sdpa", tiny_inputs, 8))


def test_the_int8_activation_variants_are_their_twins_on_q8_0_rounded_activations(tiny_inputs):  # noqa: F811
    """w8a8 and w4a8 layers equal their int8 and int4 twins fed x rounded as q8_0 rounds it, in the same storage;
    the generated tokens (approximate) mostly match the int8 variant's."""
    from tests.test_small_batch import q8_0_activations

    w8a8 = V.build("w8a8_small_batch_fused", "tiny-random", "cpu")
    int8 = V.build("int8wo_small_batch_fused", "tiny-random", "cpu")
    assert w8a8.model.fused_decoder.int8_activations and not int8.model.fused_decoder.int8_activations
    assert w8a8.weight_bytes == int8.weight_bytes
    lm_w8a8, lm_int8 = w8a8.model.lm_head, int8.model.lm_head
    x = torch.randn(2, lm_w8a8.in_features)
    with torch.inference_mode():
        torch.testing.assert_close(lm_w8a8(x), lm_int8(q8_0_activations(x)), rtol=1e-5, atol=1e-5)
    w4a8 = V.build("w4a8_small_batch_fused", "tiny-random", "cpu")
    int4 = V.build("int4wo_small_batch_fused", "tiny-random", "cpu")
    assert w4a8.model.fused_decoder.int8_activations and w4a8.weight_bytes == int4.weight_bytes
    with torch.inference_mode():
        torch.testing.assert_close(w4a8.model.lm_head(x), int4.model.lm_head(q8_0_activations(x)), rtol=1e-5,
                                   atol=1e-5)
    tokens = generate("w8a8_small_batch_fused", tiny_inputs, 8)
    assert tokens.shape == (tiny_inputs[0].shape[0], 8)
    assert (tokens == generate("int8wo_small_batch_fused", tiny_inputs, 8)).float().mean() >= 0.5


def fused_and_layer(tiny_inputs, name="small_batch_fused"):  # noqa: F811
    built = V.build(name, "tiny-random", "cpu")
    return built, built.model.fused_decoder


def test_one_layer_call_equals_transformers_layer(tiny_inputs):  # noqa: F811
    from transformers import DynamicCache

    built, fused = fused_and_layer(tiny_inputs)
    model, config = built.model, built.model.config
    torch.manual_seed(0)
    prompt = torch.randn(1, 5, config.hidden_size)
    new = torch.randn(1, 1, config.hidden_size)
    layer = model.model.layers[0]
    with torch.inference_mode():
        cache = DynamicCache(config=config)
        positions = torch.arange(6)[None]
        rotary = model.model.rotary_emb(prompt, positions)
        mask = torch.full((5, 5), float("-inf")).triu(1)[None, None]
        layer(prompt, attention_mask=mask, position_ids=positions[:, :5], past_key_values=cache,
              position_embeddings=(rotary[0][:, :5], rotary[1][:, :5]))
        expected = layer(new, attention_mask=None, position_ids=positions[:, 5:], past_key_values=cache,
                         position_embeddings=(rotary[0][:, 5:], rotary[1][:, 5:]))
        expected = expected[0] if isinstance(expected, tuple) else expected
        keys, values = cache.layers[0].keys, cache.layers[0].values  # (1, kv_heads, 6, head_dim)
        key_cache = torch.zeros(1, 8, keys.shape[1], keys.shape[3])
        value_cache = torch.zeros_like(key_cache)
        key_cache[0, :5], value_cache[0, :5] = keys[0, :, :5].transpose(0, 1), values[0, :, :5].transpose(0, 1)
        hidden = new[:, 0].clone()
        input_norm, post_norm, weights, scales, lows = fused.layers[0]
        torch.ops.llm_infer.decoder_layer(hidden, input_norm, post_norm, weights, scales, lows, key_cache,
                                          value_cache, torch.tensor([[0]]), rotary[0][:, 5].contiguous(),
                                          rotary[1][:, 5].contiguous(), torch.tensor([5]), fused.eps)
    torch.testing.assert_close(hidden, expected[:, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(key_cache[0, 5], keys[0, :, 5], rtol=1e-4, atol=1e-5)  # the new key, rotated
    torch.testing.assert_close(value_cache[0, 5], values[0, :, 5], rtol=1e-4, atol=1e-5)


def test_a_full_cache_and_a_wrong_weight_are_refused_by_name(tiny_inputs):  # noqa: F811
    built, fused = fused_and_layer(tiny_inputs)
    config = built.model.config
    input_norm, post_norm, weights, scales, lows = fused.layers[0]
    heads, head_dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    key_cache = torch.zeros(1, 4, heads, head_dim)
    args = (torch.randn(1, config.hidden_size), input_norm, post_norm, weights, scales, lows, key_cache,
            torch.zeros_like(key_cache), torch.tensor([[0]]), torch.ones(1, head_dim), torch.zeros(1, head_dim))
    with pytest.raises(RuntimeError, match=r"a row's cache is full: every lens value must be below max_blocks x "
                                           r"block_size \(4\)"):
        torch.ops.llm_infer.decoder_layer(*args, torch.tensor([4]), fused.eps)
    with pytest.raises(RuntimeError, match=r"a block table names a block outside the pool \(0 \.\. 0\)"):
        torch.ops.llm_infer.decoder_layer(*args[:8], torch.tensor([[1]]), *args[9:], torch.tensor([0]), fused.eps)
    assert weights[3].dim() == 3  # float32 weights go in the panel GEMM's layout
    swapped = [*weights[:3], weights[3].transpose(1, 2), *weights[4:]]  # o's panels as a strided view
    with pytest.raises(RuntimeError, match=r"weight 3 must be contiguous float32 panels \(64 / \d+, 64, \d+\)"):
        torch.ops.llm_infer.decoder_layer(args[0], input_norm, post_norm, swapped, scales, lows, *args[6:],
                                          torch.tensor([0]), fused.eps)


@pytest.mark.parametrize("variant", ["int8wo_small_batch_fused", "w8a8_small_batch_fused", "int4wo_small_batch_fused",
                                     "w4a8_small_batch_fused"])
def test_a_traced_fused_step_is_the_fused_part_with_its_weight_bytes(tiny_inputs, tmp_path, variant):  # noqa: F811
    from torch.profiler import profile

    from profiling.phases.d5_variants.step_split import model_shapes

    built, fused = fused_and_layer(tiny_inputs, variant)
    with profile(record_shapes=True) as trace:
        built.generate(*tiny_inputs, 3, StageClock("cpu"))
    path = tmp_path / "fused.json"
    trace.export_chrome_trace(str(path))
    result = split.summary(split.step_split(path, model_shapes("tiny-random")), roof_bytes_per_s=1e9)
    assert result["decode_steps"] == 2
    assert result["parts_s"]["decoder_layer"] > 0 and result["parts_s"]["linear"] == 0
    layers = {layer["kind"]: layer for layer in result["layers"]}
    assert set(layers) == {"decoder_layer", "lm_head"}
    assert layers["decoder_layer"]["calls_per_step"] == len(fused.layers)
    expected = sum(sum(w.numel() for w in weights) + 4 * sum(s.numel() for s in scales + lows)
                   + 4 * (input_norm.numel() + post_norm.numel())
                   for input_norm, post_norm, weights, scales, lows in fused.layers)  # int8 and int4: bytes
    assert layers["decoder_layer"]["weight_bytes"] == expected
    assert result["weights"]["decoder_layer"]["bytes_traced"]


def test_the_engine_runs_its_decode_steps_fused_when_configured(tiny_inputs, capsys):  # noqa: F811
    from profiling.config import Precision
    from profiling.engine import generate as engine_generate
    from profiling.env import cpu_decoder
    from profiling.model import load_model

    hf = load_model("tiny-random", Precision("cpu", "float32", linears="small_batch"))
    fused = load_model("tiny-random", Precision("cpu", "float32", linears="small_batch", decoder="fused"))
    assert not hasattr(hf, "fused_decoder") and hasattr(fused, "fused_decoder")
    clock, seen = StageClock("cpu"), []
    step = fused.fused_decoder.step
    fused.fused_decoder.step = lambda ids, positions, *rest: seen.append((positions.clone(), rest[-1].clone())) \
        or step(ids, positions, *rest)
    tokens = engine_generate(fused, *tiny_inputs, 8, clock=clock).tokens
    assert torch.equal(tokens, engine_generate(hf, *tiny_inputs, 8).tokens)
    assert len(clock.spans) == 8  # the prefill and 7 decode steps, timed as the engine's own
    real = tiny_inputs[1].sum(-1)  # each row's prompt tokens (left padding excluded)
    for index, (positions, lens) in enumerate(seen, start=1):  # step i: the token at position prompt - 1 + i,
        assert torch.equal(positions, real - 1 + index)        # after prompt - 1 + i keys
        assert torch.equal(lens, real - 1 + index)
    # an end-of-sequence token stops a row, as transformers' path does
    eos = int(tokens[0, 2])
    assert torch.equal(engine_generate(fused, *tiny_inputs, 8, eos_token_id=eos).tokens,
                       engine_generate(hf, *tiny_inputs, 8, eos_token_id=eos).tokens)
    # where it cannot run, the load says why and keeps transformers' modules; env.json records what runs
    packed = load_model("tiny-random", Precision("cpu", "float32", linears="prepacked", decoder="fused"))
    assert not hasattr(packed, "fused_decoder")
    assert "cpu_decoder: fused: the fused decoder layer needs every projection on our small-batch kernel" in \
        capsys.readouterr().err
    assert cpu_decoder(Precision("cpu", "float32", linears="small_batch", decoder="fused")) == "fused"
    assert cpu_decoder(Precision("cpu", "float32", linears="prepacked", decoder="fused")) == "hf"
    assert cpu_decoder(Precision("cuda", "float16", decoder="fused")) is None
