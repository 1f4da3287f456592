# Model provisioning: the embedded default (de-quantised from its GGUF) or the tiny test model, built once.


rule provision_model:
    output:
        directory("resources/models/{name}"),
    wildcard_constraints:
        name="smollm2-135m-instruct|tiny-random",
    log:
        "resources/logs/provision_model_{name}.log",
    params:
        seed=CONFIG["seed"],
    shell:
        "{PROFILING} provision --model {wildcards.name} --out {output} --seed {params.seed} 2>&1 | tee {log}"
