# The hardware and software record shown at the top of each run's report.


rule env:
    output:
        f"{RUN}/env.json",
    params:
        settings=settings(),
    log:
        f"{RUN}/logs/env.log",
    shell:
        "{PROFILING} env --settings {params.settings:q} --out {output} 2>&1 | tee {log}"
