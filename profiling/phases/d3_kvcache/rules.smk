# D3 KV cache (see experiment.py beside this file): prompt length x cache on/off, per-token latency by position,
# and the cache's memory (measured tensor bytes, the formula, projections).

from profiling.phases.d3_kvcache.variants import latency_variants as d3_kvcache_latency_variants

D3_KVCACHE_TRACES = expand(f"{RUN}/traces/d3_kvcache/{{variant}}.json.gz",
                           variant=d3_kvcache_latency_variants(CONFIG["d3_kvcache"]), allow_missing=True)


rule d3_kvcache:
    input:
        model_files,
    output:
        measurements=f"{RUN}/data/d3_kvcache/measurements.csv",
        meta=f"{RUN}/data/d3_kvcache/meta.json",
        traces=D3_KVCACHE_TRACES,  # one per prompt length x cache on/off
    params:
        settings=settings("d3_kvcache"),
    threads: workflow.cores
    resources:
        **MEASURING_RESOURCES,
    log:
        f"{RUN}/logs/d3_kvcache.log",
    shell:
        "{PROFILING} d3_kvcache --settings {params.settings:q} --measurements {output.measurements}"
        " --meta {output.meta} --traces {output.traces} 2>&1 | tee {log}"


rule d3_kvcache_analysis:
    input:
        measurements=rules.d3_kvcache.output.measurements,
        meta=rules.d3_kvcache.output.meta,
    output:
        summary=f"{RUN}/data/d3_kvcache/summary.csv",
        table=f"{RUN}/data/d3_kvcache/table.csv",
        memory=f"{RUN}/data/d3_kvcache/memory.csv",
        findings=f"{RUN}/data/d3_kvcache/findings.json",
    params:
        settings=settings("d3_kvcache"),
    log:
        f"{RUN}/logs/d3_kvcache_analysis.log",
    shell:
        "{PROFILING} d3_kvcache_analysis --settings {params.settings:q} --measurements {input.measurements}"
        " --meta {input.meta} --summary {output.summary} --table {output.table} --memory {output.memory}"
        " --findings {output.findings} 2>&1 | tee {log}"


REPORT_INPUTS.extend([*rules.d3_kvcache_analysis.output, rules.d3_kvcache.output.meta,
                      rules.d3_kvcache.output.measurements, *D3_KVCACHE_TRACES])
REPORT_RECORDS.append(f"{RUN}/records/d3_kvcache.txt")
