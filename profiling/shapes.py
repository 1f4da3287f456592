"""Shape facts of a decoder-only model, read from its transformers config: the one place they are computed.

Used by the KV-cache experiment (cache size) and the D2 analytic model (FLOPs and bytes moved).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

# config.json keys that Shapes reads; a file with all of them is read as plain JSON (no transformers import)
CONFIG_KEYS = {"num_attention_heads", "num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size",
               "tie_word_embeddings"}


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


def model_shapes(source: str) -> Shapes:
    """The shapes of the model at `source` (a model directory or a Hugging Face id), from its config alone (no
    weights): its config.json as plain JSON when it names every key Shapes reads (an analysis then needs no
    transformers import, ~2-3 s), else transformers' AutoConfig (which fills in defaults)."""
    config_file = Path(source) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        if CONFIG_KEYS <= config.keys():
            return Shapes.from_config(SimpleNamespace(**config))
    from transformers import AutoConfig

    return Shapes.from_config(AutoConfig.from_pretrained(source))
