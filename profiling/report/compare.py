"""Runs side by side: reports/compare.md + compare.html, and reports/index.html.

Every run directory under reports/runs/ that holds an env.json is a run (runs copied in from another machine
count too). The comparison shows each phase's headline figures (findings.json `headlines`: per-repeat samples) per
run — the median with its 95% bootstrap confidence interval — and each run's ratio to the first (baseline) run: the
ratio of medians with its 95% bootstrap confidence interval. A run without a phase shows "not measured".
reports/index.html is the latest run's report, with a bar linking every run and the comparison; with a Chinese
edition, reports/zh/index.html is its Chinese page (reports/index.html too when only Chinese is written); without
one, a reports/zh/ left by an earlier run is removed.
"""
from __future__ import annotations

from pathlib import Path

from .. import phases
from ..io import read_json
from ..runs import run_dirs
from ..stats import bootstrap_median_ci, bootstrap_ratio_ci
from .pages import EDITIONS, html_page, languages, now, remove_stale_editions, write_all
from .templating import LANGUAGES, environment, translate


def run_record(run_dir: Path) -> dict:
    """A run's tag, env record, and each phase's headlines (None: the phase is not measured in that run)."""
    headlines = {}
    for name in phases.PHASES:
        path = run_dir / "data" / name / "findings.json"
        headlines[name] = read_json(path).get("headlines", []) if path.exists() else None
    return {"tag": run_dir.name, "env": read_json(run_dir / "env.json"), "headlines": headlines}


def cell(values: list[float]) -> dict:
    """A run's figure: median, 95% CI of the median and n (NaNs when there are no samples)."""
    if not values:
        return {"median": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    low, high = bootstrap_median_ci(values)
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {"median": median, "low": low, "high": high, "n": len(values)}


def comparison(runs: list[dict]) -> list[dict]:
    """One block per phase: its headline figures (rows) by run (columns), with ratios to the first run."""
    baseline = runs[0]
    blocks = []
    for name in phases.PHASES:
        labels = []
        for run in runs:
            for item in run["headlines"][name] or []:
                if item["label"] not in labels:
                    labels.append(item["label"])
        rows = []
        for label in labels:
            base = next((h for h in baseline["headlines"][name] or [] if h["label"] == label), None)
            cells = []
            for run in runs:
                if run["headlines"][name] is None:
                    cells.append({"measured": False})
                    continue
                item = next((h for h in run["headlines"][name] if h["label"] == label), None)
                if item is None:
                    cells.append({"measured": False})
                    continue
                entry = {"measured": True, **cell(item["values"]), "unit": item["unit"], "better": item["better"]}
                if base is not None and run is not baseline:
                    entry["ratio"], entry["ratio_low"], entry["ratio_high"] = bootstrap_ratio_ci(item["values"],
                                                                                                 base["values"])
                cells.append(entry)
            unit = next((c["unit"] for c in cells if c.get("measured")), "")
            better = next((c["better"] for c in cells if c.get("measured")), "")
            rows.append({"label": label, "unit": unit, "better": better, "cells": cells})
        meta = phases.load(name)
        blocks.append({"name": name, "chapter": meta.CHAPTER, "title": meta.TITLE, "rows": rows,
                       "measured": [run["headlines"][name] is not None for run in runs]})
    return blocks


def index_page(latest_html: str, tag: str, runs: list[dict], language: str, depth: int, reports: Path) -> str:
    """The latest run's page of one edition, its links resolved inside its folder (<base>), with a bar on top that
    links every run (in that edition where it exists) and the comparison. `depth`: folders between reports/ and
    the page (reports/zh/index.html: 1)."""
    folder = EDITIONS[language]
    up = "../" * (1 + folder.count("/"))  # from the edition's folder back to reports/runs/

    def page_of(other: str) -> str:
        edition = folder if (reports / "runs" / other / folder / "index.html").exists() else ""
        return f"{up}{other}/{edition}index.html"

    links = " · ".join(f'<a href="{page_of(run["tag"])}">{run["tag"]}</a>' for run in runs)
    bar = (f'<div class="runs-bar">{translate(language, "Showing the latest run")} <b>{tag}</b> · '
           f'{translate(language, "Runs")}: {links} · '
           f'<a href="{up}../compare.html">{translate(language, "compare runs side by side")}</a></div>')
    base = f'{"../" * depth}runs/{tag}/{folder}'
    page = latest_html.replace("<head>", f'<head>\n<base href="{base}">', 1)
    return page.replace("<body>", "<body>\n" + bar, 1)


def index_pages(reports: Path, dirs: list[Path], runs: list[dict], latest: str | None,
                written: tuple[str, ...]) -> dict[Path, str]:
    """reports/index.html (the first edition written) and reports/zh/index.html (when the Chinese one is): the
    latest run's page, `latest` if it has one, else the newest."""
    pages = {}
    for language in written:
        page = Path(EDITIONS[language]) / "index.html"
        with_page = [path for path in dirs if (path / page).exists()]
        if not with_page:
            continue
        chosen = reports / "runs" / latest if latest and (reports / "runs" / latest / page).exists() \
            else max(with_page, key=lambda path: (path / page).stat().st_mtime)
        html = (chosen / page).read_text(encoding="utf-8")
        if not pages:
            pages[reports / "index.html"] = index_page(html, chosen.name, runs, language, 0, reports)
        if language != "en":
            pages[reports / page] = index_page(html, chosen.name, runs, language, page.parent.as_posix().count("/") + 1,
                                               reports)
    return pages


def render_comparison(reports: str | Path, tags: list[str] | None = None, latest: str | None = None,
                      written: tuple[str, ...] = LANGUAGES) -> None:
    """Write reports/compare.md, compare.html and the index page of each edition from the runs under
    `reports`/runs."""
    reports = Path(reports)
    dirs = run_dirs(reports)
    if tags:
        known = {path.name: path for path in dirs}
        missing = [tag for tag in tags if tag not in known]
        if missing:
            raise ValueError(f"RUNS: no run directory {', '.join(missing)} under {reports / 'runs'} "
                             f"(runs there: {', '.join(known) or 'none'})")
        dirs = [known[tag] for tag in tags]
    runs = [run_record(path) for path in dirs]
    if not runs:
        raise ValueError(f"no run under {reports / 'runs'}: run `snakemake --cores 1` first")
    jinja = environment()
    context = {"runs": runs, "blocks": comparison(runs), "generated_at": now()}
    markdown_text = jinja.get_template("compare.md.j2").render(**context)
    outputs = {reports / "compare.md": markdown_text,
               reports / "compare.html": html_page(jinja, "llm-infer-baseline · runs compared", markdown_text)}
    outputs.update(index_pages(reports, dirs, runs, latest, written))
    write_all(outputs)
    remove_stale_editions(reports, written)


# ---- command line (python -m profiling compare) --------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--reports", default="reports", help="the reports/ directory (runs under reports/runs/)")
    parser.add_argument("--runs", nargs="*", help="run tags to compare, baseline first (default: every run)")
    parser.add_argument("--latest", help="the run tag reports/index.html shows (default: the newest report)")
    parser.add_argument("--language", default="both", choices=("both",) + LANGUAGES,
                        help="the editions' index pages to write: en, zh (reports/zh/index.html) or both")


def cli(args) -> None:
    render_comparison(args.reports, args.runs, args.latest, languages(args.language))
