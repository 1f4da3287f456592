"""Units of the report that need no run: the number formats, the ratio's bootstrap confidence interval, the
comparison of runs (on hand-made runs whose ratio is known), and the pages' shared helpers."""
import json
import math
import re
from pathlib import Path

import pytest

from profiling.report import format as fmt
from profiling.report.compare import comparison, render_comparison, run_record
from profiling.report.pages import languages, other_editions, remove_stale_editions
from profiling.stats import bootstrap_ratio_ci

NAN = float("nan")


# ---- number formats --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("function, value, expected", [
    (fmt.ms, 0.0571, "57.10 ms"),
    (fmt.secs, 1.8805, "1.881 s"),
    (fmt.duration, 1.234, "1.23 s"),
    (fmt.duration, 0.123, "123 ms"),
    (fmt.duration, 0.0045, "4.5 ms"),
    (fmt.pct, 0.423, "42.3%"),
    (fmt.percent, 0.423, "42%"),
    (fmt.percent, 0.0123, "1.2%"),
    (fmt.num, 12345.678, "12,345.68"),
    (fmt.ratio, 2.345, "2.35×"),
    (fmt.bytes_, 512, "512 B"),
    (fmt.bytes_, 3 * 2**10, "3.0 KiB"),
    (fmt.bytes_, 5 * 2**20, "5.0 MiB"),
    (fmt.bytes_, 2.5 * 2**30, "2.5 GiB"),
    (fmt.rate, 17.7e9, "17.7 GB/s"),
])
def test_each_format(function, value, expected):
    assert function(value) == expected


def test_format_arguments():
    assert fmt.num(3.14159, 0) == "3" and fmt.num(3.14159, 3) == "3.142"
    assert fmt.ratio(1.5, 1) == "1.5×"
    assert fmt.rate(2.5e9, "FLOP/s") == "2.5 GFLOP/s"
    assert fmt.figure(0.0571, "s") == "57.10 ms"
    assert fmt.figure(17.7e9, "bytes/s") == "17.7 GB/s"
    assert fmt.figure(123.45, "tok/s") == "123.5 tok/s"


@pytest.mark.parametrize("name", ["ms", "secs", "duration", "percent", "num", "ratio", "bytes", "rate"])
@pytest.mark.parametrize("missing", [None, NAN, float("inf")])
def test_a_missing_number_prints_n_a(name, missing):
    assert fmt.FILTERS[name](missing) == "n/a"


def test_a_missing_share_in_a_table_is_a_dash():
    assert fmt.pct(None) == "—" and fmt.pct(NAN) == "—"


# ---- the ratio's confidence interval ---------------------------------------------------------------------------
def test_a_known_ratio_falls_inside_its_interval():
    baseline = [1.00, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97, 1.00]
    doubled = [2 * value for value in baseline]
    ratio, low, high = bootstrap_ratio_ci(doubled, baseline)
    assert ratio == pytest.approx(2.0)
    assert low <= 2.0 <= high and 1.9 < low and high < 2.1


def test_the_ratio_is_numerator_over_denominator():
    ratio, low, high = bootstrap_ratio_ci([1.0, 1.1, 0.9], [4.0, 4.4, 3.6])
    assert ratio == pytest.approx(0.25) and low <= 0.25 <= high < 1


def test_the_interval_widens_with_the_spread():
    tight = bootstrap_ratio_ci([10.0, 10.1, 9.9, 10.0, 10.05], [5.0, 5.05, 4.95, 5.0, 5.02])
    loose = bootstrap_ratio_ci([10.0, 14.0, 6.0, 12.0, 8.0], [5.0, 7.0, 3.0, 6.0, 4.0])
    assert loose[2] - loose[1] > tight[2] - tight[1] > 0


def test_an_empty_sample_gives_nans():
    assert all(math.isnan(value) for value in bootstrap_ratio_ci([], [1.0, 2.0]))
    assert all(math.isnan(value) for value in bootstrap_ratio_ci([1.0], [NAN, None]))


