# llm-infer-baseline: `snakemake --cores 1` runs every experiment, analyses it and renders reports/.
# Config: config/config.yaml (checked against config/schema.yaml); override with --config key=value.

configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/env.smk"
include: "workflow/rules/d1_request.smk"
include: "workflow/rules/d3_batching.smk"
include: "workflow/rules/d3_kvcache.smk"
include: "workflow/rules/d2_bottlenecks.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.report.output,
