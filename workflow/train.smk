# Training: one job per (experiment, variant) trains every seed; tuning jobs run first where an experiment has them.
# resources: gpu=1 lets `snakemake --resources gpu=G` run G training jobs at once; each claims a free GPU itself.


rule tune:
    input:
        tune_inputs,
    output:
        "results/tuning/{experiment}/{name}.json",
    log:
        "logs/tune/{experiment}/{name}.log",
    params:
        inputs=tune_args,
        fingerprint=fingerprint("tune_{experiment}_{name}"),
    threads: 1
    resources:
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline tune {wildcards.experiment} {wildcards.name} {params.inputs} --out {output} > {log} 2>&1"


rule train:
    input:
        train_inputs,
    output:
        directory("results/runs/{experiment}/{variant}"),
    log:
        "logs/train/{experiment}/{variant}.log",
    params:
        seeds=SEEDS,
        inputs=train_args,
        fingerprint=fingerprint("train_{experiment}_{variant}"),
    threads: 1
    resources:
        gpu=1,
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline train {wildcards.experiment} {wildcards.variant} --seeds {params.seeds} {params.inputs} --out {output} > {log} 2>&1"


rule track:
    input:
        experiment_runs,
    output:
        "results/tracking/{experiment}.json",
    log:
        "logs/track/{experiment}.log",
    params:
        fingerprint=fingerprint("track_{experiment}"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline track {wildcards.experiment} --runs results/runs/{wildcards.experiment} --out {output} > {log} 2>&1"
