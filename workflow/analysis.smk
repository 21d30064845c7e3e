# Analysis: collect the run files, statistics and claims, figures, and the report.


rule collect:
    input:
        all_runs,
    output:
        directory("results/tables"),
    log:
        "logs/collect.log",
    params:
        fingerprint=fingerprint("results/tables"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline collect --runs results/runs --out {output} > {log} 2>&1"


rule analyze:
    input:
        "results/tables",
    output:
        report(directory("results/analysis"), patterns=["{name}.csv", "tables/{name}.csv"],
               caption="report/tables.rst", category="Tables"),
    log:
        "logs/analyze.log",
    params:
        fingerprint=fingerprint("results/analysis"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline analyze --tables {input} --out {output} > {log} 2>&1"


rule figures:
    input:
        tables="results/tables",
        analysis="results/analysis",
    output:
        report(directory("figures"), patterns=["{name}.png"], caption="report/figures.rst", category="Figures"),
    log:
        "logs/figures.log",
    params:
        fingerprint=fingerprint("figures"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline figures --tables {input.tables} --analysis {input.analysis} --out {output} > {log} 2>&1"


rule report:
    input:
        analysis="results/analysis",
        figures="figures",
        receipts=receipts,
    output:
        report(directory("report"), patterns=["index.html"], caption="report/report.rst", category="Report"),
    log:
        "logs/report.log",
    params:
        fingerprint=fingerprint("report"),
    conda:
        "../envs/pipeline.yaml"
    shell:
        "python -m pipeline report --analysis {input.analysis} --figures {input.figures} --benchmarks results/benchmarks --out {output} > {log} 2>&1"
