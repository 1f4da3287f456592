"""The Jinja environment every report page uses, and the phases' one-line answers rendered from it.

Templates come from templates/ (the page frame) and profiling/phases/ (each phase's `<phase>/…` partials); the
filters are the number formats of profiling/report/format.py, the one place numbers are formatted.
"""
from __future__ import annotations

import jinja2

from ..config import REPO_ROOT
from .format import FILTERS

TEMPLATES = REPO_ROOT / "templates"
PHASES_DIR = REPO_ROOT / "profiling" / "phases"
LANGUAGE = "en"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader([TEMPLATES, PHASES_DIR]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(FILTERS)
    env.globals["answer"] = lambda phase, findings, macro="answer": answer(env, phase, findings, macro)
    return env


def answer(jinja: jinja2.Environment, phase: str, findings: dict, macro: str = "answer") -> str:
    """A phase's one-line answer (or another macro of its answers template), worded from its findings."""
    module = jinja.get_template(f"{phase}/answers.{LANGUAGE}.j2").module
    return " ".join(str(getattr(module, macro)(findings)).split())
