# llm-infer-baseline: `snakemake --cores 1` runs every experiment of every run, analyses it and renders reports/.
# Config: config/config.yaml (checked against config/schema.yaml); override with --config key=value.
# Each run (model x device x dtype x host) writes reports/runs/<run tag>/; reports/index.html shows the latest.

configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/env.smk"


# Each phase's rules live in its folder (profiling/phases/<phase>/rules.smk), in the registry's order.
for phase in registry.PHASES:

    include: f"profiling/phases/{phase}/rules.smk"


include: "workflow/rules/report.smk"


rule all:
    input:
        expand(rules.report.output.html, run=RUNS),
        rules.runs_index.output,
