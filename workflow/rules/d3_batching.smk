# D3 batching: static batch sweep, engine vs model.generate, dynamic batcher under arrival processes, telemetry
# (see ../../profiling/experiments/d3_batching.py).

D3_BATCHING_TRACES = expand("reports/traces/d3_batching/static_b{batch_size}.json.gz",
                            batch_size=CONFIG["d3_batching"]["batch_sizes"])


rule d3_batching:
    input:
        model_files,
    output:
        measurements="reports/data/d3_batching/measurements.csv",
        meta="reports/data/d3_batching/meta.json",
        timeline="reports/data/d3_batching/timeline.csv",
        telemetry="reports/data/d3_batching/telemetry.csv",
        traces=D3_BATCHING_TRACES,
    params:
        settings=lambda wildcards: settings("d3_batching"),
    threads: workflow.cores
    resources:
        **measuring_resources(),
    log:
        "reports/logs/d3_batching.log",
    shell:
        "{PROFILING} d3-batching --settings {params.settings:q} --measurements {output.measurements}"
        " --meta {output.meta} --timeline {output.timeline} --telemetry {output.telemetry}"
        " --traces {output.traces} 2>&1 | tee {log}"


rule d3_batching_analysis:
    input:
        measurements=rules.d3_batching.output.measurements,
        timeline=rules.d3_batching.output.timeline,
        telemetry=rules.d3_batching.output.telemetry,
    output:
        summary="reports/data/d3_batching/summary.csv",
        batch_table="reports/data/d3_batching/batch_table.csv",
        dynamic_table="reports/data/d3_batching/dynamic_table.csv",
        findings="reports/data/d3_batching/findings.json",
    params:
        settings=lambda wildcards: settings("d3_batching"),
    log:
        "reports/logs/d3_batching_analysis.log",
    shell:
        "{PROFILING} analyze-d3-batching --settings {params.settings:q} --measurements {input.measurements}"
        " --timeline {input.timeline} --telemetry {input.telemetry} --summary {output.summary}"
        " --batch-table {output.batch_table} --dynamic-table {output.dynamic_table}"
        " --findings {output.findings} 2>&1 | tee {log}"


REPORT_INPUTS.extend([*rules.d3_batching_analysis.output, rules.d3_batching.output.meta,
                      rules.d3_batching.output.timeline, rules.d3_batching.output.telemetry,
                      rules.d3_batching.output.measurements, *rules.d3_batching.output.traces])
REPORT_RECORDS.append("reports/records/d3_batching.txt")
