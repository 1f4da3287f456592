"""The KV-cache phase's settings grid and its variant names (light: the rule file reads it to name the traces)."""
from __future__ import annotations


def variant_name(prompt_tokens: int, use_cache: bool, batch_size: int) -> str:
    """`p200_cache_on_b1`: the variant of one setting (the shared data contract's naming)."""
    return f"p{prompt_tokens}_cache_{'on' if use_cache else 'off'}_b{batch_size}"


def latency_variants(cfg: dict) -> list[str]:
    """The batch-1 settings (prompt length x cache on/off): each is timed and gets one trace."""
    return [variant_name(p, use_cache, 1) for p in cfg["prompt_lengths"] for use_cache in (True, False)]


def memory_batch_sizes(cfg: dict) -> list[int]:
    """Batch sizes that need runs of their own (batch 1 is measured by the latency runs)."""
    return [b for b in cfg["batch_sizes"] if b != 1]
