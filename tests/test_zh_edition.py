"""The Chinese edition of a real tiny run reads as Chinese: every phase's section and observation record in
zh/ is Chinese prose, not English left untranslated (a phase added without its Chinese files fails here, since the
report then falls back to the English files)."""
import re
from pathlib import Path

import pytest

from profiling import phases
from tests.conftest import run_dir_of

ENGLISH_RUN = 4  # this many English words in a row, with nothing else between them, make a line English prose
WORD = re.compile(r"[A-Za-z]{2,}(?:[-'’][A-Za-z]+)*")
CJK = re.compile(r"[\u3400-\u9fff]")


def prose_lines(markdown_text: str) -> list[str]:
    """The lines a reader reads as prose: outside fenced code blocks, tables, images and HTML, with inline code and
    link targets taken out (they are names and paths, not words)."""
    lines, fenced = [], False
    for line in markdown_text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        text = line.strip().removeprefix("> ")
        if fenced or not text or text.startswith(("|", "<", "![")):
            continue
        text = re.sub(r"`[^`]*`", " ", text)
        lines.append(re.sub(r"\]\([^)]*\)", "]", text))
    return lines


def is_english(line: str) -> bool:
    """Whether `line` holds a run of ENGLISH_RUN English words (numbers, symbols and Chinese break a run)."""
    run = 0
    for token in line.split():
        run = run + 1 if WORD.fullmatch(token.strip(",.;:!?()[]{}\"“”*_")) else 0
        if run >= ENGLISH_RUN:
            return True
    return False


def mostly_english(lines: list[str]) -> bool:
    return sum(map(is_english, lines)) * 2 > len(lines)


def sections_of(report: str) -> dict[str, str]:
    """Phase name -> its section of a report.md (from its anchor to its back-to-top link)."""
    result = {}
    for name in phases.PHASES:
        start = report.index(f'<a id="{name}"></a>')
        result[name] = report[start:report.index('<a href="#top">', start)]
    return result


def test_the_measure_tells_english_from_chinese():
    assert is_english("Every number below was measured in this run.")
    assert not is_english("批处理让解码在屋顶线上右移：batch 2 时算术强度为 1.23 FLOP/byte")
    assert not is_english("TTFT p50 / p99 : 12 ms / 15 ms (continuous_r50)")
    assert mostly_english(["one English line of prose here", "两行", "and another English line of prose"])
    assert not mostly_english(["one English line of prose here", "中文", "中文"])


@pytest.fixture(scope="module")
def chinese(workflow_run) -> Path:
    return run_dir_of(workflow_run) / "zh"


@pytest.mark.parametrize("name", phases.PHASES)
def test_every_phase_section_is_chinese_prose(chinese, name):
    section = sections_of((chinese / "report.md").read_text(encoding="utf-8"))[name]
    lines = prose_lines(section)
    english = [line for line in lines if is_english(line)]
    assert len(lines) > 3 and not mostly_english(lines), f"{name}: {len(english)} of {len(lines)} lines English:\n" + \
        "\n".join(english)
    assert sum(len(CJK.findall(line)) for line in lines) > 50, name


@pytest.mark.parametrize("name", phases.PHASES)
def test_every_phase_record_is_chinese(chinese, name):
    """The record keeps the learning plan's field names (Hardware, Model, …); what follows them is Chinese."""
    record = (chinese / "records" / f"{name}.txt").read_text(encoding="utf-8")
    values = [line.split(":", 1)[1] for line in record.splitlines() if ":" in line and not line.startswith("[")]
    english = [value for value in values if is_english(value)]
    assert values and not mostly_english(values), f"{name}: " + "\n".join(english)
    observations = next(line.split(":", 1)[1] for line in record.splitlines() if line.startswith("Observations"))
    assert not is_english(observations) and CJK.search(observations), observations
    english = (chinese.parent / "records" / f"{name}.txt").read_text(encoding="utf-8")
    assert without_observations(record) != without_observations(english), f"{name}: the English record"


def without_observations(record: str) -> list[str]:
    """A record's lines but its observations (the conclusion, which a phase words in every language anyway)."""
    return [line for line in record.splitlines() if not line.startswith("Observations")]


def test_the_english_edition_is_english(workflow_run):
    """The measure above, the other way round: the English sections are English prose."""
    report = (run_dir_of(workflow_run) / "report.md").read_text(encoding="utf-8")
    for name, section in sections_of(report).items():
        assert mostly_english(prose_lines(section)), name
