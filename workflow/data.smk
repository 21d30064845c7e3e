# Data: prepare (download or mirror, verify, prepare; synthetic in the smoke profile) and subsets; the variants'
# resolved settings (one file each: what a job depends on; the job prints which keys changed since the last runs).


rule prepare:
    output:
        directory("data/prepared/{dataset}"),
    log:
        "logs/prepare/{dataset}.log",
    params:
        fingerprint=fingerprint("data/prepared/{dataset}"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline prepare {wildcards.dataset} --out {output} > {log} 2>&1"


rule subsets:
    input:
        "data/prepared/{dataset}",
    output:
        directory("data/subsets/{dataset}"),
    log:
        "logs/subsets/{dataset}.log",
    params:
        fingerprint=fingerprint("data/subsets/{dataset}"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline subsets {wildcards.dataset} --prepared {input} --out {output} > {log} 2>&1"


rule settings:
    input:
        "params.yaml",
    output:
        SETTINGS_FILES,
    log:
        "logs/settings.log",
    params:
        fingerprint=fingerprint("results/settings"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline settings --out results/settings 2>&1 | tee {log}"
