"""The analytic cost of one forward pass of a Llama-style decoder, from the model's config (profiling/shapes.py).

For `batch` sequences, each feeding `new_tokens` tokens on top of `past_tokens` already in the KV cache
(prefill: new = prompt, past = 0; a decode step with the cache: new = 1, past = context so far; without the
cache the step recomputes the whole sequence: new = context + 1, past = 0), it counts:

FLOPs (a multiply-add counts 2; only the matrix products, which is what torch.utils.flop_counter counts):
    linear     q, k, v, o projections (k and v at kv_heads x head_dim: grouped-query attention) and the MLP's
               gate, up, down: 2 x tokens x weight elements
    attention  scores Q K^T and the weighted sum with V, every query against every key of the context
               (new + past; the full rectangle, as FlopCounterMode counts it: a causal kernel may skip the
               upper triangle of the prefill's block): 2 x 2 x batch x heads x new x context x head_dim
    lm_head    only at the last position of each sequence (the engine passes logits_to_keep=1):
               2 x batch x hidden x vocab
    Norms, rotary, softmax and activations are elementwise: a few FLOPs per element, under 1% here, not counted.

Bytes moved (each tensor read or written once from memory; a lower bound that ignores caches):
    weights      every linear and norm weight read once per forward, the lm_head matrix (the embedding matrix
                 when tied) read once, and only the embedding rows of the input tokens
    KV           with the cache (transformers' DynamicCache): the update `torch.cat([cache, new])` reads the
                 whole context and writes it again (kv write), and attention reads the whole context (kv read);
                 without the cache attention reads the K/V just computed. Sizes from shapes.kv_cache_bytes.
    activations  each operator's inputs read and outputs written (norms, projections, rotary, attention's
                 queries and output, MLP, residual adds), plus the embedding output and the logits

Arithmetic intensity = FLOPs / bytes moved (FLOP per byte): below the machine's ridge point
(peak FLOP/s / bandwidth) a forward pass can at best be memory-bound, above it compute-bound.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ...shapes import Shapes, kv_cache_bytes


@dataclass(frozen=True)
class Cost:
    """FLOPs and bytes moved by one forward pass (or a sum of several)."""

    linear_flops: float
    attention_flops: float
    lm_head_flops: float
    weight_bytes: float
    kv_read_bytes: float
    kv_write_bytes: float
    activation_bytes: float

    @property
    def flops(self) -> float:
        return self.linear_flops + self.attention_flops + self.lm_head_flops

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.kv_read_bytes + self.kv_write_bytes + self.activation_bytes

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOP per byte moved."""
        return self.flops / self.bytes

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(**{name: value + getattr(other, name) for name, value in asdict(self).items()})

    def record(self) -> dict:
        """Every part plus the totals, for tables (flops, bytes, intensity)."""
        return {**asdict(self), "flops": self.flops, "bytes": self.bytes, "intensity": self.intensity}


def layer_linear_weights(shapes: Shapes) -> int:
    """Elements of one decoder layer's linear weights: q, o (heads x head_dim), k, v (kv_heads x head_dim),
    and the MLP's gate, up, down."""
    attention = shapes.hidden * shapes.head_dim * (2 * shapes.heads + 2 * shapes.kv_heads)
    mlp = 3 * shapes.hidden * shapes.intermediate
    return attention + mlp


def layer_activation_elements(shapes: Shapes) -> int:
    """Elements one decoder layer reads and writes per token, outside the weights and the KV cache.

    Counted operator by operator (reads + writes):
        input norm 2 H; q, k, v projections read H each and write (heads + 2 kv_heads) x head_dim;
        rotary reads and writes q and k; attention reads q, writes its output (heads x head_dim each);
        o projection reads heads x head_dim, writes H; residual add 3 H; post-attention norm 2 H;
        gate and up read H each, write I each; SiLU 2 I; gate x up 3 I; down reads I, writes H; residual 3 H.
    """
    h, i = shapes.hidden, shapes.intermediate
    q, kv = shapes.heads * shapes.head_dim, shapes.kv_heads * shapes.head_dim
    per_hidden = 2 + 3 + 1 + 3 + 2 + 2 + 1 + 3  # norm, qkv reads, o write, residual, norm, gate/up reads, down, res
    per_query = 1 + 2 + 2 + 1  # q write, rotary q, attention q read + output write, o read
    per_kv = 2 + 2  # k and v writes, rotary k
    per_intermediate = 2 + 2 + 3 + 1  # gate/up writes, SiLU, gate x up, down read
    return per_hidden * h + per_query * q + per_kv * kv + per_intermediate * i


