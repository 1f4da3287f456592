# D3 KV cache rules (see ../../profiling/experiments/d3_kvcache.py): prompt length x cache on/off, per-token
# latency by position, and the cache's memory (measured tensor bytes, the formula, projections).

from profiling.experiments.d3_kvcache import trace_paths as d3_kvcache_trace_paths


rule d3_kvcache:
    input:
        model_files,
    output:
        measurements="reports/data/d3_kvcache/measurements.csv",
        meta="reports/data/d3_kvcache/meta.json",
        traces=d3_kvcache_trace_paths(CONFIG["d3_kvcache"]),  # one per prompt length x cache on/off
    params:
        settings=lambda wildcards: settings("d3_kvcache"),
    threads: workflow.cores
    resources:
        **measuring_resources(),
    log:
        "reports/logs/d3_kvcache.log",
    shell:
        "{PROFILING} d3-kvcache --settings {params.settings:q} --measurements {output.measurements}"
        " --meta {output.meta} --traces {output.traces} 2>&1 | tee {log}"


rule d3_kvcache_analysis:
    input:
        measurements=rules.d3_kvcache.output.measurements,
        meta=rules.d3_kvcache.output.meta,
    output:
        summary="reports/data/d3_kvcache/summary.csv",
        table="reports/data/d3_kvcache/table.csv",
        memory="reports/data/d3_kvcache/memory.csv",
        findings="reports/data/d3_kvcache/findings.json",
    params:
        settings=lambda wildcards: settings("d3_kvcache"),
    log:
        "reports/logs/d3_kvcache_analysis.log",
    shell:
        "{PROFILING} analyze-d3-kvcache --settings {params.settings:q} --measurements {input.measurements}"
        " --meta {input.meta} --summary {output.summary} --table {output.table} --memory {output.memory}"
        " --findings {output.findings} 2>&1 | tee {log}"


REPORT_INPUTS.extend([*rules.d3_kvcache_analysis.output, rules.d3_kvcache.output.meta,
                      rules.d3_kvcache.output.measurements, *rules.d3_kvcache.output.traces])
REPORT_RECORDS.append("reports/records/d3_kvcache.txt")
