"""The paged model runner: one packed forward per step over the KV blocks of every scheduled sequence.

A step is a list of (sequence, n) items: run the sequence's next n tokens (n = 1 for a decode, a prompt chunk
otherwise). Their tokens are packed into one row of T = sum(n) tokens, each with its own position id, and go
through the model's own modules (transformers), with one change: attention. The model is switched to the
attention function registered below, which, in every layer,

    writes the step's new keys and values into the pool         (slot = block_table[p // B] * B + p % B)
    decode rows (n = 1)   paged_attention "kernel": our C kernel (kernels/paged_attention.c) reads every row's
                          keys and values in place through its block table, all rows in one call (CPU, float32)
                          paged_attention "sdpa" (any device and dtype): one SDPA over all of them at once,
                          their blocks gathered (one index_select of the padded block tables) + an additive
                          padding mask (0 / -inf in the model's dtype, built once per step: SDPA takes it as is,
                          where a bool mask is turned into one in every layer, ~20% of the call at batch 16)
    prompt chunks         one SDPA per chunk: its blocks gathered, causal with the chunk's offset

and falls back to the model's original attention when it is called without a step (the offline engine and the
slab path share the same model object). The choice and its micro-benchmark are in DESIGN.md's serving part.

A step of decodes alone, with decoder "fused", skips the model's modules: each decoder layer runs as one call of our
C kernel (kernels/fused_decoder.py, decoder_layer.c: norms, projections, rotary, the pool write and the paged
attention), ~35 operators a step instead of ~4,700; the embedding, final norm and lm_head stay the model's. It needs a
CPU, a float32 pool, the kernel's paged attention and every projection on our small-batch kernels; otherwise (and
for steps with prompt chunks) the modules run, and `decoder_note` says why.

Logits are computed only for the items that finish their pending tokens (the others are mid-prompt).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class PagedKVPool:
    """Keys and values of every layer: (num_blocks, block_size, kv_heads, head_dim) each. Gathers go block by
    block (index_select over whole blocks is ~6x faster here than indexing token slots one by one)."""

    def __init__(self, config, num_blocks: int, block_size: int, dtype: torch.dtype, device):
        self.layers = config.num_hidden_layers
        self.kv_heads = config.num_key_value_heads
        self.head_dim = _head_dim(config)
        self.num_blocks, self.block_size = num_blocks, block_size
        shape = (num_blocks, block_size, self.kv_heads, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(self.layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(self.layers)]

    @staticmethod
    def bytes_per_token(config, dtype: torch.dtype) -> int:
        """Bytes of KV one token position takes over all layers (keys + values)."""
        return 2 * config.num_hidden_layers * config.num_key_value_heads * _head_dim(config) * dtype.itemsize

    @property
    def bytes_per_block(self) -> int:
        return 2 * self.layers * self.block_size * self.kv_heads * self.head_dim * self.keys[0].element_size()


@dataclass
class PagedStep:
    """What every layer's attention needs to know about the packed step (built once per step)."""

    pool: PagedKVPool
    write_slots: torch.Tensor          # (T,) pool slot (block * block_size + offset) of each new token
    decode_rows: torch.Tensor          # (D,) packed index of each decode token
    decode_tables: torch.Tensor        # (D, max blocks) each decode row's block table, padded with block 0
    decode_lens: torch.Tensor          # (D,) keys each decode row sees (its own included)
    decode_bias: torch.Tensor | None   # sdpa: (D, 1, 1, max blocks * block_size), 0 for real keys, -inf for padding
    chunks: list                       # (first packed index, tokens, its block ids, keys seen, causal mask or None)


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, paged_step=None, **kwargs):
    """Registered with transformers: paged attention when the forward carries a PagedStep, else the original."""
    if paged_step is None:
        original = module.config._paged_fallback
        function = ALL_ATTENTION_FUNCTIONS[original] if original != "eager" else _eager()
        return function(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    step, layer = paged_step, module.layer_idx
    keys, values = step.pool.keys[layer], step.pool.values[layer]
    size, kv_heads, head_dim = keys.shape[1:]
    keys.view(-1, kv_heads, head_dim).index_copy_(0, step.write_slots, key[0].transpose(0, 1).to(keys.dtype))
    values.view(-1, kv_heads, head_dim).index_copy_(0, step.write_slots, value[0].transpose(0, 1).to(values.dtype))
    alone = not step.chunks  # decodes alone: the packed rows are the decode rows, in order
    out = None if alone else query.new_empty(query.shape[2], query.shape[1], query.shape[3])  # (T, heads, head_dim)
    if step.decode_rows.numel():
        rows = len(step.decode_rows)
        q = query[0].transpose(0, 1) if alone else query[0, :, step.decode_rows].transpose(0, 1)  # (D, heads, hd)
        if step.decode_bias is None:  # our kernel: keys and values read in place
            attended = torch.ops.llm_infer.paged_decode_attention(q, keys, values, step.decode_tables,
                                                                  step.decode_lens, scaling or head_dim ** -0.5)
        else:
            blocks = step.decode_tables.view(-1)
            k = keys.index_select(0, blocks).view(rows, -1, kv_heads, head_dim).transpose(1, 2)
            v = values.index_select(0, blocks).view(rows, -1, kv_heads, head_dim).transpose(1, 2)
            attended = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=step.decode_bias.to(q.dtype),
                                                      scale=scaling, enable_gqa=True)[:, :, 0]
        if alone:  # no copy into `out`
            return attended[None], None
        out[step.decode_rows] = attended
    for first, tokens, blocks, seen, mask in step.chunks:
        q = query[:, :, first:first + tokens]                                  # (1, heads, n, head_dim)
        k = keys.index_select(0, blocks).view(-1, kv_heads, head_dim)[:seen].transpose(0, 1)[None]
        v = values.index_select(0, blocks).view(-1, kv_heads, head_dim)[:seen].transpose(0, 1)[None]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=scaling,
                                           enable_gqa=True)
        out[first:first + tokens] = o[0].transpose(0, 1)
    return out[None], None


