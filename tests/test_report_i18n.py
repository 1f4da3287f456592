"""The report's two editions (English, Chinese), the run at a glance, navigation, and rendering with a phase missing."""
import json
import re
import shutil
import statistics
from pathlib import Path

import pytest

from profiling import phases
from profiling.report import render
from profiling.report.format import figure
from profiling.report.pages import rebase
from profiling.report.render import figure_anchors, render_all
from profiling.report.templating import localized_name, translate
from tests.conftest import run_dir_of, snakemake

PAGES = ("report.md", "index.html", "PROGRESS.md", "progress.html")
NOT_MEASURED = {"en": "not yet measured", "zh": "尚未测量"}


def local_links(page: Path) -> list[str]:
    """The relative links and images of a page (Markdown or HTML; the <base> tag itself excluded)."""
    text = page.read_text(encoding="utf-8")
    if page.suffix == ".md":
        links = re.findall(r"\]\(([^)\s]+)\)", text)
    else:
        links = re.findall(r'<(?:a|img|link|script)\b[^>]*?(?:href|src)="([^"]+)"', text)
    return [link for link in links if not re.match(r"[a-z]+:|#", link)]


def base_of(page: Path) -> Path:
    """The folder a page's relative links resolve against (its <base href> when it has one)."""
    match = re.search(r'<base href="([^"]+)"', page.read_text(encoding="utf-8")) if page.suffix == ".html" else None
    return page.parent / match.group(1) if match else page.parent


def glance_block(report: Path) -> str:
    """The text of the run-at-a-glance block of a report.md."""
    text = report.read_text(encoding="utf-8")
    return text[text.index('<a id="at-a-glance"></a>'):text.index('<a id="environment"></a>')]


def glance_items(report: Path) -> dict[str, str]:
    """Phase name -> its item in the at-a-glance block."""
    items = re.split(r"\n- ", glance_block(report))[1:]
    return {re.search(r"\]\(#(\w+)\)", item).group(1): item for item in items}


def edition_pages(run_dir: Path) -> list[Path]:
    return [run_dir / page for page in PAGES] + [run_dir / "zh" / page for page in PAGES]


# ---- the end-to-end run ----------------------------------------------------------------------------------------
def test_both_editions_are_written_and_link_each_other(workflow_run):
    run_dir = run_dir_of(workflow_run)
    for page in edition_pages(run_dir) + [workflow_run / "reports/index.html", workflow_run / "reports/zh/index.html"]:
        assert page.stat().st_size > 0, page
    english, chinese = (run_dir / "report.md").read_text(), (run_dir / "zh/report.md").read_text()
    assert "](zh/report.md)" in english and "](../report.md)" in chinese
    assert "](../PROGRESS.md)" in (run_dir / "zh/PROGRESS.md").read_text()
    for term in ("首 token 延迟", "预填充", "吞吐", "KV Cache", "批处理", "屋顶线", "本次运行一览", "回到顶部"):
        assert term in chinese, term
    assert 'lang="zh-CN"' in (run_dir / "zh/index.html").read_text()
    for name in phases.PHASES:  # Chinese records where the phase has a record
        if (run_dir / "records" / f"{name}.txt").exists():
            assert (run_dir / "zh/records" / f"{name}.txt").stat().st_size > 0


def test_editions_show_the_same_figures(workflow_run):
    run_dir = run_dir_of(workflow_run)
    figures = {lang: sorted(re.findall(r"figures/([\w.-]+\.png)", (run_dir / folder / "report.md").read_text()))
               for lang, folder in (("en", ""), ("zh", "zh"))}
    assert figures["en"] and figures["en"] == figures["zh"]
    assert "../figures/" in (run_dir / "zh/report.md").read_text()


@pytest.mark.parametrize("edition", ["", "zh"])
def test_every_local_link_and_image_resolves(workflow_run, edition):
    run_dir = run_dir_of(workflow_run)
    pages = [run_dir / edition / page for page in PAGES]
    pages.append(workflow_run / "reports" / edition / "index.html")
    for page in pages:
        links = local_links(page)
        assert links, f"{page} links nothing"
        for link in links:
            assert (base_of(page) / link.split("#")[0]).exists(), f"{page} links missing {link}"


@pytest.mark.parametrize("lang, folder", [("en", ""), ("zh", "zh")])
def test_at_a_glance_has_one_answer_per_measured_phase(workflow_run, lang, folder):
    run_dir = run_dir_of(workflow_run)
    items = glance_items(run_dir / folder / "report.md")
    assert list(items) == phases.PHASES
    for name, item in items.items():
        findings = json.loads((run_dir / "data" / name / "findings.json").read_text())
        answer = item.split("<br>")[1]
        assert re.search(r"\d", answer) and translate(lang, "measured: see its section") not in answer, name
        assert bool(re.search(r"[\u4e00-\u9fff]", answer)) == (lang == "zh"), (name, answer)  # in the edition's language
        for headline in findings["headlines"][:render.HEADLINES_SHOWN]:  # the key numbers, medians of this run's samples
            median = statistics.median(headline["values"])
            shown = f"{translate(lang, headline['label'])} **{figure(median, headline['unit'])}**"
            assert f"{shown} ({translate(lang, 'median')}, n={len(headline['values'])})" in item, (name, shown)


