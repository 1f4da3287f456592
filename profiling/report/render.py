"""Render one run's report: report.md, index.html, PROGRESS.md, progress.html, records/*.txt and figures/.

The report never measures and never analyses: it reads the run's env.json and each phase's analysis outputs
(through the phase's view, which also draws its charts) and fills the Jinja templates. A phase whose artifacts are
missing is rendered as "not yet measured". The HTML pages are the same Markdown, converted, inside a
self-contained page (inline CSS, relative links: works from file://).
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import markdown

from .. import phases
from ..io import read_json, staged
from .progress import wall
from .templating import LANGUAGE, PHASES_DIR, environment

MD_PAGES = {"report": "report.md", "progress": "PROGRESS.md"}
HTML_PAGES = {"report": "index.html", "progress": "progress.html"}


def html_page(jinja, title: str, markdown_text: str) -> str:
    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])
    return jinja.get_template("page.html.j2").render(title=title, body=body)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def render_progress(run_dir: str | Path) -> None:
    """Write PROGRESS.md and progress.html from the artifacts now under `run_dir`."""
    run_dir = Path(run_dir)
    jinja = environment()
    table = wall(run_dir, jinja)
    stamp = now()
    pages = {}
    for name, links in (("PROGRESS.md", MD_PAGES), ("progress.html", HTML_PAGES)):
        pages[name] = jinja.get_template("progress.md.j2").render(wall=table, pages=links, generated_at=stamp)
    pages["progress.html"] = html_page(jinja, "llm-infer-baseline · progress", pages["progress.html"])
    with staged(*(run_dir / name for name in pages)) as temps:
        for temp, text in zip(temps, pages.values()):
            temp.write_text(text)


def sections(run_dir: Path) -> list[dict]:
    """One entry per registered phase, in report order: its metadata and its view (None: not yet measured)."""
    result = []
    for name in phases.PHASES:
        meta = phases.load(name)
        view = phases.module(name, "view").view(run_dir, run_dir / "figures")
        result.append({"name": name, "chapter": meta.CHAPTER, "title": meta.TITLE, "question": meta.QUESTION,
                       "view": view, "proof": f"data/{name}/findings.json",
                       "record": (PHASES_DIR / name / "record.txt.j2").exists()})
    return result


def render_all(run_dir: str | Path) -> None:
    """Write every report file of one run (figures first, then records, report pages and progress wall)."""
    run_dir = Path(run_dir)
    jinja = environment()
    env = read_json(run_dir / "env.json")
    context = {"env": env, "sections": sections(run_dir), "generated_at": now(), "language": LANGUAGE}

    outputs = {}
    for section in context["sections"]:
        if section["view"] is not None and section["record"]:
            record = jinja.get_template(f"{section['name']}/record.txt.j2").render(section=section["view"], **context)
            outputs[run_dir / "records" / f"{section['name']}.txt"] = record
    outputs[run_dir / "report.md"] = jinja.get_template("report.md.j2").render(pages=MD_PAGES, **context)
    html_md = jinja.get_template("report.md.j2").render(pages=HTML_PAGES, **context)
    outputs[run_dir / "index.html"] = html_page(jinja, f"llm-infer-baseline report · {env['run_tag']}", html_md)
    with staged(*outputs) as temps:
        for temp, text in zip(temps, outputs.values()):
            temp.write_text(text)
    render_progress(run_dir)


# ---- command line (python -m profiling report) ---------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--run-dir", required=True, help="the run's directory (reports/runs/<run tag>)")


def cli(args) -> None:
    render_all(args.run_dir)
