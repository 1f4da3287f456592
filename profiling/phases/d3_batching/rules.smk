# D3 batching (see experiment.py beside this file): static batch sweep, engine vs generate, dynamic batcher under
# arrival processes, telemetry.

D3_BATCHING_TRACES = expand(f"{RUN}/traces/d3_batching/static_b{{batch_size}}.json.gz",
                            batch_size=CONFIG["d3_batching"]["batch_sizes"], allow_missing=True)


rule d3_batching:
    input:
        model_files,
    output:
        measurements=f"{RUN}/data/d3_batching/measurements.csv",
        meta=f"{RUN}/data/d3_batching/meta.json",
        timeline=f"{RUN}/data/d3_batching/timeline.csv",
        telemetry=f"{RUN}/data/d3_batching/telemetry.csv",
        traces=D3_BATCHING_TRACES,
    params:
        settings=settings("d3_batching"),
    threads: workflow.cores
    resources:
        **MEASURING_RESOURCES,
    log:
        f"{RUN}/logs/d3_batching.log",
    shell:
        "{PROFILING} d3_batching --settings {params.settings:q} --measurements {output.measurements}"
        " --meta {output.meta} --timeline {output.timeline} --telemetry {output.telemetry}"
        " --traces {output.traces} 2>&1 | tee {log}"


rule d3_batching_analysis:
    input:
        measurements=rules.d3_batching.output.measurements,
        timeline=rules.d3_batching.output.timeline,
        telemetry=rules.d3_batching.output.telemetry,
    output:
        summary=f"{RUN}/data/d3_batching/summary.csv",
        batch_table=f"{RUN}/data/d3_batching/batch_table.csv",
        dynamic_table=f"{RUN}/data/d3_batching/dynamic_table.csv",
        findings=f"{RUN}/data/d3_batching/findings.json",
    params:
        settings=settings("d3_batching"),
    log:
        f"{RUN}/logs/d3_batching_analysis.log",
    shell:
        "{PROFILING} d3_batching_analysis --settings {params.settings:q} --measurements {input.measurements}"
        " --timeline {input.timeline} --telemetry {input.telemetry} --summary {output.summary}"
        " --batch-table {output.batch_table} --dynamic-table {output.dynamic_table}"
        " --findings {output.findings} 2>&1 | tee {log}"


REPORT_INPUTS.extend([*rules.d3_batching_analysis.output, rules.d3_batching.output.meta,
                      rules.d3_batching.output.timeline, rules.d3_batching.output.telemetry,
                      rules.d3_batching.output.measurements, *D3_BATCHING_TRACES])
REPORT_RECORDS.append(f"{RUN}/records/d3_batching.txt")
