import math

import numpy as np
import pytest

from profiling.metrics import output_tok_per_s, tpot_s
from profiling.stats import bootstrap_median_ci, summarize
from profiling.timing import StageClock


def test_summarize_matches_numpy():
    values = [0.5, 0.1, 0.3, 0.9, 0.2, 0.4]
    stats = summarize(values)
    assert stats["n"] == 6
    assert stats["mean"] == pytest.approx(np.mean(values))
    assert stats["std"] == pytest.approx(np.std(values, ddof=1))
    assert stats["cv"] == pytest.approx(np.std(values, ddof=1) / np.mean(values))
    for p in (50, 90, 95, 99):
        assert stats[f"p{p}"] == pytest.approx(np.percentile(values, p))
    assert stats["min"] == 0.1 and stats["max"] == 0.9


def test_summarize_drops_nan_and_handles_empty():
    assert summarize([float("nan"), 1.0, 3.0])["n"] == 2
    assert summarize([]) == {"n": 0}
    single = summarize([2.0])
    assert single["std"] == 0.0 and single["ci95_low"] == single["ci95_high"] == 2.0


def test_bootstrap_ci_brackets_the_median_and_is_reproducible():
    rng = np.random.default_rng(1)
    data = rng.normal(10.0, 1.0, size=200)
    low, high = bootstrap_median_ci(data, seed=3)
    assert low <= np.median(data) <= high
    assert high - low < 1.0  # 200 samples of unit spread: a narrow interval
    assert (low, high) == bootstrap_median_ci(data, seed=3)


def test_metric_definitions():
    # 1 s end to end, first token at 0.2 s, 5 tokens: 4 gaps of 0.2 s
    assert tpot_s(1.0, 0.2, 5) == pytest.approx(0.2)
    assert math.isnan(tpot_s(1.0, 0.2, 1))
    assert output_tok_per_s(50, 2.0) == 25.0


def test_stage_clock_records_ordered_spans():
    clock = StageClock("cpu")
    with clock.span("a"):
        sum(range(10000))
    with clock.span("b"):
        sum(range(10000))
    names = [span.name for span in clock.spans]
    assert names == ["a", "b"]
    a, b = clock.spans
    assert a.seconds > 0 and b.start >= a.start + a.seconds
    assert clock.end_of("b") == pytest.approx(b.start + b.seconds)
