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
import pandas as pd

from ..config import REPO_ROOT
from ..io import read_json, staged
from . import charts, progress

TEMPLATES = REPO_ROOT / "templates"
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
    """Bytes in binary units: MiB below 1 GiB, else GiB."""
    if value is None:
        return "n/a"
    return f"{value / 2**20:.1f} MiB" if value < 2**30 else f"{value / 2**30:.1f} GiB"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(ms=_ms, secs=_secs, pct=_pct, num=_num, bytes=_bytes)
    return env


# ---- D1 view ------------------------------------------------------------------------------------------------
def d1_view(reports: Path, figures: Path) -> dict | None:
    """Everything the D1 section shows, or None when D1 has not been analysed in this reports/ directory."""
    data = reports / "data" / "d1_request"
    needed = [data / name for name in ("findings.json", "summary.csv", "operators.csv", "measurements.csv",
                                       "meta.json")]
    if not all(path.exists() for path in needed):
        return None
    findings = read_json(data / "findings.json")
    meta = read_json(data / "meta.json")
    summary = pd.read_csv(data / "summary.csv")
    operators = pd.read_csv(data / "operators.csv")
    measurements = pd.read_csv(data / "measurements.csv")
    untraced = measurements[measurements["variant"] == "untraced"]
    top = meta["config"]["d1"]["top_ops"]
    key_metrics = summary[(summary["variant"] == "untraced") & summary["step"].isna()
                          & summary["metric"].isin(["ttft_s", "tpot_s", "e2e_s", "output_tok_per_s"])]
    step_medians = untraced[untraced["metric"] == "decode_step_s"].groupby("step")["value"].median()
    return {
        "findings": findings,
        "meta": meta,
        "stages": findings["stages"],
        "key_metrics": key_metrics.to_dict(orient="records"),
        "step_medians_ms": [round(v * 1e3, 1) for v in step_medians],
        "operators": {stage: operators[operators["stage"] == stage].nlargest(top, "self_s").to_dict("records")
                      for stage in ("prefill", "decode_step")},
        "figures": {
            "waterfall": charts.d1_waterfall(untraced, figures),
            "token_latency": charts.d1_token_latency(untraced, figures),
            "operators": charts.d1_operators(operators, figures, top),
        },
        "trace": "traces/d1_request/request.json.gz",
        "measurements": "data/d1_request/measurements.csv",
        "summary": "data/d1_request/summary.csv",
        "operators_csv": "data/d1_request/operators.csv",
        "record": "records/d1_request.txt",
    }


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
    d1 = d1_view(reports, figures)
    context = {"env": env, "d1": d1, "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    outputs = {}
    if d1 is not None:
        outputs[reports / "records" / "d1_request.txt"] = jinja.get_template("record_d1.txt.j2").render(**context)
    outputs[reports / "report.md"] = jinja.get_template("report.md.j2").render(pages=MD_PAGES, **context)
    html_md = jinja.get_template("report.md.j2").render(pages=HTML_PAGES, **context)
    outputs[reports / "index.html"] = _html_page(jinja.get_template("page.html.j2"), "llm-infer-baseline report",
                                                 html_md)
    with staged(*outputs) as temps:
        for temp, text in zip(temps, outputs.values()):
            temp.write_text(text)
    render_progress(reports)
