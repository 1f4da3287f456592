"""D3 KV cache end to end: the real Snakemake run on the smoke config (tiny model) writes the KV-cache contract
files, and the report renders the section with links that resolve and the progress wall ticks its items."""
import json
import re

import pandas as pd

from profiling.config import load_config
from profiling.phases.d3_kvcache.variants import latency_variants
from tests.conftest import run_dir_of, SMOKE

SECTION_TITLE = "### D3 · KV cache"


def smoke_kvcache_config() -> dict:
    return load_config(SMOKE)["d3_kvcache"]


def kvcache_section(report_md: str) -> str:
    """The report's D3 KV-cache section: from its title to the next phase anchor."""
    start = report_md.index(SECTION_TITLE)
    end = report_md.find('<a id="d4">', start)
    return report_md[start:end if end > 0 else None]


def test_kvcache_contract_files_are_written(workflow_run):
    reports = run_dir_of(workflow_run)
    data = reports / "data" / "d3_kvcache"
    for name in ("measurements.csv", "meta.json", "summary.csv", "table.csv", "memory.csv", "findings.json"):
        assert (data / name).stat().st_size > 0, name
    for variant in latency_variants(smoke_kvcache_config()):
        assert (reports / "traces" / "d3_kvcache" / f"{variant}.json.gz").stat().st_size > 0, variant
    for name in ("d3_kvcache_token_latency", "d3_kvcache_speedup", "d3_kvcache_memory"):
        for suffix in ("png", "svg"):
            assert (reports / "figures" / f"{name}.{suffix}").stat().st_size > 0
    assert (reports / "logs" / "d3_kvcache.log").exists()
    memory = pd.read_csv(data / "memory.csv")
    assert memory["analytic_equals_measured"].all()
    meta = json.loads((data / "meta.json").read_text())
    assert meta["config"]["model"] == "tiny-random" and meta["run_tag"] == reports.name


def test_kvcache_section_renders_with_resolving_links(workflow_run):
    reports = run_dir_of(workflow_run)
    section = kvcache_section((reports / "report.md").read_text())
    findings = json.loads((reports / "data/d3_kvcache/findings.json").read_text())
    assert "Not yet measured" not in section
    assert "| prompt | cache | new tokens |" in section and "| prompt | batch | positions held |" in section
    assert "When the cache saves you" in section and "When it eats memory" in section
    assert f"{findings['cache_exceeds_weights_tokens']:,}" in section  # the crossover is quoted from the numbers
    links = re.findall(r"\]\(([^)\s]+)\)", section)
    for expected in ("figures/d3_kvcache_token_latency.png", "figures/d3_kvcache_memory.png",
                     "records/d3_kvcache.txt", "data/d3_kvcache/measurements.csv"):
        assert expected in links
    assert sum(link.startswith("traces/d3_kvcache/") for link in links) == len(
        latency_variants(smoke_kvcache_config()))
    for link in links:
        assert (reports / link).exists(), link
    html = (reports / "index.html").read_text()
    assert 'src="figures/d3_kvcache_memory.png"' in html


def test_kvcache_record_and_progress_wall(workflow_run):
    reports = run_dir_of(workflow_run)
    record = (reports / "records/d3_kvcache.txt").read_text()
    assert record.startswith("[d3_kvcache") and "per_token_latency : cache on {" in record
    findings = json.loads((reports / "data/d3_kvcache/findings.json").read_text())
    line = next(l for l in (reports / "PROGRESS.md").read_text().splitlines() if "past_key_values" in l)
    # the wall quotes this run's numbers (formatted here, not by the answer macro)
    speedup = f"the cache speeds prompt {findings['speedup_target_prompt']} up {findings['speedup_at_target_prompt']:.1f}×"
    crossover = f"exceeds the weights at batch × context ≥ {findings['cache_exceeds_weights_tokens']:,} tokens"
    assert "☑" in line and speedup in line and crossover in line