def test_navigation(workflow_run):
    run_dir = run_dir_of(workflow_run)
    for folder in ("", "zh"):
        report = (run_dir / folder / "report.md").read_text()
        html = (run_dir / folder / "index.html").read_text()
        assert '<nav class="toc"' in html and "position: sticky" in html
        for name in phases.PHASES:
            assert f'<a id="{name}"></a>' in report and f"](#{name})" in report
        assert report.count('<a href="#top">') == len(phases.PHASES)
        assert '<a id="d1_request_waterfall"></a>' in report
        assert "<details>" in html and "<summary>" in html
        assert "<table>" in html.split("<details>")[2] or "<ul>" in html.split("<details>")[2]


def test_no_tracker_numbers_in_user_facing_text(workflow_run):
    run_dir = run_dir_of(workflow_run)
    repo = Path(__file__).resolve().parent.parent
    texts = [page.read_text() for page in edition_pages(run_dir)]
    texts += [path.read_text() for path in (repo / "templates").glob("*")]
    texts += [path.read_text() for path in (repo / "profiling/phases").glob("*/*.j2")]
    texts.append((repo / "config/config.yaml").read_text())
    for text in texts:
        assert not re.search(r"\b(issue|ticket)s? ?#?\d", text, re.IGNORECASE)


def test_a_language_change_rerenders_the_report(workflow_run):
    result = snakemake(workflow_run, "--dry-run", "--config", "language=en")
    assert result.returncode == 0, result.stderr[-3000:]
    report = next(block for block in result.stdout.split("\n\n") if re.search(r"^(local)?rule report:", block, re.M))
    assert "Params have changed" in report, report


# ---- a run with a phase's data missing, and one language ---------------------------------------------------------
@pytest.fixture(scope="module")
def run_sections(workflow_run):
    """The sections of the tiny run, views and charts made once (the tests below render pages from them)."""
    return render.sections(run_dir_of(workflow_run))


@pytest.mark.parametrize("missing", phases.PHASES)
def test_the_report_renders_with_each_phase_missing_in_turn(workflow_run, run_sections, missing, tmp_path):
    run_dir = run_dir_of(workflow_run)
    empty = tmp_path / "empty"  # a run directory without this phase's data: its view has nothing to show
    assert phases.module(missing, "view").view(empty, empty / "figures") is None
    sections = [{**s, "view": None, "findings": None} if s["name"] == missing else s for s in run_sections]
    context = {"env": json.loads((run_dir / "env.json").read_text()), "sections": sections, "generated_at": "now"}
    for lang, folder in (("en", ""), ("zh", "zh")):
        pages = render.report_pages(run_dir, context, lang, ("en", "zh"))
        report = run_dir / folder / "report.md"
        page = tmp_path / lang / "report.md"
        page.parent.mkdir()
        page.write_text(pages[report], encoding="utf-8")
        items = glance_items(page)
        assert NOT_MEASURED[lang] in items[missing]
        assert all(NOT_MEASURED[lang] not in item for name, item in items.items() if name != missing)
        assert f"data/{missing}/findings.json" in pages[report]  # the section names the file it waits for
        assert run_dir / folder / "records" / f"{missing}.txt" not in pages
        for link in local_links(page):
            assert (report.parent / link.split("#")[0]).exists(), f"{lang}: links missing {link}"


def test_one_language_writes_one_edition_and_removes_the_other(workflow_run, run_sections, tmp_path, monkeypatch):
    monkeypatch.setattr(render, "sections", lambda run_dir: run_sections)  # the views and charts made once
    copy = tmp_path / "run"
    shutil.copytree(run_dir_of(workflow_run), copy, ignore=shutil.ignore_patterns("zh", "*.md", "*.html"))
    render_all(copy, ("zh",))
    assert (copy / "zh/report.md").exists() and not (copy / "report.md").exists()
    assert "English edition" not in (copy / "zh/report.md").read_text()
    render_all(copy, ("en",))  # language: en after a Chinese edition: no stale zh/ left behind
    assert (copy / "report.md").exists() and not (copy / "zh").exists()
    assert "中文版" not in (copy / "report.md").read_text()


# ---- the helpers -----------------------------------------------------------------------------------------------
def test_localized_name():
    assert localized_name("d1_request/section.md.j2", "zh") == "d1_request/section.zh.md.j2"
    assert localized_name("report.md.j2", "zh") == "report.zh.md.j2"
    assert localized_name("report.md.j2", "en") == "report.md.j2"


def test_rebase_points_shared_files_up_and_keeps_the_edition_own():
    text = "![a](figures/x.png) [d](data/p/f.csv) [r](records/p.txt) [w](PROGRESS.md) [s](#top) [e](../report.md)"
    assert rebase(text, "../") == ("![a](../figures/x.png) [d](../data/p/f.csv) [r](records/p.txt) "
                                   "[w](PROGRESS.md) [s](#top) [e](../report.md)")
    assert rebase(text, "") == text


def test_figure_anchors():
    assert figure_anchors("![D1](../figures/d1_request_waterfall.png)") == \
        '<a id="d1_request_waterfall"></a>![D1](../figures/d1_request_waterfall.png)'


def test_d2_verdict_matrix_counts_every_point(workflow_run):
    findings = json.loads((run_dir_of(workflow_run) / "data/d2_bottlenecks/findings.json").read_text())
    matrix = findings["verdict_matrix"]
    assert matrix["batch_sizes"] == sorted(matrix["batch_sizes"]) and matrix["rows"]
    total = sum(count for row in matrix["rows"] for cell in row["cells"] for count in cell.values())
    assert total == len(findings["points"])
    assert {row["stage"] for row in matrix["rows"]} == {point["stage"] for point in findings["points"]}
