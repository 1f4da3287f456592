"""The statistics every figure in the report is built from: percentiles, spread, bootstrap confidence intervals.

Pure numpy; no clocks, no torch. Values are in whatever unit the caller's metric names (seconds, tok/s, …).
"""
from __future__ import annotations

import math

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def summarize(values, ci_resamples: int = 1000, seed: int = 0) -> dict:
    """Summary statistics of a sample: n, mean, std, cv, min, p50/p90/p95/p99, max, and a 95% bootstrap
    confidence interval of the median (ci95_low, ci95_high). NaNs are dropped; an empty sample gives n = 0."""
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if data.size == 0:
        return {"n": 0}
    mean = float(data.mean())
    std = float(data.std(ddof=1)) if data.size > 1 else 0.0
    stats = {
        "n": int(data.size),
        "mean": mean,
        "std": std,
        "cv": std / mean if mean else float("nan"),
        "min": float(data.min()),
        "max": float(data.max()),
    }
    for p in PERCENTILES:
        stats[f"p{p}"] = float(np.percentile(data, p))
    low, high = bootstrap_median_ci(data, ci_resamples, seed)
    stats["ci95_low"], stats["ci95_high"] = low, high
    stats["half_width_ratio"] = half_width_ratio(stats["p50"], low, high) if data.size > 1 else float("nan")
    return stats


def half_width_ratio(median: float, ci95_low: float, ci95_high: float) -> float:
    """Half the width of a median's 95% confidence interval as a share of the median (0.03 = ±3%); NaN for a
    zero median."""
    return (ci95_high - ci95_low) / 2 / abs(median) if median else float("nan")


def tight_enough(values, half_width: float, min_n: int, max_n: int) -> bool:
    """Whether a sample of repeated measurements may stop growing: at least `min_n` values, and either the 95%
    CI of the median within ±`half_width` of it (a share: 0.05 = ±5%) or `max_n` values reached."""
    n = len(values)
    if n < min_n:
        return False
    return n >= max_n or summarize(values)["half_width_ratio"] <= half_width


def precision(values, policy: dict | None = None) -> dict:
    """How precise the median of a sample is: n, half_width_ratio (the 95% CI's half-width over the median) and
    at_cap: True when the repeats stopped at their cap (`policy["max_repeats"]`) with the CI still wider than asked
    (`policy["ci_half_width"]`), so the figure is flagged. `policy` is what the experiment recorded in meta.json
    (notes.repeat_policy); without it at_cap is False."""
    stats = summarize(values)
    n, half_width = stats["n"], stats.get("half_width_ratio", float("nan"))
    policy = policy or {}
    cap, bound = policy.get("max_repeats"), policy.get("ci_half_width")
    at_cap = bool(cap is not None and n >= cap and not (bound is not None and half_width <= bound))
    return {"n": n, "half_width_ratio": half_width, "at_cap": at_cap}


def bootstrap_median_ci(data, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap confidence interval of the median of `data`."""
    data = np.asarray(data, dtype=float)
    if data.size < 2:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(data, size=(resamples, data.size), replace=True), axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def bootstrap_ratio_ci(numerator, denominator, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Ratio of medians, median(numerator) / median(denominator), with its 95% percentile-bootstrap confidence
    interval (each sample resampled independently). Returns (ratio, ci95_low, ci95_high); NaNs when either
    sample is empty."""
    a = np.asarray([v for v in numerator if v is not None and not math.isnan(v)], dtype=float)
    b = np.asarray([v for v in denominator if v is not None and not math.isnan(v)], dtype=float)
    if a.size == 0 or b.size == 0:
        return float("nan"), float("nan"), float("nan")
    ratio = float(np.median(a) / np.median(b))
    rng = np.random.default_rng(seed)
    ratios = (np.median(rng.choice(a, size=(resamples, a.size)), axis=1)
              / np.median(rng.choice(b, size=(resamples, b.size)), axis=1))
    return ratio, float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a share `successes / n` (e.g. the requests of a run that met their SLOs): unlike
    p ± z·sqrt(p(1-p)/n) it stays inside [0, 1] and is not zero-width at 0% or 100%. NaNs when n is 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


STAT_COLUMNS = ["n", "mean", "std", "cv", "min", "p50", "p90", "p95", "p99", "max", "ci95_low", "ci95_high",
                "half_width_ratio"]


def summary_table(measurements, by: list[str], cv_warn: float):
    """Statistics of `value` for each group of `by` columns of tidy rows (NaN keys kept), plus `noisy` =
    cv > cv_warn. Returns a pandas DataFrame: the `by` columns, unit, STAT_COLUMNS, noisy."""
    import pandas as pd

    rows = []
    for keys, group in measurements.groupby(by, dropna=False, sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        stats = summarize(group["value"].tolist())
        rows.append({**dict(zip(by, keys)), "unit": group["unit"].iloc[0], **stats})
    table = pd.DataFrame(rows)
    for column in STAT_COLUMNS:
        if column not in table:
            table[column] = float("nan")
    table["noisy"] = table["cv"] > cv_warn
    return table[by + ["unit"] + STAT_COLUMNS + ["noisy"]]
