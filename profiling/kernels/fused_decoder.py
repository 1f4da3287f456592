"""Decode steps that run each decoder layer as one C call (decoder_layer.c), for the engine and the server.

The prefill runs the model's own forward (transformers, eagerly), then its KV cache is copied into one contiguous
cache per layer, (batch, length, kv_heads, head_dim), each row's real tokens first (left padding dropped): a KV pool
of one block per row (`prefill`; engine.generate calls it, with `cpu_decoder: fused` or D5's fused variants). A decode
step (`step`, which the server's paged runner also calls over its own pool) is then:

    h = embedding[token]                        one row per sequence
    cos, sin = the model's rotary embedding at each row's position (rows of a table made once)
    llm_infer::decoder_layer(h, ...)            once per layer: norms, projections, rotary, cache write, attention,
                                                MLP, residuals (h in place)
    logits = lm_head(rms_norm(h));  token = argmax

~40 operators per step instead of ~1,200 (compiled) or ~4,700 (eager): the host time between kernels nearly goes,
and the step is the time to stream the weights. For Llama-architecture models (transformers' LlamaForCausalLM and
relatives with the same layer) whose linear layers are our small-batch ones (float32, int8 or int4 weights; w8a8, w4a8): the
model must have gone through use_small_batch_kernels first.
"""
from __future__ import annotations

import torch

from .small_batch import (SmallBatchInt4Linear, SmallBatchInt8Linear, SmallBatchLinear, SmallBatchW4A8Linear,
                          SmallBatchW8A8Linear, library)

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
               "mlp.up_proj", "mlp.down_proj")  # decoder_layer.c's order


def _module(root, dotted: str):
    for name in dotted.split("."):
        root = getattr(root, name)
    return root


def unsupported_reason(model) -> str | None:
    """Why `model` cannot run fused (None when it can): its architecture and its linear layers."""
    config = model.config
    if config.model_type not in ("llama", "mistral", "qwen2") or getattr(config, "hidden_act", "silu") != "silu":
        return f"the fused decoder layer is a Llama layer with SiLU; this model is {config.model_type}"
    layer = model.model.layers[0]
    kinds = {type(_module(layer, name)) for name in PROJECTIONS}
    if len(kinds) != 1 or not kinds <= {SmallBatchLinear, SmallBatchInt8Linear, SmallBatchW8A8Linear,
                                        SmallBatchInt4Linear, SmallBatchW4A8Linear}:
        return ("the fused decoder layer needs every projection on our small-batch kernel "
                "(float32, int8 or int4 weights, w8a8 or w4a8)")
    if any(_module(layer, name).bias is not None for name in PROJECTIONS):
        return "the fused decoder layer has no projection biases"
    return None


class FusedDecoder:
    """transformers' prefill into a cache of its own, then decode steps of one llm_infer::decoder_layer call per
    layer."""

    def __init__(self, model):
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(reason)
        library()
        self.model = model
        self.config = model.config
        self.eps = float(self.config.rms_norm_eps)
        self.layers = []
        self.int8_activations = False  # w8a8, w4a8: the weights meet x quantised per block of 32
        self.rotary_table = None  # (cos, sin) at every position (rotary), made at the first step
        for layer in model.model.layers:  # (input norm, post-attention norm, weights, scales, lows): the op's
            linears = [_module(layer, name) for name in PROJECTIONS]
            kind = type(linears[0])
            self.int8_activations = kind in (SmallBatchW8A8Linear, SmallBatchW4A8Linear)
            int4 = issubclass(kind, SmallBatchInt4Linear)
            weights = [linear.codes if int4 else linear.weight for linear in linears]
            if kind is SmallBatchLinear and all(linear._panels is not None for linear in linears):
                weights = [linear._panels for linear in linears]  # float32: the panel GEMM's layout
            scales = [linear.scales for linear in linears] if kind is not SmallBatchLinear else []
            lows = [linear.lows for linear in linears] if int4 else []
            self.layers.append((layer.input_layernorm.weight, layer.post_attention_layernorm.weight, weights, scales,
                                lows))

    def prefill(self, input_ids, attention_mask, room: int):
        """The model's prefill; last-position logits and the per-layer caches (keys, values) with room for `room`
        more tokens, each row's real tokens first, and the number of them (lens)."""
        from transformers import DynamicCache

        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        cache = DynamicCache(config=self.config)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                         cache=cache, use_cache=True, logits_to_keep=1)
        lens = attention_mask.long().sum(-1)
        batch, length = input_ids.shape
        keys_out, values_out = [], []
        for layer in cache.layers:
            keys, values = layer.keys, layer.values  # (batch, kv_heads, prompt, head_dim)
            shape = (batch, length + room, keys.shape[1], keys.shape[3])
            key_cache, value_cache = keys.new_zeros(shape), values.new_zeros(shape)
            for row in range(batch):
                real = attention_mask[row].bool()
                key_cache[row, :lens[row]] = keys[row, :, real].transpose(0, 1)
                value_cache[row, :lens[row]] = values[row, :, real].transpose(0, 1)
            keys_out.append(key_cache)
            values_out.append(value_cache)
        return out.logits[:, -1, :], keys_out, values_out, lens, positions[:, -1]

    def step(self, token_ids: torch.Tensor, positions: torch.Tensor, keys: list, values: list, tables: torch.Tensor,
             lens: torch.Tensor) -> torch.Tensor:
        """One decode step: token_ids and positions (batch,) int64; keys and values: per layer, a KV pool
        (num_blocks, block_size, kv_heads, head_dim) (a contiguous cache is a pool with one block per row); tables
        (batch, max_blocks) int64 each row's blocks; lens (batch,) the keys each row holds. The last-position logits
        (batch, vocab); the pools gain one token per row (the caller then adds 1 to lens)."""
        model = self.model.model
        hidden = model.embed_tokens(token_ids).contiguous()
        cos, sin = self.rotary(hidden, positions)
        for (input_norm, post_norm, weights, scales, lows), key_pool, value_pool in zip(self.layers, keys, values):
            torch.ops.llm_infer.decoder_layer(hidden, input_norm, post_norm, weights, scales, lows, key_pool,
                                              value_pool, tables, cos, sin, lens, self.eps, self.int8_activations)
        # the model's final RMSNorm as one operator instead of seven (the same formula)
        return self.model.lm_head(torch.rms_norm(hidden, hidden.shape[-1:], model.norm.weight, self.eps))

    def rotary(self, hidden: torch.Tensor, positions: torch.Tensor):
        """cos and sin (rows, head_dim) at each row's position: rows of a table the model's rotary embedding
        computed once for positions 0 .. max_position_embeddings - 1 (one operator a step instead of ~12), or its
        own call each step for a RoPE that changes with the length (dynamic)."""
        rotary = self.model.model.rotary_emb
        if "dynamic" in str(getattr(rotary, "rope_type", "")):
            cos, sin = rotary(hidden, positions[:, None])
            return cos[:, 0].contiguous(), sin[:, 0].contiguous()
        if self.rotary_table is None or self.rotary_table[0].device != hidden.device:
            every = torch.arange(self.config.max_position_embeddings, device=hidden.device)[None]
            cos, sin = rotary(hidden, every)
            self.rotary_table = (cos[0].contiguous(), sin[0].contiguous())
        return self.rotary_table[0].index_select(0, positions), self.rotary_table[1].index_select(0, positions)
