# The reports: each run's Markdown + HTML report, progress wall, observation records and figures; then the page
# that links every run under reports/runs/ and compares them side by side.


rule report:
    input:
        env=rules.env.output,
        analyses=REPORT_INPUTS,
        templates=TEMPLATES,
    output:
        md=f"{RUN}/report.md",
        html=f"{RUN}/index.html",
        progress_md=f"{RUN}/PROGRESS.md",
        progress_html=f"{RUN}/progress.html",
        records=REPORT_RECORDS,
    log:
        f"{RUN}/logs/report.log",
    shell:
        "{PROFILING} report --run-dir reports/runs/{wildcards.run} 2>&1 | tee {log}"


rule runs_index:
    input:
        expand(rules.report.output.html, run=RUNS),
    output:
        index="reports/index.html",
        compare_md="reports/compare.md",
        compare_html="reports/compare.html",
    params:
        # The runs on disk (this config's and any copied in): a new one re-renders the index and the comparison.
        runs=lambda wildcards: sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob("reports/runs/*/env.json")),
        latest=lambda wildcards: list(RUNS)[-1],
    log:
        "reports/logs/runs_index.log",
    shell:
        "{PROFILING} compare --reports reports --latest {params.latest} 2>&1 | tee {log}"
