# Data: prepare (download or mirror, verify, prepare; synthetic in the smoke profile) and subsets.


rule prepare:
    output:
        directory("data/prepared/{dataset}"),
    log:
        "logs/prepare/{dataset}.log",
    params:
        fingerprint=fingerprint("prepare_{dataset}"),
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
        fingerprint=fingerprint("subsets_{dataset}"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline subsets {wildcards.dataset} --prepared {input} --out {output} > {log} 2>&1"
