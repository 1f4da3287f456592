"""Adaptive repeats and warm-ups (the shared kit): repeat until the median's 95% CI is tight enough, between a
minimum and a cap; warm up until consecutive decode steps settle. Fed hand-made values: no clock is read."""
from types import SimpleNamespace

import pytest

from profiling.measure import RepeatPolicy, repeat_until_tight
from profiling.stats import precision, summarize, tight_enough
from profiling.timing import Span


def policy(max_repeats=10, min_repeats=3, half_width=0.05, warmup=1, warmup_max=4):
    settings = {"adaptive": {"min_repeats": min_repeats, "ci_half_width": half_width, "warmup_settle": 0.05,
                             "warmup_max": warmup_max}}
    return RepeatPolicy(settings, {"repeats": max_repeats, "warmup": warmup})


def feed(values):
    """A measure(repeat) that returns the next hand-made value."""
    return lambda repeat: {"step_s": values[repeat]}


def test_steady_values_stop_at_the_minimum():
    assert repeat_until_tight(feed([0.05] * 20), policy()) == 3


def test_noisy_values_go_on_to_the_cap_and_are_flagged():
    noisy = [0.05, 0.08, 0.04, 0.09, 0.05, 0.07, 0.03, 0.09, 0.05, 0.08, 0.04, 0.09]
    assert repeat_until_tight(feed(noisy), policy(max_repeats=8)) == 8
    assert precision(noisy[:8], {"max_repeats": 8, "ci_half_width": 0.05})["at_cap"]


def test_a_figure_tight_at_the_cap_is_not_flagged():
    assert not precision([0.05] * 3, {"max_repeats": 3, "ci_half_width": 0.05})["at_cap"]
    assert not precision([0.05, 0.09, 0.04])["at_cap"]  # no policy recorded: nothing to flag against


def test_repeats_stop_once_the_median_ci_is_within_the_bound():
    values = [0.050, 0.060, 0.050, 0.0501, 0.0499, 0.0500, 0.0502, 0.0500, 0.0501, 0.0500]
    made = repeat_until_tight(feed(values), policy(half_width=0.03))
    assert 3 < made < 10
    stats = summarize(values[:made])
    assert stats["half_width_ratio"] <= 0.03
    assert summarize(values[:made - 1])["half_width_ratio"] > 0.03


def test_every_watched_figure_must_be_tight():
    steady, noisy = [1.0] * 10, [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]
    made = repeat_until_tight(lambda r: {"a": steady[r], "b": noisy[r]}, policy(max_repeats=6))
    assert made == 6


def test_the_minimum_never_exceeds_the_cap():
    assert policy(max_repeats=2, min_repeats=3).min_repeats == 2
    assert not tight_enough([1.0], 0.05, min_n=2, max_n=5)
    assert tight_enough([1.0, 1.0], 0.05, min_n=2, max_n=5)


def test_half_width_is_a_share_of_the_median():
    stats = summarize([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0])
    assert stats["half_width_ratio"] == pytest.approx((stats["ci95_high"] - stats["ci95_low"]) / 2 / stats["p50"])
    assert summarize([1.0])["half_width_ratio"] != summarize([1.0])["half_width_ratio"]  # NaN for one value


def clock_of(steps):
    return SimpleNamespace(spans=[Span(f"decode_step[{i}]", 0.0, s) for i, s in enumerate(steps)])


def test_warm_up_stops_when_consecutive_steps_settle():
    calls = iter([clock_of([0.5, 0.2, 0.1]), clock_of([0.06, 0.052, 0.050]), clock_of([0.05, 0.05, 0.05])])
    assert policy().warm_up(lambda: next(calls)) == 2


def test_warm_up_keeps_its_minimum_and_its_cap():
    settled = lambda: clock_of([0.05, 0.05, 0.05])  # noqa: E731
    assert policy(warmup=2).warm_up(settled) == 2
    unsettled = lambda: clock_of([0.05, 0.1, 0.05])  # noqa: E731
    assert policy(warmup_max=3).warm_up(unsettled) == 3


def test_no_warm_up_when_none_is_asked_for():
    assert policy(warmup=0).warm_up(lambda: clock_of([0.5, 0.1])) == 0
