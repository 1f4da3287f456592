"""Render reports/: report.md, index.html, PROGRESS.md, progress.html, records/*.txt and figures/.

The report never measures: it reads env.json and each experiment's analysis outputs, draws the charts and fills
the Jinja templates. A phase whose artifacts are missing is rendered as "not yet measured". The HTML pages are
the same Markdown, converted, inside a self-contained page (inline CSS, relative links: works from file://).
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import markdown

from ..config import REPO_ROOT
from ..io import read_json, staged
from . import d1, d2, d3_batching, d3_kvcache, progress

TEMPLATES = REPO_ROOT / "templates"
# The report's phase sections, in order. Each module has `view(reports, figures) -> dict | None` (None: not yet
# measured), EXPERIMENT (its data directory name) and RECORD_TEMPLATE (its observation record, or None); its
# Markdown is templates/partials/<name>.md.j2, given the view as `section`.
SECTIONS = {"d1": d1, "d2": d2, "d3_batching": d3_batching, "d3_kvcache": d3_kvcache}
MD_PAGES = {"report": "report.md", "progress": "PROGRESS.md"}
HTML_PAGES = {"report": "index.html", "progress": "progress.html"}


# ---- formatting filters -------------------------------------------------------------------------------------
def _ms(seconds) -> str:
    return "n/a" if seconds is None or not math.isfinite(seconds) else f"{seconds * 1e3:.2f} ms"


def _secs(seconds) -> str:
    return "n/a" if seconds is None or not math.isfinite(seconds) else f"{seconds:.3f} s"


def _pct(share) -> str:
    return "—" if share is None or not math.isfinite(share) else f"{share * 100:.1f}%"


def _num(value, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def _bytes(value) -> str:
    """Bytes in binary units: KiB below 1 MiB, MiB below 1 GiB, else GiB."""
    if value is None:
        return "n/a"
    if value < 2**20:
        return f"{value / 2**10:.1f} KiB"
    return f"{value / 2**20:.1f} MiB" if value < 2**30 else f"{value / 2**30:.1f} GiB"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(ms=_ms, secs=_secs, pct=_pct, num=_num, bytes=_bytes)
    return env


# ---- rendering ----------------------------------------------------------------------------------------------
def _html_page(template: jinja2.Template, title: str, markdown_text: str) -> str:
    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])
    return template.render(title=title, body=body)


def render_progress(reports: str | Path) -> None:
    """Write PROGRESS.md and progress.html from the artifacts now under `reports`."""
    reports = Path(reports)
    jinja = environment()
    wall = progress.wall(reports)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    md = jinja.get_template("progress.md.j2").render(wall=wall, pages=MD_PAGES, generated_at=stamp)
    html_md = jinja.get_template("progress.md.j2").render(wall=wall, pages=HTML_PAGES, generated_at=stamp)
    html = _html_page(jinja.get_template("page.html.j2"), "llm-infer-baseline · progress", html_md)
    with staged(reports / "PROGRESS.md", reports / "progress.html") as (md_tmp, html_tmp):
        md_tmp.write_text(md)
        html_tmp.write_text(html)


def render_all(reports: str | Path) -> None:
    """Write every report file under `reports` (figures first, then records, report pages and progress wall)."""
    reports = Path(reports)
    jinja = environment()
    figures = reports / "figures"
    env = read_json(reports / "env.json")
    sections = {name: module.view(reports, figures) for name, module in SECTIONS.items()}
    context = {"env": env, "sections": sections,
               "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    outputs = {}
    for name, module in SECTIONS.items():
        if sections[name] is not None and module.RECORD_TEMPLATE:
            record = jinja.get_template(module.RECORD_TEMPLATE).render(section=sections[name], **context)
            outputs[reports / "records" / f"{module.EXPERIMENT}.txt"] = record
    outputs[reports / "report.md"] = jinja.get_template("report.md.j2").render(pages=MD_PAGES, **context)
    html_md = jinja.get_template("report.md.j2").render(pages=HTML_PAGES, **context)
    outputs[reports / "index.html"] = _html_page(jinja.get_template("page.html.j2"), "llm-infer-baseline report",
                                                 html_md)
    with staged(*outputs) as temps:
        for temp, text in zip(temps, outputs.values()):
            temp.write_text(text)
    render_progress(reports)


# ---- command line (python -m profiling report) ---------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--reports", default="reports", help="the reports/ directory to read and write")


def cli(args) -> None:
    render_all(args.reports)
