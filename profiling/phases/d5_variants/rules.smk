# D5 variants (see experiment.py beside this file): optimisation variants on the D1 request against the float32
# eager reference, one trace each; then the variant table, the timelines side by side, where the best variant's decode
# step goes and the ranked directions.

D5_VARIANTS_TRACES = expand(f"{RUN}/traces/d5_variants/{{variant}}.json.gz",
                            variant=CONFIG["d5_variants"]["variants"], allow_missing=True)

# The measured roofs (the phase whose metadata names a ROOF file), to put achieved bandwidth against.
D5_ROOFS = [phase_file(phase, registry.load(phase).ROOF) for phase in registry.PHASES
            if getattr(registry.load(phase), "ROOF", None)]


rule d5_variants:
    input:
        model_files,
    output:
        measurements=f"{RUN}/data/d5_variants/measurements.csv",
        meta=f"{RUN}/data/d5_variants/meta.json",
        traces=D5_VARIANTS_TRACES,
    params:
        settings=settings("d5_variants"),
    threads: workflow.cores
    resources:
        **{**MEASURING_RESOURCES, "mem_mb": 8000},  # every variant's model at once, and vLLM's offline engine
    log:
        f"{RUN}/logs/d5_variants.log",
    shell:
        "{PROFILING} d5_variants --settings {params.settings:q} --measurements {output.measurements}"
        " --meta {output.meta} --traces {output.traces} 2>&1 | tee {log}"


rule d5_variants_analysis:
    input:
        measurements=rules.d5_variants.output.measurements,
        meta=rules.d5_variants.output.meta,
        traces=D5_VARIANTS_TRACES,
        roofs=D5_ROOFS,
        model=model_files,  # the model's config file: its shapes name the linear layers of the step split
    output:
        summary=f"{RUN}/data/d5_variants/summary.csv",
        variants=f"{RUN}/data/d5_variants/variants.csv",
        findings=f"{RUN}/data/d5_variants/findings.json",
        step_split=f"{RUN}/data/d5_variants/step_split.csv",
    params:
        settings=settings("d5_variants"),
        ceilings=lambda wildcards, input: f"--ceilings {input.roofs[0]}" if input.roofs else "",
    log:
        f"{RUN}/logs/d5_variants_analysis.log",
    shell:
        "{PROFILING} d5_variants_analysis --settings {params.settings:q} --measurements {input.measurements}"
        " --meta {input.meta} {params.ceilings} --traces {input.traces} --summary {output.summary}"
        " --variants-table {output.variants} --findings {output.findings} --step-split {output.step_split}"
        " 2>&1 | tee {log}"


REPORT_INPUTS.extend([*rules.d5_variants_analysis.output, rules.d5_variants.output.meta,
                      rules.d5_variants.output.measurements, *D5_VARIANTS_TRACES])
REPORT_RECORDS.append(f"{RUN}/records/d5_variants.txt")
