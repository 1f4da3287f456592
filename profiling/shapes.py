"""Shape facts of a decoder-only model, read from its transformers config: the one place they are computed.

Used by the KV-cache experiment (cache size) and the D2 analytic model (FLOPs and bytes moved).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shapes:
    layers: int
    hidden: int
    intermediate: int
    heads: int  # query heads
    kv_heads: int  # key/value heads (fewer than `heads` with grouped-query attention)
    head_dim: int
    vocab: int
    max_positions: int
    tied_embeddings: bool

    @classmethod
    def from_config(cls, config) -> "Shapes":
        heads = config.num_attention_heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            vocab=config.vocab_size,
            max_positions=getattr(config, "max_position_embeddings", 0) or 0,
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )


def kv_cache_bytes(shapes: Shapes, tokens: int, batch: int, bytes_per_element: int) -> int:
    """Bytes of the KV cache holding `tokens` positions for `batch` sequences:
    2 (K and V) x layers x kv_heads x head_dim x tokens x batch x bytes per element."""
    return 2 * shapes.layers * shapes.kv_heads * shapes.head_dim * tokens * batch * bytes_per_element
