"""Micro-benchmark of attention over paged, ragged KV on this machine: the candidates the paged runner chose from.

    python -m profiling.serving.bench.paged_attention [--batch 16] [--context 192] [--threads 1]

One layer of SmolLM2-135M's shape (9 query heads, 3 KV heads, head_dim 64), KV in a pool of 16-token blocks,
`batch` decoding sequences of `context` tokens plus one prompt chunk of `chunk` tokens at offset `context`:

    decode, per-sequence loop     gather each sequence's slots, one SDPA per sequence
    decode, slot gather           every sequence's token slots gathered into (batch, L_max) + a mask, one SDPA
    decode, block gather          the same, gathered a block at a time (index_select of the block tables),
                                  with a bool padding mask, or with an additive one (0 / -inf, built once per
                                  step: the runner's `paged_attention: sdpa`)
    decode, our kernel            kernels/paged_attention.c: keys and values read in place through the block
                                  tables, no gather, no mask (the runner's default on a CPU in float32)
    chunk, offset causal          the chunk's blocks gathered, one SDPA with a causal mask shifted by the offset
    mixed, one packed SDPA        every row (decodes and the chunk) against every gathered key, with one
                                  block-diagonal causal mask (what a single varlen call would do without a kernel)

Prints the median milliseconds per layer over `repeats` calls (the model runs 30 layers per step). Every call
reads the same pool, which then sits in the CPU's caches; a model's 30 layers each read their own, from memory,
so the kernel's lead over the block gather is larger in the server (its decode step at batch 11, 1 thread: the
attention from ~15 to ~8 ms).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 9, 3, 64, 16


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def candidates(batch: int, context: int, chunk: int) -> dict:
    """name -> a function running that candidate once."""
    blocks_each = -(-(context + chunk) // BLOCK)
    pool_k = torch.randn((batch + 1) * blocks_each * BLOCK, KV_HEADS, HEAD_DIM)
    pool_v = torch.randn_like(pool_k)
    order = torch.randperm((batch + 1) * blocks_each)  # blocks scattered over the pool, as after some churn
    tables = order.view(batch + 1, blocks_each)
    slots = [(tables[i].repeat_interleave(BLOCK) * BLOCK + torch.arange(BLOCK).repeat(blocks_each)) for i in
             range(batch + 1)]
    decode_slots = [s[:context] for s in slots[:batch]]
    chunk_slots = slots[batch][:context + chunk]
    q_decode = torch.randn(batch, HEADS, 1, HEAD_DIM)
    q_chunk = torch.randn(1, HEADS, chunk, HEAD_DIM)
    padded = torch.stack(decode_slots)
    valid = torch.ones(batch, 1, 1, context, dtype=torch.bool)
    block_k, block_v = pool_k.view(-1, BLOCK, KV_HEADS, HEAD_DIM), pool_v.view(-1, BLOCK, KV_HEADS, HEAD_DIM)
    decode_width = -(-context // BLOCK)
    decode_blocks = tables[:batch, :decode_width].flatten()
    block_valid = torch.zeros(batch, 1, 1, decode_width * BLOCK, dtype=torch.bool)
    block_valid[..., :context] = True
    block_bias = torch.zeros(block_valid.shape).masked_fill(~block_valid, float("-inf"))
    offset_mask = torch.ones(chunk, context + chunk, dtype=torch.bool).tril(diagonal=context)

    def loop():
        for i, s in enumerate(decode_slots):
            k, v = pool_k[s].transpose(0, 1)[None], pool_v[s].transpose(0, 1)[None]
            F.scaled_dot_product_attention(q_decode[i:i + 1], k, v, enable_gqa=True)

    def gathered():
        k, v = pool_k[padded].transpose(1, 2), pool_v[padded].transpose(1, 2)
        F.scaled_dot_product_attention(q_decode, k, v, attn_mask=valid, enable_gqa=True)

    def by_blocks(mask):
        k = block_k.index_select(0, decode_blocks).view(batch, -1, KV_HEADS, HEAD_DIM).transpose(1, 2)
        v = block_v.index_select(0, decode_blocks).view(batch, -1, KV_HEADS, HEAD_DIM).transpose(1, 2)
        F.scaled_dot_product_attention(q_decode, k, v, attn_mask=mask, enable_gqa=True)

    def offset_causal():
        k = block_k.index_select(0, tables[batch]).view(-1, KV_HEADS, HEAD_DIM)[:context + chunk]
        v = block_v.index_select(0, tables[batch]).view(-1, KV_HEADS, HEAD_DIM)[:context + chunk]
        k, v = k.transpose(0, 1)[None], v.transpose(0, 1)[None]
        F.scaled_dot_product_attention(q_chunk, k, v, attn_mask=offset_mask, enable_gqa=True)

    all_slots = torch.cat(decode_slots + [chunk_slots])
    rows = batch + chunk
    mask = torch.zeros(rows, len(all_slots), dtype=torch.bool)
    for i in range(batch):
        mask[i, i * context:(i + 1) * context] = True
    mask[batch:, batch * context:] = offset_mask
    q_packed = torch.randn(1, HEADS, rows, HEAD_DIM)

    def packed():
        k, v = pool_k[all_slots].transpose(0, 1)[None], pool_v[all_slots].transpose(0, 1)[None]
        F.scaled_dot_product_attention(q_packed, k, v, attn_mask=mask, enable_gqa=True)

    lens = torch.full((batch,), context, dtype=torch.long)
    q_rows = q_decode[:, :, 0].contiguous()

    def kernel():
        torch.ops.llm_infer.paged_decode_attention(q_rows, block_k, block_v, tables[:batch, :decode_width], lens,
                                                   HEAD_DIM ** -0.5)

    found = {}
    from ...kernels.build import available

    if available():
        found["decode, our kernel (default)"] = kernel
    return {"decode, per-sequence loop": loop, "decode, slot gather": gathered,
            "decode, block gather, bool mask": lambda: by_blocks(block_valid),
            "decode, block gather, additive mask (sdpa)": lambda: by_blocks(block_bias), **found,
            "chunk, offset causal (ours)": offset_causal,
            "mixed, one packed SDPA": packed, "mixed, ours (block-gathered decodes + chunk)":
            lambda: (by_blocks(block_bias), offset_causal())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m profiling.serving.bench.paged_attention", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=192)
    parser.add_argument("--chunk", type=int, default=240)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"batch {args.batch}, context {args.context}, chunk {args.chunk}, {args.threads} thread(s), "
          f"{torch.backends.cpu.get_cpu_capability()}; median ms per layer over {args.repeats} calls")
    with torch.inference_mode():
        for name, fn in candidates(args.batch, args.context, args.chunk).items():
            print(f"  {name:44s} {_median_ms(fn, args.repeats):8.3f}")


if __name__ == "__main__":
    main()
