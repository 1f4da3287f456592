# The reports: each run's Markdown + HTML report, progress wall, observation records and figures, in the editions
# the config's `language` asks for (English in the run directory, Chinese under its zh/ folder; figures and data
# shared); then the page that links every run under reports/runs/ and compares them side by side.

LANGUAGE = CONFIG["language"]
EDITION_FOLDERS = {"en": [""], "zh": ["zh/"], "both": ["", "zh/"]}[LANGUAGE]


def edition_records():
    """The observation records of every edition (the phases' rule files list the English ones)."""
    prefix = f"{RUN}/"
    return [record.replace(prefix, f"{prefix}{folder}", 1) for folder in EDITION_FOLDERS for record in REPORT_RECORDS]


rule report:
    input:
        env=rules.env.output,
        analyses=REPORT_INPUTS,
        templates=TEMPLATES,  # the frame, its message catalogues and every phase's templates
    output:
        # the first edition's pages by name (rule all asks for `html`), then the other edition's and the records
        md=f"{RUN}/{EDITION_FOLDERS[0]}report.md",
        html=f"{RUN}/{EDITION_FOLDERS[0]}index.html",
        progress_md=f"{RUN}/{EDITION_FOLDERS[0]}PROGRESS.md",
        progress_html=f"{RUN}/{EDITION_FOLDERS[0]}progress.html",
        other_edition=[f"{RUN}/{folder}{page}" for folder in EDITION_FOLDERS[1:]
                       for page in ("report.md", "index.html", "PROGRESS.md", "progress.html")],
        records=edition_records(),
    params:
        language=LANGUAGE,  # a change of language re-renders
    log:
        f"{RUN}/logs/report.log",
    shell:
        "{PROFILING} report --run-dir reports/runs/{wildcards.run} --language {params.language} 2>&1 | tee {log}"


rule runs_index:
    input:
        expand(rules.report.output.html, run=RUNS),
    output:
        index="reports/index.html",
        editions=["reports/zh/index.html"] if "zh/" in EDITION_FOLDERS else [],
        compare_md="reports/compare.md",
        compare_html="reports/compare.html",
    params:
        # The runs on disk (this config's and any copied in): a new one re-renders the index and the comparison.
        runs=lambda wildcards: sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob("reports/runs/*/env.json")),
        latest=lambda wildcards: list(RUNS)[-1],
        language=LANGUAGE,
    log:
        "reports/logs/runs_index.log",
    shell:
        "{PROFILING} compare --reports reports --latest {params.latest} --language {params.language} 2>&1 | tee {log}"
