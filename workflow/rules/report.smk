# The report: Markdown + HTML, the progress wall, the observation records and the figures.


rule report:
    input:
        env=rules.env.output,
        d1=rules.d1_analysis.output,
        d1_meta=rules.d1_request.output.meta,
        templates=TEMPLATES,
    output:
        md="reports/report.md",
        html="reports/index.html",
        progress_md="reports/PROGRESS.md",
        progress_html="reports/progress.html",
        d1_record="reports/records/d1_request.txt",
    log:
        "reports/logs/report.log",
    shell:
        "{PROFILING} report --reports reports 2>&1 | tee {log}"
