"""The D2 analytic model (FLOPs, bytes) checked against real computation on the tiny model, and the ceilings."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from profiling.phases.d2_bottlenecks import ceilings
from profiling.phases.d2_bottlenecks.costs import decode_context_tokens, decode_step_cost, forward_cost, prefill_cost
from profiling.engine import generate
from profiling.shapes import Shapes, kv_cache_bytes


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    """FlopCounterMode has no formula for the CPU flash-attention kernel SDPA dispatches to: count it as it
    counts the CUDA SDPA kernels (Q K^T and scores x V over the whole context)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


FLOP_COUNTER_EXTRA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}


def counted_flops(model, input_ids, new_tokens, use_cache, custom_mapping=FLOP_COUNTER_EXTRA):
    """FLOPs torch's FlopCounterMode counts for one engine generation (prefill + new_tokens - 1 decode steps)."""
    with FlopCounterMode(display=False, custom_mapping=custom_mapping) as counter:
        generate(model, input_ids, torch.ones_like(input_ids), new_tokens, use_cache=use_cache)
    return counter.get_total_flops()


def analytic_cost(shapes, batch, prompt_tokens, new_tokens, use_cache):
    """The same generation's cost from the analytic model: the prefill plus each decode step at its context."""
    total = prefill_cost(shapes, batch, prompt_tokens, 4, use_cache)
    for step in range(1, new_tokens):
        total += decode_step_cost(shapes, batch, decode_context_tokens(prompt_tokens, step), 4, use_cache)
    return total


@pytest.mark.parametrize("use_cache", [True, False])
def test_analytic_flops_match_torch_flop_counter_within_1_percent(tiny, use_cache):
    model, _ = tiny
    shapes = Shapes.from_config(model.config)
    batch, prompt_tokens, new_tokens = 2, 7, 4
    input_ids = torch.randint(0, shapes.vocab - 3, (batch, prompt_tokens), generator=torch.Generator().manual_seed(0))
    counted = counted_flops(model, input_ids, new_tokens, use_cache)
    expected = analytic_cost(shapes, batch, prompt_tokens, new_tokens, use_cache)
    assert counted == pytest.approx(expected.flops, rel=0.01)
    # attention on its own: what the CPU attention kernel adds to the count
    without_attention = counted_flops(model, input_ids, new_tokens, use_cache, custom_mapping={})
    assert counted - without_attention == pytest.approx(expected.attention_flops, rel=0.01)
    assert expected.attention_flops > 0


def test_lm_head_runs_on_the_last_position_only(tiny):
    """logits_to_keep=1, as the engine passes it: the model computes one position of logits, and the analytic
    prefill's lm_head FLOPs do not grow with the prompt."""
    model, _ = tiny
    with torch.inference_mode():
        logits = model(input_ids=torch.ones(1, 40, dtype=torch.long), logits_to_keep=1).logits
    assert logits.shape[1] == 1
    shapes = Shapes.from_config(model.config)
    short, long = prefill_cost(shapes, 1, 4, 4), prefill_cost(shapes, 1, 40, 4)
    assert short.lm_head_flops == long.lm_head_flops == 2 * shapes.hidden * shapes.vocab
    assert long.linear_flops == 10 * short.linear_flops


def test_weight_bytes_cover_every_parameter_but_the_embedding_table(tiny):
    model, _ = tiny
    shapes = Shapes.from_config(model.config)
    cost = decode_step_cost(shapes, batch=3, context_tokens=10, bytes_per_element=4)
    embedding_table = shapes.vocab * shapes.hidden * 4
    embedding_rows = 3 * shapes.hidden * 4  # one new token per sequence
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert cost.weight_bytes - embedding_rows == parameter_bytes - embedding_table


def test_kv_writes_match_the_cache_the_engine_builds(tiny):
    """With the cache, a decode step's KV write is the whole grown cache (torch.cat copies it): compare with the
    cache's real tensors after the step."""
    model, _ = tiny
    shapes = Shapes.from_config(model.config)
    batch, prompt_tokens, new_tokens = 2, 5, 3
    input_ids = torch.randint(0, shapes.vocab - 3, (batch, prompt_tokens))
    generation = generate(model, input_ids, torch.ones_like(input_ids), new_tokens)
    cache_bytes = sum(tensor.numel() * tensor.element_size() for layer in generation.cache.layers
                      for tensor in (layer.keys, layer.values))
    last_step = decode_step_cost(shapes, batch, decode_context_tokens(prompt_tokens, new_tokens - 1), 4)
    assert last_step.kv_write_bytes == cache_bytes == kv_cache_bytes(shapes, prompt_tokens + new_tokens - 1, batch, 4)
    assert last_step.kv_read_bytes == 2 * cache_bytes  # the cat's read and attention's read


def test_decode_intensity_grows_with_batch_and_prefill_is_far_more_intense(tiny):
    model, _ = tiny
    shapes = Shapes.from_config(model.config)
    one, many = decode_step_cost(shapes, 1, 16, 4), decode_step_cost(shapes, 16, 16, 4)
    assert many.intensity > 4 * one.intensity
    assert prefill_cost(shapes, 1, 64, 4).intensity > 10 * one.intensity
    no_cache = decode_step_cost(shapes, 1, 16, 4, use_cache=False)
    assert no_cache.flops == forward_cost(shapes, 1, 17, 0, 4, use_cache=False).flops > 10 * one.flops


def test_ceilings_are_positive_and_finite():
    cfg = {"ceiling_repeats": 3, "copy_mib": 4, "matmul_size": 64, "matvec_size": 128, "tiny_op_calls": 20}
    measured = ceilings.measure_all("cpu", torch.float32, cfg)
    records = {ceiling.name: ceiling.record() for ceiling in measured}
    assert set(records) == {"memory_bandwidth", "memory_read", "matmul", "matvec", "tiny_op"}  # no host<->device on the CPU
    for name, key in (("memory_bandwidth", "bytes_per_s"), ("matmul", "flop_per_s"), ("matvec", "bytes_per_s"),
                      ("matvec", "flop_per_s"), ("tiny_op", "seconds_per_call")):
        value = records[name][key]
        assert math.isfinite(value) and value > 0, (name, key)
        assert records[name]["n"] == 3
    assert records["memory_bandwidth"]["work_bytes"] == 2 * 4 * 2**20  # read + written
    assert records["memory_read"]["work_bytes"] == 4 * 2**20 and records["memory_read"]["bytes_per_s"] > 0
    low, high = records["matmul"]["flop_per_s_range"]
    assert low <= records["matmul"]["flop_per_s"] <= high


def test_the_matmul_ceiling_is_the_faster_kernel(monkeypatch):
    # oneDNN's packed GEMM made to look slow: torch.mm must then set the ceiling, and the other way round
    real = ceilings.time_repeats

    def slowed(which):
        def timed(run, device, repeats, warmup=1):
            seconds = real(run, device, repeats, warmup)
            is_packed = "packed_linear" in run.__code__.co_names + run.__code__.co_freevars
            return [s * 100 for s in seconds] if is_packed == (which == "oneDNN") else seconds
        return timed

    for slow, expected in (("oneDNN", "torch.mm"), ("torch.mm", "oneDNN")):
        monkeypatch.setattr(ceilings, "time_repeats", slowed(slow))
        ceiling = ceilings.matmul("cpu", torch.float32, 128, 3)
        assert ceiling.name == "matmul" and expected in ceiling.label, (slow, ceiling.label)
        assert ceiling.work_flops == 2 * 128**3
