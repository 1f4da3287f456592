"""All number formatting of the reports, in one place: the Jinja filters of every page and the progress wall use
these functions. Inputs are SI values (seconds, bytes, shares 0–1); a missing or non-finite value prints "n/a"."""
from __future__ import annotations

import math


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def ms(seconds) -> str:
    """Seconds as milliseconds with two decimals: 0.0571 -> "57.10 ms"."""
    return "n/a" if _missing(seconds) else f"{seconds * 1e3:.2f} ms"


def secs(seconds) -> str:
    """Seconds with three decimals: 1.8805 -> "1.881 s"."""
    return "n/a" if _missing(seconds) else f"{seconds:.3f} s"


def duration(seconds) -> str:
    """A duration for a sentence: "1.23 s" from one second up, "123 ms" or "4.5 ms" below."""
    if _missing(seconds):
        return "n/a"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.0f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.1f} ms"


def pct(share) -> str:
    """A share 0–1 as a percentage with one decimal: 0.423 -> "42.3%"."""
    return "—" if _missing(share) else f"{share * 100:.1f}%"


def percent(share) -> str:
    """A share for a sentence: 0.423 -> "42%", 0.0123 -> "1.2%" (one decimal below 10%)."""
    if _missing(share):
        return "n/a"
    return f"{share * 100:.0f}%" if share >= 0.1 else f"{share * 100:.1f}%"


def num(value, digits: int = 2) -> str:
    """A number with thousands separators and `digits` decimals."""
    return "n/a" if _missing(value) else f"{value:,.{digits}f}"


def ratio(value, digits: int = 2) -> str:
    """A ratio with a times sign: 2.345 -> "2.35×"."""
    return "n/a" if _missing(value) else f"{value:.{digits}f}×"


def bytes_(value) -> str:
    """Bytes in binary units: KiB below 1 MiB, MiB below 1 GiB, else GiB (B below 1 KiB)."""
    if _missing(value):
        return "n/a"
    if value < 2**10:
        return f"{value:.0f} B"
    if value < 2**20:
        return f"{value / 2**10:.1f} KiB"
    return f"{value / 2**20:.1f} MiB" if value < 2**30 else f"{value / 2**30:.1f} GiB"


def rate(value, unit: str = "B/s") -> str:
    """A rate in SI giga units: 17.7e9 bytes/s -> "17.7 GB/s"; `unit` "FLOP/s" gives GFLOP/s."""
    return "n/a" if _missing(value) else f"{value / 1e9:.1f} G{unit}"


def figure(value, unit: str) -> str:
    """A headline figure in its unit: seconds as ms, bytes/s as GB/s, anything else with one decimal and the unit."""
    if unit == "s":
        return ms(value)
    if unit == "bytes/s":
        return rate(value)
    return f"{num(value, 1)} {unit}".strip()


FILTERS = {"figure": figure, "ms": ms, "secs": secs, "duration": duration, "pct": pct, "percent": percent, "num": num,
           "ratio": ratio, "bytes": bytes_, "rate": rate}
