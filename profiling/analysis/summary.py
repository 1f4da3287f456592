"""Tidy measurements -> summary tables (one row per group, the statistics of timing.summarize)."""
from __future__ import annotations

import pandas as pd

from ..timing import summarize

STAT_COLUMNS = ["n", "mean", "std", "cv", "min", "p50", "p90", "p95", "p99", "max", "ci95_low", "ci95_high"]


def summary_table(measurements: pd.DataFrame, by: list[str], cv_warn: float) -> pd.DataFrame:
    """Statistics of `value` for each group of `by` columns (NaN keys kept), plus `noisy` = cv > cv_warn."""
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


def read_measurements(path) -> pd.DataFrame:
    return pd.read_csv(path)
