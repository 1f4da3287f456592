# D2 bottlenecks rules (see ../../profiling/experiments/d2_bottlenecks.py): measured ceilings, a batch sweep
# with short traced runs, thread scaling; then the roofline, verdicts and time breakdown.

D2_TRACES = expand("reports/traces/d2_bottlenecks/decode_b{batch}.json.gz", batch=CONFIG["d2"]["batch_sizes"])

# The D3 timing files D2 turns into roofline points as well, when the workflow has a rule that writes them.
D3_MEASUREMENTS = ["reports/data/d3_batching/measurements.csv", "reports/data/d3_kvcache/measurements.csv"]


def d3_measurements(wildcards):
    """The D3 measurements.csv files that some rule of this workflow produces (so D2 runs before and after the
    D3 rules exist); each becomes an input, so D2's analysis re-runs when D3's data changes."""
    produced = {str(path) for rule in workflow.rules for path in rule.output}
    return [path for path in D3_MEASUREMENTS if path in produced]


rule d2_bottlenecks:
    input:
        model_files,
    output:
        measurements="reports/data/d2_bottlenecks/measurements.csv",
        meta="reports/data/d2_bottlenecks/meta.json",
        ceilings="reports/data/d2_bottlenecks/ceilings.json",
        traces=D2_TRACES,
    params:
        settings=lambda wildcards: settings("d2"),
    threads: workflow.cores
    resources:
        **measuring_resources(),
    log:
        "reports/logs/d2_bottlenecks.log",
    shell:
        "{PROFILING} d2 --settings {params.settings:q} --measurements {output.measurements}"
        " --meta {output.meta} --ceilings {output.ceilings} --traces {output.traces} 2>&1 | tee {log}"


rule d2_analysis:
    input:
        measurements=rules.d2_bottlenecks.output.measurements,
        meta=rules.d2_bottlenecks.output.meta,
        ceilings=rules.d2_bottlenecks.output.ceilings,
        traces=D2_TRACES,
        d1="reports/data/d1_request/measurements.csv",
        d3=d3_measurements,
    output:
        summary="reports/data/d2_bottlenecks/summary.csv",
        roofline="reports/data/d2_bottlenecks/roofline.csv",
        breakdown="reports/data/d2_bottlenecks/breakdown.csv",
        findings="reports/data/d2_bottlenecks/findings.json",
    params:
        settings=lambda wildcards: settings("d2"),
    log:
        "reports/logs/d2_analysis.log",
    shell:
        "{PROFILING} analyze-d2 --settings {params.settings:q} --measurements {input.measurements}"
        " --meta {input.meta} --ceilings {input.ceilings} --traces {input.traces} --d1 {input.d1}"
        " --d3 {input.d3} --summary {output.summary} --roofline {output.roofline}"
        " --breakdown {output.breakdown} --findings {output.findings} 2>&1 | tee {log}"


REPORT_INPUTS.extend([*rules.d2_analysis.output, rules.d2_bottlenecks.output.meta,
                      rules.d2_bottlenecks.output.ceilings, *D2_TRACES])
REPORT_RECORDS.append("reports/records/d2_bottlenecks.txt")
