# D1 request anatomy: one request, timed stage by stage, plus a short traced run.


rule d1_request:
    input:
        model_files,
    output:
        measurements="reports/data/d1_request/measurements.csv",
        meta="reports/data/d1_request/meta.json",
        trace="reports/traces/d1_request/request.json.gz",
    params:
        settings=lambda wildcards: settings("d1"),
    threads: workflow.cores
    resources:
        **measuring_resources(),
    log:
        "reports/logs/d1_request.log",
    shell:
        "{PROFILING} d1 --settings {params.settings:q} --measurements {output.measurements}"
        " --meta {output.meta} --trace {output.trace} 2>&1 | tee {log}"


rule d1_analysis:
    input:
        measurements=rules.d1_request.output.measurements,
        trace=rules.d1_request.output.trace,
    output:
        summary="reports/data/d1_request/summary.csv",
        operators="reports/data/d1_request/operators.csv",
        findings="reports/data/d1_request/findings.json",
    params:
        settings=lambda wildcards: settings("d1"),
    log:
        "reports/logs/d1_analysis.log",
    shell:
        "{PROFILING} analyze-d1 --settings {params.settings:q} --measurements {input.measurements}"
        " --trace {input.trace} --summary {output.summary} --operators {output.operators}"
        " --findings {output.findings} 2>&1 | tee {log}"


REPORT_INPUTS.extend([*rules.d1_analysis.output, rules.d1_request.output.meta, rules.d1_request.output.trace])
REPORT_RECORDS.append("reports/records/d1_request.txt")
