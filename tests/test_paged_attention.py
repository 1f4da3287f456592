"""Our paged decode attention kernel (profiling/kernels/paged_attention.c) against SDPA over the same keys gathered
and masked: ragged lengths, grouped-query heads, blocks scattered over the pool, one and two threads; bad lengths
refused by name; the paged runner's choice and its fallback; the server's tokens with either path."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from profiling.kernels import build
from profiling.serving.engine.paged_runner import PagedKVPool, PagedRunner

pytestmark = pytest.mark.skipif(not build.available(),
                                reason=f"our CPU kernels cannot be built here: {build.unavailable_reason()}")


def reference(q, key_pool, value_pool, tables, lens, scale):
    """SDPA over each row's keys gathered through its block table (what the kernel must equal)."""
    rows, heads, head_dim = q.shape
    kv_heads = key_pool.shape[2]
    out = torch.empty_like(q)
    for r in range(rows):
        keys = key_pool[tables[r]].reshape(-1, kv_heads, head_dim)[:lens[r]].transpose(0, 1)[None]
        values = value_pool[tables[r]].reshape(-1, kv_heads, head_dim)[:lens[r]].transpose(0, 1)[None]
        out[r] = F.scaled_dot_product_attention(q[r][None, :, None], keys, values, scale=scale,
                                                enable_gqa=True)[0, :, 0]
    return out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(9, 3, 64), (4, 4, 24), (8, 1, 16)])
def test_the_kernel_equals_sdpa_over_the_gathered_blocks(threads, heads, kv_heads, head_dim):
    torch.manual_seed(0)
    block_size, num_blocks = 16, 64
    lens = torch.tensor([1, 16, 17, 100, 45, 160])  # one key, a full block, one past it, ragged tails
    width = int(-(-lens.max() // block_size))
    key_pool = torch.randn(num_blocks, block_size, kv_heads, head_dim)
    value_pool = torch.randn_like(key_pool)
    tables = torch.randperm(num_blocks)[:len(lens) * width].view(len(lens), width)  # scattered over the pool
    q = torch.randn(len(lens), heads, head_dim) * 3  # peaked softmaxes as well as flat ones
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        got = torch.ops.llm_infer.paged_decode_attention(q, key_pool, value_pool, tables, lens, head_dim ** -0.5)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(got, reference(q, key_pool, value_pool, tables, lens, head_dim ** -0.5),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad_len", [0, 33])
def test_a_length_outside_the_block_table_is_refused(bad_len):
    pool = torch.zeros(4, 16, 1, 8)
    tables = torch.tensor([[0, 1]])
    with pytest.raises(RuntimeError, match="seq_len must be between 1 and max_blocks"):
        torch.ops.llm_infer.paged_decode_attention(torch.zeros(1, 2, 8), pool, pool, tables,
                                                   torch.tensor([bad_len]), 1.0)


@pytest.mark.parametrize("bad_block", [-1, 4])
def test_a_block_outside_the_pool_is_refused_not_read(bad_block):
    pool = torch.zeros(4, 16, 1, 8)
    tables = torch.tensor([[0, bad_block], [1, 2]])
    with pytest.raises(RuntimeError, match=r"names a block outside the pool \(0 \.\. 3\)"):
        torch.ops.llm_infer.paged_decode_attention(torch.zeros(2, 2, 8), pool, pool, tables,
                                                   torch.tensor([20, 3]), 1.0)
    # a padding entry past a row's length is never read, whatever it holds
    torch.ops.llm_infer.paged_decode_attention(torch.zeros(2, 2, 8), pool, pool, tables, torch.tensor([16, 3]), 1.0)


def test_the_runner_uses_the_kernel_for_float32_on_a_cpu_and_says_why_not_otherwise():
    from profiling.model import build_tiny_model

    model = build_tiny_model(seed=0)[0]  # its own: the runner switches the model's attention function
    assert PagedRunner(model, PagedKVPool(model.config, 8, 4, torch.float32, "cpu")).paged_attention == "kernel"
    assert PagedRunner(model, PagedKVPool(model.config, 8, 4, torch.float32, "cpu"),
                       "sdpa").paged_attention == "sdpa"
    half = PagedRunner(model, PagedKVPool(model.config, 8, 4, torch.bfloat16, "cpu"))
    assert half.paged_attention == "sdpa" and "float32" in half.kernel_note


def test_the_runner_fuses_decode_steps_only_over_our_kernels_and_says_why_not_otherwise():
    from profiling.kernels.small_batch import use_small_batch_kernels
    from profiling.model import build_tiny_model
    from profiling.serving.engine.paged_runner import fused_decoder_runs

    model = build_tiny_model(seed=0)[0]  # nn.Linear layers: the fused layer needs our small-batch ones
    plain = PagedRunner(model, PagedKVPool(model.config, 8, 4, torch.float32, "cpu"))
    assert plain.decoder == "hf" and "small-batch kernel" in plain.decoder_note
    use_small_batch_kernels(model)
    assert PagedRunner(model, PagedKVPool(model.config, 8, 4, torch.float32, "cpu")).decoder == "fused"
    asked_hf = PagedRunner(model, PagedKVPool(model.config, 8, 4, torch.float32, "cpu"), decoder="hf")
    assert asked_hf.decoder == "hf" and asked_hf.decoder_note is None
    over_sdpa = PagedRunner(model, PagedKVPool(model.config, 8, 4, torch.float32, "cpu"), "sdpa")
    assert over_sdpa.decoder == "hf" and "paged attention kernel" in over_sdpa.decoder_note
    # what D4's notes record for its servers, without a model
    assert fused_decoder_runs("fused", "kernel", "small_batch") == "fused"
    assert {fused_decoder_runs("fused", "sdpa", "small_batch"), fused_decoder_runs("fused", "kernel", "prepacked"),
            fused_decoder_runs("hf", "kernel", "small_batch")} == {"hf"}
