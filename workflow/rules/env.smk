# The hardware and software record shown at the top of the report.


rule env:
    output:
        "reports/env.json",
    params:
        settings=lambda wildcards: settings(),
    log:
        "reports/logs/env.log",
    shell:
        "{PROFILING} env --settings {params.settings:q} --out {output} 2>&1 | tee {log}"
