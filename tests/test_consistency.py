"""The report of a real tiny run agrees with itself: every figure the run-at-a-glance block prints for a phase is
printed in that phase's section too (same value, up to the rounding of the less precise print), no sentence
carries "n/a", and the bandwidth roof is one number that no ceiling exceeds."""
import json
import re

import pytest

from tests.conftest import run_dir_of

PHASES = ["d1_request", "d2_bottlenecks", "d3_batching", "d3_kvcache", "d5_variants"]
UNITS = {"ms": ("ms", 1.0), "s": ("ms", 1e3), "µs": ("ms", 1e-3), "GB/s": ("GB/s", 1.0), "GFLOP/s": ("GFLOP/s", 1.0),
         "tok/s": ("tok/s", 1.0), "tokens/s": ("tok/s", 1.0), "req/s": ("req/s", 1.0), "%": ("%", 1.0),
         "×": ("×", 1.0), "J": ("J", 1.0), "": ("", 1.0)}
FIGURE = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)\s?(ms|µs|s|GB/s|GFLOP/s|tokens/s|tok/s|req/s|%|×|J)(?![\w/])")
NUMBER = re.compile(r"(?<![\w.])(\d[\d,]*\.\d+)(?![\w.])")
UNSCALED = {"tok/s", "req/s", "×", "J"}  # a table cell may print these bare, under a header naming the unit


def figure(number: str, unit: str) -> tuple[float, float, str, str]:
    """(value, half of its last printed digit, unit, as printed), in ms for times."""
    decimals = len(number.split(".")[1]) if "." in number else 0
    base, scale = UNITS[unit]
    return float(number.replace(",", "")) * scale, 0.5 * 10 ** -decimals * scale, base, f"{number} {unit}"


def figures(text: str) -> list[tuple[float, float, str, str]]:
    """Every number with a unit in `text`."""
    return [figure(number, unit) for number, unit in FIGURE.findall(text)]


def bare_numbers(text: str) -> list[tuple[float, float, str, str]]:
    """Every decimal number in `text`, unit or not (unit "")."""
    return [figure(number, "") for number in NUMBER.findall(text)]


def glance_items(report: str) -> dict:
    """Phase -> its at-a-glance item (answer and key numbers)."""
    block = report.split('<a id="at-a-glance"></a>', 1)[1].split('<a id="environment"></a>', 1)[0]
    items = {}
    for item in re.split(r"\n- \*\*", block)[1:]:
        name = re.search(r"\]\(#(\w+)\)", item).group(1)
        items[name] = item
    return items


def section_text(report: str, name: str) -> str:
    """The text of one phase's section: from its anchor to the next phase's anchor (or the end)."""
    after = report.split(f'<a id="{name}"></a>', 1)[1]
    following = [after.find(f'<a id="{other}"></a>') for other in PHASES + ["d4_serving"] if other != name]
    ends = [position for position in following if position > 0]
    return after[:min(ends)] if ends else after


@pytest.fixture(scope="module")
def report(workflow_run):
    return (run_dir_of(workflow_run) / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("phase", PHASES)
def test_each_at_a_glance_figure_is_the_one_in_its_section(report, phase):
    item = glance_items(report)[phase]
    assert "not yet measured" not in item, item
    section = section_text(report, phase)
    printed, bare = figures(section), bare_numbers(section)
    missing = []
    for value, half, unit, shown in figures(item):
        candidates = printed + (bare if unit in UNSCALED else [])
        if not any(other_unit in (unit, "") and abs(value - other) <= half + other_half + 1e-9
                   for other, other_half, other_unit, _ in candidates):
            missing.append(shown)
    assert not missing, f"{phase}: at a glance but not in its section: {missing}\n{item}"


@pytest.mark.parametrize("phase", PHASES)
def test_no_sentence_carries_n_a(report, phase):
    prose = [line for line in (glance_items(report)[phase] + section_text(report, phase)).splitlines()
             if not line.lstrip().startswith("|")]  # table cells may say a value is missing; sentences may not
    assert not [line for line in prose if re.search(r"\bn/a\b", line)], phase


def test_one_bandwidth_roof_that_no_ceiling_exceeds(workflow_run):
    data = run_dir_of(workflow_run) / "data"
    d2 = json.loads((data / "d2_bottlenecks" / "findings.json").read_text())
    d5 = json.loads((data / "d5_variants" / "findings.json").read_text())
    assert d5["roof_bytes_per_s"] == d2["bandwidth_bytes_per_s"]
    for name, ceiling in d2["ceilings"].items():
        if name != "matmul" and ceiling.get("bytes_per_s"):
            assert ceiling["bytes_per_s"] <= d2["bandwidth_bytes_per_s"], name


def test_the_environment_section_shows_each_phase_wall_time(report):
    environment = report.split('<a id="environment"></a>', 1)[1].split('<a id="d1_request"></a>', 1)[0]
    for phase in PHASES:
        assert f"[{phase}](#{phase})" in environment, phase
