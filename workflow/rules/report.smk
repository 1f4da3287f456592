# The report: Markdown + HTML, the progress wall, the observation records and the figures.
# Its inputs are what each phase's rule file registered in REPORT_INPUTS (workflow/rules/common.smk).


rule report:
    input:
        env=rules.env.output,
        analyses=REPORT_INPUTS,
        templates=TEMPLATES,
    output:
        md="reports/report.md",
        html="reports/index.html",
        progress_md="reports/PROGRESS.md",
        progress_html="reports/progress.html",
        records=REPORT_RECORDS,
    log:
        "reports/logs/report.log",
    shell:
        "{PROFILING} report --reports reports 2>&1 | tee {log}"
