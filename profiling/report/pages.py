"""What every rendered page shares: where each language edition lives, the links between editions, relative links
rebased for an edition in a subfolder, the HTML frame around converted Markdown, and writing a set of pages at
once. The report, the progress wall and the comparison of runs all use it; it uses none of them."""
from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import markdown

from ..io import staged
from .templating import LANGUAGES

MD_PAGES = {"report": "report.md", "progress": "PROGRESS.md"}
HTML_PAGES = {"report": "index.html", "progress": "progress.html"}
EDITIONS = {"en": "", "zh": "zh/"}  # where each language edition lives inside a run directory (and in reports/)
OWN_FOLDERS = ("records/",)  # an edition writes its own copy of these; figures, data and traces are shared
EDITION_NAMES = {"en": "English edition", "zh": "中文版"}  # each edition's name, in its own language


def languages(setting: str | None) -> tuple[str, ...]:
    """The editions the config's `language` asks for: "en", "zh" or "both"."""
    return LANGUAGES if setting in (None, "both") else (setting,)


def edition_dir(run_dir: Path, language: str) -> Path:
    return run_dir / EDITIONS[language]


def depth_prefix(language: str) -> str:
    """From an edition's folder back to the folder that holds it: "" for English, "../" for zh/."""
    return "../" * EDITIONS[language].count("/")


def other_editions(language: str, written: tuple[str, ...], page: str) -> list[dict]:
    """Links from one edition's `page` to the same page of every other edition written."""
    return [{"label": EDITION_NAMES[other], "href": f"{depth_prefix(language)}{EDITIONS[other]}{page}"}
            for other in written if other != language]


def remove_stale_editions(folder: Path, written: tuple[str, ...]) -> None:
    """Delete the subfolder editions under `folder` that are not written any more (language: en leaves no zh/
    behind, whose pages would show older numbers)."""
    for language, subfolder in EDITIONS.items():
        if subfolder and language not in written and (folder / subfolder).is_dir():
            shutil.rmtree(folder / subfolder)


def rebase(markdown_text: str, prefix: str) -> str:
    """Point the relative links of an edition that lives in a subfolder at the run's shared files: `figures/x.png`
    -> `../figures/x.png`; the edition's own pages, its own folders and in-page anchors stay."""
    if not prefix:
        return markdown_text
    own = tuple(MD_PAGES.values()) + tuple(HTML_PAGES.values()) + OWN_FOLDERS

    def fix(match: re.Match) -> str:
        target = match.group(1)
        if re.match(r"[a-z]+:|[#/]|\.\./", target) or target.split("#")[0] in own or target.startswith(own):
            return match.group(0)
        return f"]({prefix}{target})"

    return re.sub(r"\]\(([^)\s]+)\)", fix, markdown_text)


def html_page(jinja, title: str, markdown_text: str) -> str:
    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code", "md_in_html"])
    return jinja.get_template("page.html.j2").render(title=title, body=body)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_all(outputs: dict[Path, str]) -> None:
    """Write every file or none (staged)."""
    with staged(*outputs) as temps:
        for temp, text in zip(temps, outputs.values()):
            temp.write_text(text, encoding="utf-8")
