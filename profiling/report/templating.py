"""The Jinja environment of one language edition, and the phases' one-line answers rendered from it.

Templates come from templates/ (the page frame) and profiling/phases/ (each phase's `<phase>/…` partials); the
filters are the number formats of profiling/report/format.py, the one place numbers are formatted.

Wording, one source per language: English lives in the templates themselves. Another language adds files beside
them, named with the language before the extension (`section.zh.md.j2` beside `section.md.j2`, `answers.zh.j2`
beside `answers.en.j2`); the loader picks that file when it exists and falls back to English otherwise, so a phase
without a translation still renders. The frame's short strings (headings, labels) go through `tr()`, looked up in
`templates/messages.<lang>.yaml` (English text -> translation; a missing entry stays English).
"""
from __future__ import annotations

from functools import lru_cache

import jinja2
import yaml

from ..config import REPO_ROOT
from .format import FILTERS

TEMPLATES = REPO_ROOT / "templates"
PHASES_DIR = REPO_ROOT / "profiling" / "phases"
LANGUAGES = ("en", "zh")
LANGUAGE = "en"  # the default edition


def localized_name(name: str, language: str) -> str:
    """`<phase>/section.md.j2` -> `<phase>/section.zh.md.j2` (the same name in English)."""
    if language == LANGUAGE:
        return name
    folder, _, file = name.rpartition("/")
    stem, _, extension = file.partition(".")
    return f"{folder}/{stem}.{language}.{extension}" if folder else f"{stem}.{language}.{extension}"


class LocalizedLoader(jinja2.FileSystemLoader):
    """A file loader that prefers a template's translation into `language` and falls back to the template."""

    def __init__(self, searchpath, language: str):
        super().__init__(searchpath)
        self.language = language

    def get_source(self, environment, template):
        localized = localized_name(template, self.language)
        if localized != template:
            try:
                return super().get_source(environment, localized)
            except jinja2.TemplateNotFound:
                pass
        return super().get_source(environment, template)


@lru_cache(maxsize=None)
def messages(language: str) -> dict:
    """The frame's message catalogue for `language` (empty for English)."""
    path = TEMPLATES / f"messages.{language}.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}


def translate(language: str, text: str) -> str:
    """`text` in `language`, or `text` itself when the catalogue has no entry for it."""
    return messages(language).get(text, text)


def environment(language: str = LANGUAGE) -> jinja2.Environment:
    env = jinja2.Environment(loader=LocalizedLoader([TEMPLATES, PHASES_DIR], language),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(FILTERS)
    env.globals["lang"] = language
    env.globals["tr"] = lambda text: translate(language, text)
    env.globals["answer"] = lambda phase, findings, macro="answer": answer(env, phase, findings, macro)
    return env


def answer(jinja: jinja2.Environment, phase: str, findings: dict, macro: str = "answer") -> str:
    """A phase's one-line answer (or another macro of its answers template) in the environment's language, worded
    from its findings (answers.<lang>.j2, else answers.en.j2)."""
    language = jinja.globals.get("lang", LANGUAGE)
    names = [f"{phase}/answers.{language}.j2", f"{phase}/answers.{LANGUAGE}.j2"]
    module = jinja.select_template(names).module
    return " ".join(str(getattr(module, macro)(findings)).split())
