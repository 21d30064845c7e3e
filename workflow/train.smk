# Training: one job per (experiment, variant) trains every seed, or one job per seed (the profile's job_per); tuning
# jobs run first where an experiment has them.
# Threads and resources (GPU slots locally, runtime/memory/GPUs on Slurm) are set by the profiles in profiles/.


rule tune:
    input:
        tune_inputs,
        settings_input,
    output:
        "results/tuning/{experiment}/{name}.json",
    log:
        "logs/tune/{experiment}/{name}.log",
    benchmark:
        "results/benchmarks/tune/{experiment}/{name}.tsv"
    params:
        inputs=tune_args,
        fingerprint=fingerprint("results/tuning/{experiment}/{name}.json"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline tune {wildcards.experiment} {wildcards.name} {params.inputs} --out {output} > {log} 2>&1"


rule train:
    input:
        train_inputs,
        settings_input,
    output:
        TRAIN_OUTPUTS,
    log:
        TRAIN_LOG,
    benchmark:
        TRAIN_BENCHMARK
    params:
        seeds=train_seeds_arg,
        inputs=train_args,
        fingerprint=fingerprint(TRAIN_OUTPUTS[0]),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline train {wildcards.experiment} {wildcards.variant} --seeds {params.seeds} {params.inputs} --out results/runs/{wildcards.experiment}/{wildcards.variant} > {log} 2>&1"


rule track:
    input:
        experiment_runs,
    output:
        "results/tracking/{experiment}.json",
    log:
        "logs/track/{experiment}.log",
    params:
        fingerprint=fingerprint("results/tracking/{experiment}.json"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline track {wildcards.experiment} --runs results/runs/{wildcards.experiment} --out {output} > {log} 2>&1"
