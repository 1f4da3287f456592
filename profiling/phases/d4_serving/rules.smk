# D4 serving (see experiment.py beside this file): our OpenAI-compatible service under load, one idea at a time
# (paged KV, chunked prefill, prefix caching, a D5 lever), the capacity sweep, workloads with shared prefixes and
# long prompts, policies and tenants, beside vLLM's server; then the tables, targets and the flow's stage times.

from profiling.phases.d4_serving.variants import trace_variants as d4_serving_trace_variants

D4_SERVING_TRACES = expand(f"{RUN}/traces/d4_serving/{{variant}}.json.gz",
                           variant=d4_serving_trace_variants(CONFIG["d4_serving"]), allow_missing=True)


rule d4_serving:
    input:
        model_files,
    output:
        measurements=f"{RUN}/data/d4_serving/measurements.csv",
        meta=f"{RUN}/data/d4_serving/meta.json",
        requests=f"{RUN}/data/d4_serving/requests.csv",
        bench=f"{RUN}/data/d4_serving/bench_results.json",
        spans=f"{RUN}/data/d4_serving/spans.jsonl",
        traces=D4_SERVING_TRACES,
    params:
        settings=settings("d4_serving"),
    threads: workflow.cores
    resources:
        **{**MEASURING_RESOURCES, "mem_mb": 16000},  # our server and, when installed, vLLM's (its KV cache space)
    log:
        f"{RUN}/logs/d4_serving.log",
    shell:
        "{PROFILING} d4_serving --settings {params.settings:q} --measurements {output.measurements}"
        " --meta {output.meta} --requests {output.requests} --bench {output.bench} --spans {output.spans}"
        " --traces {output.traces} 2>&1 | tee {log}"


rule d4_serving_analysis:
    input:
        measurements=rules.d4_serving.output.measurements,
        meta=rules.d4_serving.output.meta,
        requests=rules.d4_serving.output.requests,
        spans=rules.d4_serving.output.spans,
    output:
        summary=f"{RUN}/data/d4_serving/summary.csv",
        runs=f"{RUN}/data/d4_serving/runs.csv",
        ablation=f"{RUN}/data/d4_serving/ablation.csv",
        capacity=f"{RUN}/data/d4_serving/capacity.csv",
        long=f"{RUN}/data/d4_serving/long_prompts.csv",
        timeline=f"{RUN}/data/d4_serving/stream_timeline.csv",
        tenants=f"{RUN}/data/d4_serving/tenants.csv",
        flow=f"{RUN}/data/d4_serving/flow.csv",
        steps=f"{RUN}/data/d4_serving/steps.csv",
        stages=f"{RUN}/data/d4_serving/stages.csv",
        findings=f"{RUN}/data/d4_serving/findings.json",
    params:
        settings=settings("d4_serving"),
    log:
        f"{RUN}/logs/d4_serving_analysis.log",
    shell:
        "{PROFILING} d4_serving_analysis --settings {params.settings:q} --measurements {input.measurements}"
        " --meta {input.meta} --requests {input.requests} --spans {input.spans} --summary {output.summary}"
        " --runs {output.runs} --ablation {output.ablation} --capacity {output.capacity} --long {output.long}"
        " --timeline {output.timeline} --tenants {output.tenants} --flow {output.flow} --steps {output.steps}"
        " --stages {output.stages} --findings {output.findings}"
        " 2>&1 | tee {log}"


REPORT_INPUTS.extend([*rules.d4_serving_analysis.output, rules.d4_serving.output.meta,
                      rules.d4_serving.output.measurements, rules.d4_serving.output.requests,
                      rules.d4_serving.output.bench, *D4_SERVING_TRACES])
REPORT_RECORDS.append(f"{RUN}/records/d4_serving.txt")