def _eager():
    from transformers.models.llama.modeling_llama import eager_attention_forward

    return eager_attention_forward


def use_paged_attention(model) -> None:
    """Switch `model` to the paged attention function (its original one stays the fallback)."""
    original = model.config._attn_implementation or "eager"
    if original.startswith("paged_over_"):
        return
    name = f"paged_over_{original}"
    AttentionInterface.register(name, _attention)
    if original in ALL_MASK_ATTENTION_FUNCTIONS:
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])
    model.config._paged_fallback = original
    model.set_attn_implementation(name)


def paged_attention_for(requested: str, device, dtype: torch.dtype) -> tuple[str, str | None]:
    """(the decode attention that runs when `requested` over a pool of `dtype` on `device`: kernel | sdpa, why the
    kernel does not when it was requested and cannot)."""
    if requested != "kernel":
        return "sdpa", None
    if torch.device(device).type != "cpu" or dtype != torch.float32:
        return "sdpa", f"the kernel runs on a CPU in float32, this pool is {dtype} on {device}"
    from ...kernels.build import unavailable_reason

    reason = unavailable_reason()
    return ("sdpa", reason) if reason else ("kernel", None)


def fused_decoder_runs(requested: str, paged_attention: str, linears: str) -> str:
    """The decoder a server's steps of decodes alone run, told without a model: fused when requested over the
    attention kernel and our small-batch linears (the model must also be a Llama-type one: fused_decoder_for)."""
    return "fused" if requested == "fused" and paged_attention == "kernel" and linears == "small_batch" else "hf"


def fused_decoder_for(requested: str, model, paged_attention: str):
    """(the FusedDecoder that runs decode-only steps, or None; why not when `requested` is "fused")"""
    if requested != "fused":
        return None, None
    if paged_attention != "kernel":
        return None, "the fused decoder layer reads the pool with the paged attention kernel, which does not run here"
    from ...kernels.fused_decoder import FusedDecoder, unsupported_reason

    reason = unsupported_reason(model)
    return (None, reason) if reason else (FusedDecoder(model), None)


