"""The machine's one bandwidth roof, read from D2's ceilings.json, for every phase that compares with it.

The roof is the highest bandwidth any bandwidth ceiling reached in any repeat (copy, read-only sum, matrix-vector
product: every ceiling with bytes/s except the compute-bound matmul), as STREAM reports the best time: other
processes can only slow a repeat down. Units: bytes/s.
"""
from __future__ import annotations

NOT_BANDWIDTHS = {"matmul"}  # ceilings whose bytes/s is a side effect of a compute-bound operation


def bandwidth_roof(ceilings: dict | None) -> dict:
    """{"bytes_per_s": the highest bandwidth of any repeat of any bandwidth ceiling, "source": its ceiling's
    name}; NaN and source None without ceilings."""
    best = {"bytes_per_s": float("nan"), "source": None}
    for name, record in ((ceilings or {}).get("ceilings") or {}).items():
        if name in NOT_BANDWIDTHS or not isinstance(record, dict):
            continue
        rates = [v for v in [record.get("bytes_per_s"), *(record.get("bytes_per_s_range") or [])] if v]
        if rates and (best["source"] is None or max(rates) > best["bytes_per_s"]):
            best = {"bytes_per_s": float(max(rates)), "source": name}
    return best
