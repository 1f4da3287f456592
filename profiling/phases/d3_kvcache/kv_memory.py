"""What the KV cache holds in memory: its tensors' bytes, measured, and the projections built on the formula.

The formula itself (2 x layers x kv_heads x head_dim x tokens x batch x bytes per element) lives in
`profiling/shapes.py` (`kv_cache_bytes`); this module measures the real tensors to check it, and turns it into
"how many tokens fit" numbers.

How many positions does the cache hold after generating n tokens from a P-token prompt? P + n - 1: the prefill
stores the P prompt positions, each decode step stores the one token it was fed, and the last generated token is
never fed back (nothing asks for the token after it).
"""
from __future__ import annotations

import math

from ...shapes import Shapes, kv_cache_bytes


def cache_tensors(cache) -> list:
    """The key and value tensors of a KV cache, whatever its form.

    - transformers 5.x `DynamicCache`: `cache.layers`, each with `.keys` and `.values`;
    - transformers 4.4x-4.5x `DynamicCache`: `cache.key_cache` and `cache.value_cache` (lists per layer);
    - legacy caches: a tuple of (key, value) per layer.
    Layers that were never filled (None or empty) are skipped. `None` (no cache) gives [].
    """
    if cache is None:
        return []
    if hasattr(cache, "layers"):
        pairs = [(getattr(layer, "keys", None), getattr(layer, "values", None)) for layer in cache.layers]
    elif hasattr(cache, "key_cache"):
        pairs = list(zip(cache.key_cache, cache.value_cache))
    else:
        if hasattr(cache, "to_legacy_cache"):
            cache = cache.to_legacy_cache()
        pairs = [(layer[0], layer[1]) for layer in cache]
    return [tensor for pair in pairs for tensor in pair if tensor is not None and tensor.numel() > 0]


def cache_tensor_bytes(cache) -> int:
    """Bytes held by the cache's key and value tensors (elements x bytes per element), measured."""
    return sum(tensor.numel() * tensor.element_size() for tensor in cache_tensors(cache))


def cached_positions(prompt_tokens: int, new_tokens: int) -> int:
    """Positions (tokens) the cache holds after generating `new_tokens` from a `prompt_tokens` prompt."""
    return prompt_tokens + new_tokens - 1


def bytes_per_token(shapes: Shapes, bytes_per_element: int) -> int:
    """Cache bytes per token of one sequence (all layers, K and V)."""
    return kv_cache_bytes(shapes, tokens=1, batch=1, bytes_per_element=bytes_per_element)


def tokens_until(budget_bytes: float, per_token_bytes: int) -> int:
    """The smallest number of cached tokens (batch x context) whose cache reaches `budget_bytes`."""
    return max(0, math.ceil(budget_bytes / per_token_bytes))
