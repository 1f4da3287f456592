# D2 bottlenecks (see experiment.py beside this file): measured ceilings, a batch sweep with short traced runs,
# thread scaling, the linear-layer shape curve; then the roofline, verdicts, time breakdown and the curve's table.

D2_TRACES = expand(f"{RUN}/traces/d2_bottlenecks/decode_b{{batch}}.json.gz",
                   batch=CONFIG["d2_bottlenecks"]["batch_sizes"], allow_missing=True)

# The other phases whose timed forwards become roofline points too (their metadata says FEEDS_ROOFLINE), when the
# registry lists them; each becomes an input, so the analysis re-runs when their data changes.
ROOFLINE_SOURCES = [phase_file(phase, "measurements.csv") for phase in registry.PHASES
                    if getattr(registry.load(phase), "FEEDS_ROOFLINE", False)]


rule d2_bottlenecks:
    input:
        model_files,
    output:
        measurements=f"{RUN}/data/d2_bottlenecks/measurements.csv",
        meta=f"{RUN}/data/d2_bottlenecks/meta.json",
        ceilings=f"{RUN}/data/d2_bottlenecks/ceilings.json",
        traces=D2_TRACES,
    params:
        settings=settings("d2_bottlenecks"),
    threads: workflow.cores
    resources:
        **MEASURING_RESOURCES,
    log:
        f"{RUN}/logs/d2_bottlenecks.log",
    shell:
        "{PROFILING} d2_bottlenecks --settings {params.settings:q} --measurements {output.measurements}"
        " --meta {output.meta} --ceilings {output.ceilings} --traces {output.traces} 2>&1 | tee {log}"


rule d2_bottlenecks_analysis:
    input:
        measurements=rules.d2_bottlenecks.output.measurements,
        meta=rules.d2_bottlenecks.output.meta,
        ceilings=rules.d2_bottlenecks.output.ceilings,
        traces=D2_TRACES,
        sources=ROOFLINE_SOURCES,
    output:
        summary=f"{RUN}/data/d2_bottlenecks/summary.csv",
        roofline=f"{RUN}/data/d2_bottlenecks/roofline.csv",
        breakdown=f"{RUN}/data/d2_bottlenecks/breakdown.csv",
        findings=f"{RUN}/data/d2_bottlenecks/findings.json",
        linear_shapes=f"{RUN}/data/d2_bottlenecks/linear_shapes.csv",
    params:
        settings=settings("d2_bottlenecks"),
    log:
        f"{RUN}/logs/d2_bottlenecks_analysis.log",
    shell:
        "{PROFILING} d2_bottlenecks_analysis --settings {params.settings:q} --measurements {input.measurements}"
        " --meta {input.meta} --ceilings {input.ceilings} --traces {input.traces} --sources {input.sources}"
        " --summary {output.summary} --roofline {output.roofline}"
        " --breakdown {output.breakdown} --findings {output.findings}"
        " --linear-shapes {output.linear_shapes} 2>&1 | tee {log}"


REPORT_INPUTS.extend([*rules.d2_bottlenecks_analysis.output, rules.d2_bottlenecks.output.meta,
                      rules.d2_bottlenecks.output.measurements, rules.d2_bottlenecks.output.ceilings, *D2_TRACES])
REPORT_RECORDS.append(f"{RUN}/records/d2_bottlenecks.txt")
