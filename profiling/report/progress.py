"""The progress wall: the learning plan's checklist, phase table and sprint table, ticked from one run's artifacts.

Each phase declares the rows it proves (WALL in its metadata); the environment row is proven by env.json. A row is
☑ only when its proof file exists and its note — the phase's one-line answer, worded by the report from that file
— can be written; otherwise ☐ with "not yet measured" (file missing) or the reason the check failed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from .. import phases
from ..io import read_json
from .pages import (HTML_PAGES, MD_PAGES, depth_prefix, edition_dir, html_page, languages, now, other_editions,
                    rebase, write_all)
from .templating import LANGUAGES, answer, environment, translate

DONE, TODO = "☑", "☐"
TABLES = ("checklist", "phases", "sprint")
ENV_ROW = phases.WallRow("checklist", 1, "✅ 明确设备/精度假设（CPU vs GPU / FP32 vs FP16）",
                         ("基础", "`config.py` 中记下硬件信息"))


@dataclass(frozen=True)
class Status:
    row: phases.WallRow
    phase: str | None  # the phase that proves it (None: the environment row)
    proof: str  # path of the proving file, relative to the run directory
    done: bool
    note: str

    @property
    def mark(self) -> str:
        return DONE if self.done else TODO


def env_note(env: dict) -> str:
    return f"{env['device']} · {env['dtype']} · {env['device_name']} · torch {env['torch']}"


def evaluate(row: phases.WallRow, phase: str | None, run_dir: Path, jinja: jinja2.Environment) -> Status:
    """☑ with the key numbers when the proof (findings, and the row's own artifact when it names one) exists and
    its note can be written; else ☐ and why."""
    findings = "env.json" if phase is None else f"data/{phase}/findings.json"
    path = run_dir / findings
    proof = row.artifact or findings  # the file the row links: its own artifact (e.g. a figure), or the findings
    words = jinja.globals["tr"]  # the edition's wording of the notes below
    if not path.exists() or not (run_dir / proof).exists():
        return Status(row, phase, proof, False, words("not yet measured"))
    try:
        data = read_json(path)
        note = env_note(data) if phase is None else answer(jinja, phase, data, row.note)
        if not note.strip():
            raise ValueError("the note is empty")
        if "n/a" in note:
            raise ValueError(f"a key number is missing or not finite: {note}")
        return Status(row, phase, proof, True, note)
    except (KeyError, TypeError, ValueError, AttributeError, jinja2.UndefinedError) as error:
        return Status(row, phase, proof, False, f"{words('proof incomplete')} ({type(error).__name__}: {error})")


def wall(run_dir: str | Path, jinja: jinja2.Environment) -> dict:
    """Every table of the wall, evaluated against the artifacts under `run_dir`."""
    run_dir = Path(run_dir)
    rows = [(ENV_ROW, None)] + [(row, name) for name in phases.PHASES for row in phases.load(name).WALL]
    tables = {table: [evaluate(row, phase, run_dir, jinja)
                      for row, phase in sorted(rows, key=lambda item: item[0].order) if row.table == table]
              for table in TABLES}
    tables["done"] = sum(status.done for status in tables["checklist"])
    tables["total"] = len(tables["checklist"])
    return tables


# ---- pages -----------------------------------------------------------------------------------------------------
def progress_pages(run_dir: Path, language: str, written: tuple[str, ...], stamp: str) -> dict[Path, str]:
    """One edition's PROGRESS.md and progress.html."""
    jinja = environment(language)
    table = wall(run_dir, jinja)
    folder, prefix = edition_dir(run_dir, language), depth_prefix(language)
    pages = {}
    for name, links in (("PROGRESS.md", MD_PAGES), ("progress.html", HTML_PAGES)):
        text = jinja.get_template("progress.md.j2").render(
            wall=table, pages=links, generated_at=stamp, editions=other_editions(language, written, name))
        pages[folder / name] = rebase(text, prefix)
    html = folder / "progress.html"
    pages[html] = html_page(jinja, f"llm-infer-baseline · {translate(language, 'progress wall')}", pages[html])
    return pages


def render_progress(run_dir: str | Path, written: tuple[str, ...] = LANGUAGES) -> None:
    """Write PROGRESS.md and progress.html of every edition from the artifacts now under `run_dir`."""
    run_dir = Path(run_dir)
    stamp = now()
    outputs = {}
    for language in written:
        outputs.update(progress_pages(run_dir, language, written, stamp))
    write_all(outputs)


# ---- command line (python -m profiling progress) -------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--run-dir", required=True, help="the run's directory (reports/runs/<run tag>)")
    parser.add_argument("--language", default="both", choices=("both",) + LANGUAGES,
                        help="the editions to write: en, zh (under <run dir>/zh/) or both")


def cli(args) -> None:
    render_progress(args.run_dir, languages(args.language))