# ---- the comparison of runs ------------------------------------------------------------------------------------
def fake_run(reports: Path, tag: str, decode_s: list[float], dtype: str = "float32") -> Path:
    """A run directory with an env record and one phase's headline samples (decode seconds and tok/s)."""
    run = reports / "runs" / tag
    (run / "data" / "d1_request").mkdir(parents=True)
    env = {"run_tag": tag, "model": "tiny-random", "device": "cpu", "device_name": "a CPU", "dtype": dtype,
           "cpu_capability": "AVX2", "hostname": "host", "torch": "2.x"}
    (run / "env.json").write_text(json.dumps(env))
    headlines = [{"label": "decode step (batch 1)", "values": decode_s, "unit": "s", "better": "lower"},
                 {"label": "output tok/s", "values": [1 / value for value in decode_s], "unit": "tok/s",
                  "better": "higher"}]
    (run / "data" / "d1_request" / "findings.json").write_text(json.dumps({"headlines": headlines}))
    return run


@pytest.fixture
def two_fake_runs(tmp_path):
    reports = tmp_path / "reports"
    base = [0.010, 0.0102, 0.0098, 0.0101, 0.0099]
    fake_run(reports, "a_base", base)
    fake_run(reports, "b_slow", [3 * value for value in base], "bfloat16")  # three times slower
    return reports


def test_comparison_ratios_are_each_run_over_the_baseline(two_fake_runs):
    runs = [run_record(two_fake_runs / "runs" / tag) for tag in ("a_base", "b_slow")]
    block = next(block for block in comparison(runs) if block["name"] == "d1_request")
    rows = {row["label"]: row for row in block["rows"]}
    decode, tok = rows["decode step (batch 1)"]["cells"], rows["output tok/s"]["cells"]
    assert "ratio" not in decode[0]  # the baseline has no ratio to itself
    assert decode[1]["ratio"] == pytest.approx(3.0) and decode[1]["ratio_low"] <= 3.0 <= decode[1]["ratio_high"]
    assert tok[1]["ratio"] == pytest.approx(1 / 3) and tok[1]["ratio_low"] <= 1 / 3 <= tok[1]["ratio_high"]
    assert decode[0]["median"] == pytest.approx(0.010) and decode[0]["low"] <= 0.010 <= decode[0]["high"]
    other = next(block for block in comparison(runs) if block["name"] == "d2_bottlenecks")
    assert other["rows"] == [] and other["measured"] == [False, False]


def test_the_comparison_page_states_the_ratios_in_the_asked_order(two_fake_runs):
    render_comparison(two_fake_runs, ["b_slow", "a_base"], written=("en",))  # b_slow is the baseline now
    page = (two_fake_runs / "compare.md").read_text()
    assert "[b_slow](runs/b_slow/index.html) (baseline)" in page
    decode = next(line for line in page.splitlines() if line.startswith("| decode step (batch 1)"))
    ratio = re.search(r"\*\*([\d.]+)×\*\* \[([\d.]+)× – ([\d.]+)×\]", decode)
    assert ratio, decode
    value, low, high = (float(group) for group in ratio.groups())
    assert value == pytest.approx(0.33, abs=0.005) and low <= value <= high  # a_base is 1/3 of b_slow
    assert "not measured" not in decode


def test_a_language_no_longer_written_leaves_no_stale_edition(two_fake_runs):
    stale = two_fake_runs / "zh" / "index.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("an older Chinese page")
    render_comparison(two_fake_runs, written=("en",))
    assert not stale.parent.exists() and (two_fake_runs / "compare.md").exists()


# ---- the pages' helpers ----------------------------------------------------------------------------------------
def test_languages_and_edition_links():
    assert languages("both") == ("en", "zh") and languages(None) == ("en", "zh") and languages("zh") == ("zh",)
    assert other_editions("en", ("en", "zh"), "report.md") == [{"label": "中文版", "href": "zh/report.md"}]
    assert other_editions("zh", ("en", "zh"), "index.html") == [{"label": "English edition", "href": "../index.html"}]
    assert other_editions("en", ("en",), "report.md") == []


def test_remove_stale_editions_keeps_the_written_ones(tmp_path):
    (tmp_path / "zh").mkdir()
    remove_stale_editions(tmp_path, ("en", "zh"))
    assert (tmp_path / "zh").is_dir()
    remove_stale_editions(tmp_path, ("en",))
    assert not (tmp_path / "zh").exists() and tmp_path.is_dir()