def forward_cost(shapes: Shapes, batch: int, new_tokens: int, past_tokens: int, bytes_per_element: int,
                 use_cache: bool = True, logits_positions: int = 1) -> Cost:
    """FLOPs and bytes of one forward pass over `batch` x `new_tokens` tokens with `past_tokens` cached.

    `logits_positions`: positions per sequence that go through lm_head (1 with logits_to_keep=1).
    """
    tokens = batch * new_tokens
    context = past_tokens + new_tokens  # keys each new query attends to
    layers = shapes.layers
    linear_flops = 2 * tokens * layer_linear_weights(shapes) * layers
    attention_flops = 2 * 2 * batch * shapes.heads * new_tokens * context * shapes.head_dim * layers
    lm_head_flops = 2 * batch * logits_positions * shapes.hidden * shapes.vocab

    weights = (layer_linear_weights(shapes) + 2 * shapes.hidden) * layers  # linears + two norms per layer
    weights += shapes.hidden  # final norm
    weights += shapes.vocab * shapes.hidden  # lm_head (the embedding matrix when tied)
    weights += tokens * shapes.hidden  # embedding rows gathered for the input tokens

    context_kv = kv_cache_bytes(shapes, context, batch, bytes_per_element)
    if use_cache:
        kv_read = 2 * context_kv  # torch.cat reads the old cache and the new K/V; attention reads the result
        kv_write = context_kv  # torch.cat writes the whole grown cache
    else:
        kv_read, kv_write = context_kv, 0  # attention reads the K/V the projections just wrote

    activations = tokens * layer_activation_elements(shapes) * layers
    activations += tokens * shapes.hidden * 3  # embedding output written; final norm reads and writes
    activations += batch * logits_positions * (shapes.hidden + shapes.vocab)  # lm_head reads h, writes logits

    return Cost(
        linear_flops=float(linear_flops),
        attention_flops=float(attention_flops),
        lm_head_flops=float(lm_head_flops),
        weight_bytes=float(weights * bytes_per_element),
        kv_read_bytes=float(kv_read),
        kv_write_bytes=float(kv_write),
        activation_bytes=float(activations * bytes_per_element),
    )


def prefill_cost(shapes: Shapes, batch: int, prompt_tokens: int, bytes_per_element: int,
                 use_cache: bool = True) -> Cost:
    """The prefill: one forward over `batch` x `prompt_tokens` tokens (padding included), nothing cached."""
    return forward_cost(shapes, batch, prompt_tokens, 0, bytes_per_element, use_cache=use_cache)


def decode_step_cost(shapes: Shapes, batch: int, context_tokens: int, bytes_per_element: int,
                     use_cache: bool = True) -> Cost:
    """One decode step after `context_tokens` tokens per sequence (prompt + tokens generated so far, minus the
    one being fed now): with the cache one new token attends to the cached context; without it the whole
    sequence of context_tokens + 1 tokens is recomputed."""
    if use_cache:
        return forward_cost(shapes, batch, 1, context_tokens, bytes_per_element, use_cache=True)
    return forward_cost(shapes, batch, context_tokens + 1, 0, bytes_per_element, use_cache=False)


def decode_context_tokens(prompt_tokens: int, step: int) -> int:
    """Tokens already in the cache when decode_step[step] runs (data contract: prompt_tokens + step - 1)."""
    return prompt_tokens + step - 1
