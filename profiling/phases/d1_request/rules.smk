# D1 request anatomy: one request, timed stage by stage, plus a short traced run.


rule d1_request:
    input:
        model_files,
    output:
        measurements=f"{RUN}/data/d1_request/measurements.csv",
        meta=f"{RUN}/data/d1_request/meta.json",
        trace=f"{RUN}/traces/d1_request/request.json.gz",
    params:
        settings=settings("d1_request"),
    threads: workflow.cores
    resources:
        **MEASURING_RESOURCES,
    log:
        f"{RUN}/logs/d1_request.log",
    shell:
        "{PROFILING} d1_request --settings {params.settings:q} --measurements {output.measurements}"
        " --meta {output.meta} --trace {output.trace} 2>&1 | tee {log}"


rule d1_request_analysis:
    input:
        measurements=rules.d1_request.output.measurements,
        trace=rules.d1_request.output.trace,
    output:
        summary=f"{RUN}/data/d1_request/summary.csv",
        operators=f"{RUN}/data/d1_request/operators.csv",
        findings=f"{RUN}/data/d1_request/findings.json",
    params:
        settings=settings("d1_request"),
    log:
        f"{RUN}/logs/d1_request_analysis.log",
    shell:
        "{PROFILING} d1_request_analysis --settings {params.settings:q} --measurements {input.measurements}"
        " --trace {input.trace} --summary {output.summary} --operators {output.operators}"
        " --findings {output.findings} 2>&1 | tee {log}"


REPORT_INPUTS.extend([*rules.d1_request_analysis.output, rules.d1_request.output.meta,
                      rules.d1_request.output.measurements, rules.d1_request.output.trace])
REPORT_RECORDS.append(f"{RUN}/records/d1_request.txt")
