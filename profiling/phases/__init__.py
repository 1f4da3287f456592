"""The phases, in report order: the one list that the command line, the report, the progress wall and the
Snakefile read. Adding a phase is one folder here, one line in PHASES and one config section (+ its schema).

A phase's name is spelled one way everywhere: its folder, config section, command (`python -m profiling <name>`,
`<name>_analysis`), rules, data and trace directories, figure prefix and report anchor. Its folder holds:

    __init__.py      light metadata (no heavy imports): CHAPTER, TITLE, QUESTION, WALL (progress-wall rows)
    experiment.py    measures: measurements.csv, meta.json, traces          (add_arguments / cli)
    analysis.py      reads those files: summary tables, findings.json          (add_arguments / cli)
    view.py          the report section's data and charts: view(run_dir, figures) -> dict | None
    section.md.j2    the section's Markdown; answers.<lang>.j2 its sentences; record.txt.j2 its record
    rules.smk        the Snakemake rules `<name>` and `<name>_analysis`
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

PHASES = [
    "d1_request",
    "d2_bottlenecks",
    "d3_batching",
    "d3_kvcache",
    "d4_serving",
    "d5_variants",
]


@dataclass(frozen=True)
class WallRow:
    """One row of the progress wall that a phase proves: which table, its place in it, the learning plan's text,
    and the macro of the phase's answers template that writes its note from findings.json."""

    table: str  # "checklist", "phases" or "sprint"
    order: int  # position in that table (the learning plan's order)
    label: str  # the row's text, as in the learning plan
    extra: tuple  # further columns of the row (category, question, …)
    note: str = "answer"  # macro name in <phase>/answers.<lang>.j2
    artifact: str | None = None  # a file of the run that must exist too and that the row links (e.g. a figure)


def load(name: str):
    """The phase's light metadata module (profiling.phases.<name>)."""
    return importlib.import_module(f"{__name__}.{name}")


def module(name: str, part: str):
    """One part of a phase: "experiment", "analysis" or "view" (imported on demand; experiments import torch)."""
    return importlib.import_module(f"{__name__}.{name}.{part}")
