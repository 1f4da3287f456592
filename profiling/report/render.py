"""Render one run's report: report.md, index.html, PROGRESS.md, progress.html, records/*.txt and figures/, in
each language edition asked for (English in the run directory, Chinese under its zh/ folder).

The report never measures and never analyses: it reads the run's env.json and each phase's analysis outputs
(through the phase's view, which also draws its charts, once for every edition) and fills the Jinja templates. A
phase whose artifacts are missing is rendered as "not yet measured". The HTML pages are the same Markdown,
converted, inside a self-contained page (inline CSS, relative links: works from file://).
"""
from __future__ import annotations

import re
import statistics
from pathlib import Path

import jinja2

from .. import phases
from ..env import phase_wall_times
from ..io import read_json
from .pages import (HTML_PAGES, MD_PAGES, depth_prefix, edition_dir, html_page, languages, now, other_editions,
                    rebase, remove_stale_editions, write_all)
from .progress import render_progress
from .templating import LANGUAGES, PHASES_DIR, answer, environment, translate

HEADLINES_SHOWN = 3


def figure_anchors(markdown_text: str) -> str:
    """Give every figure an anchor named after its file: `![…](figures/<phase>_waterfall.png)` gets
    `<a id="<phase>_waterfall"></a>` in front of it."""
    return re.sub(r"!\[[^\]]*\]\((?:\.\./)*figures/([\w.-]+?)\.png\)",
                  lambda match: f'<a id="{match.group(1)}"></a>{match.group(0)}', markdown_text)


# ---- report --------------------------------------------------------------------------------------------------
def sections(run_dir: Path) -> list[dict]:
    """One entry per registered phase, in report order: its metadata, findings and view (None: not measured)."""
    result = []
    for name in phases.PHASES:
        meta = phases.load(name)
        findings_path = run_dir / "data" / name / "findings.json"
        view_path = PHASES_DIR / name / "view.py"
        view = phases.module(name, "view").view(run_dir, run_dir / "figures") if view_path.exists() else None
        result.append({"name": name, "chapter": meta.CHAPTER, "title": meta.TITLE, "question": meta.QUESTION,
                       "view": view, "proof": f"data/{name}/findings.json",
                       "findings": read_json(findings_path) if findings_path.exists() else None,
                       "record": (PHASES_DIR / name / "record.txt.j2").exists()})
    return result


def headline_figures(findings: dict) -> list[dict]:
    """The first few headline figures of a phase: label, median of its samples, n and unit."""
    return [{"label": item["label"], "median": statistics.median(item["values"]), "n": len(item["values"]),
             "unit": item["unit"]}
            for item in findings.get("headlines", [])[:HEADLINES_SHOWN] if item["values"]]


def glance(section: dict, jinja) -> dict:
    """A phase's line in "the run at a glance": its one-line answer (None when it cannot be worded) and headlines."""
    findings = section["findings"]
    if findings is None:
        return {"measured": False, "answer": None, "headlines": []}
    try:
        line = answer(jinja, section["name"], findings)
    except (jinja2.TemplateError, KeyError, TypeError, ValueError, AttributeError):
        line = None
    return {"measured": True, "answer": line, "headlines": headline_figures(findings)}


def report_pages(run_dir: Path, context: dict, language: str, written: tuple[str, ...]) -> dict[Path, str]:
    """One edition's records, report.md and index.html."""
    jinja = environment(language)
    folder, prefix = edition_dir(run_dir, language), depth_prefix(language)
    context = {**context, "glance": {s["name"]: glance(s, jinja) for s in context["sections"]}}
    outputs = {}
    for section in context["sections"]:
        if section["view"] is not None and section["record"]:
            record = jinja.get_template(f"{section['name']}/record.txt.j2").render(section=section["view"], **context)
            outputs[folder / "records" / f"{section['name']}.txt"] = record
    for name, links in (("report.md", MD_PAGES), ("index.html", HTML_PAGES)):
        text = jinja.get_template("report.md.j2").render(
            pages=links, editions=other_editions(language, written, name), **context)
        outputs[folder / name] = figure_anchors(rebase(text, prefix))
    title = f"llm-infer-baseline · {translate(language, 'report')} · {context['env']['run_tag']}"
    outputs[folder / "index.html"] = html_page(jinja, title, outputs[folder / "index.html"])
    return outputs


def render_all(run_dir: str | Path, written: tuple[str, ...] = LANGUAGES) -> None:
    """Write every report file of one run in each language of `written` (figures first, then records, report
    pages and progress wall)."""
    run_dir = Path(run_dir)
    context = {"env": read_json(run_dir / "env.json"), "sections": sections(run_dir), "generated_at": now(),
               "wall_times": phase_wall_times(run_dir, phases.PHASES)}
    outputs = {}
    for language in written:
        outputs.update(report_pages(run_dir, context, language, written))
    write_all(outputs)
    remove_stale_editions(run_dir, written)
    render_progress(run_dir, written)


# ---- command line (python -m profiling report) ---------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--run-dir", required=True, help="the run's directory (reports/runs/<run tag>)")
    parser.add_argument("--language", default="both", choices=("both",) + LANGUAGES,
                        help="the editions to write: en, zh (under <run dir>/zh/) or both")


def cli(args) -> None:
    render_all(args.run_dir, languages(args.language))