class PagedRunner:
    """Runs steps of (sequence, n) items over a PagedKVPool; returns the logits of the items that finish.
    paged_attention: kernel | sdpa, decoder: fused | hf (see the module docstring); `self.paged_attention` and
    `self.decoder` are the ones that run (sdpa and hf where ours cannot, with the reasons in `self.kernel_note` and
    `self.decoder_note`)."""

    def __init__(self, model, pool: PagedKVPool, paged_attention: str = "kernel", decoder: str = "fused"):
        self.model, self.pool = model, pool
        self.device = next(model.parameters()).device
        self.paged_attention, self.kernel_note = paged_attention_for(paged_attention, pool.keys[0].device,
                                                                     pool.keys[0].dtype)
        self.fused, self.decoder_note = fused_decoder_for(decoder, model, self.paged_attention)
        self.decoder = "fused" if self.fused is not None else "hf"
        self.no_mask = torch.ones((1, 1, 1, 1), dtype=torch.bool, device=self.device)  # ignored by _attention
        use_paged_attention(model)

    @torch.inference_mode()
    def forward(self, items: list[tuple]) -> tuple[list, torch.Tensor]:
        """(the sequences that get a next token, their logits (rows, vocab)); the step's KV goes to the pool."""
        size = self.pool.block_size
        ids, positions, write_slots, chunks, decodes, keep, picked = [], [], [], [], [], [], []
        for seq, n in items:
            start, first = seq.num_computed_tokens, len(ids)
            token_ids = seq.all_token_ids
            ids += token_ids[start:start + n]
            positions += range(start, start + n)
            write_slots += [seq.block_table[p // size] * size + p % size for p in range(start, start + n)]
            blocks = seq.block_table[:-(-(start + n) // size)]
            if n == 1:
                decodes.append((first, blocks, start + 1))
            else:
                mask = None
                if start:  # query i sees keys 0 .. start + i
                    mask = torch.ones(n, start + n, dtype=torch.bool).tril(diagonal=start).to(self.device)
                chunks.append((first, n, torch.tensor(blocks, device=self.device), start + n, mask))
            if start + n == len(token_ids):
                keep.append(len(ids) - 1)
                picked.append(seq)
        if self.fused is not None and not chunks:  # decodes alone: one C call per layer, in place in the pool
            _, tables, lens, _ = self._decode_view(decodes)
            logits = self.fused.step(torch.tensor(ids), torch.tensor(positions), self.pool.keys, self.pool.values,
                                     tables, lens - 1)
            return picked, logits[torch.tensor(keep, dtype=torch.long)]
        step = PagedStep(self.pool, torch.tensor(write_slots, device=self.device), *self._decode_view(decodes),
                         chunks=chunks)
        tensor = torch.tensor
        out = self.model(input_ids=tensor([ids], device=self.device),
                         position_ids=tensor([positions], device=self.device), use_cache=False,
                         attention_mask=self.no_mask,  # 4-D: transformers builds no (T, T) mask of its own
                         logits_to_keep=tensor(keep, dtype=torch.long, device=self.device), paged_step=step)
        return picked, out.logits[0]

    def _decode_view(self, decodes: list) -> tuple:
        """Packed rows, padded block tables, keys seen and (sdpa) the additive key mask of the decode rows."""
        size = self.pool.block_size
        width = max((len(blocks) for _, blocks, _ in decodes), default=0)
        rows = torch.tensor([first for first, _, _ in decodes], dtype=torch.long)
        tables = torch.tensor([blocks + [0] * (width - len(blocks)) for _, blocks, _ in decodes], dtype=torch.long)
        lens = torch.tensor([seen for _, _, seen in decodes], dtype=torch.long)
        bias = None
        if self.paged_attention == "sdpa":
            bias = torch.full((len(decodes), width * size), float("-inf"), dtype=self.pool.keys[0].dtype)
            for row, (_, _, seen) in enumerate(decodes):
                bias[row, :seen] = 0.0
            bias = bias[:, None, None, :].to(self.device)
        return rows.to(self.device), tables.view(len(decodes), width).to(self.device), lens.to(self.device), bias
