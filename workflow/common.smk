# Input functions of the rules: named, in one place; they ask pipeline.dag, which dvc.yaml is written from.


def fingerprint(stage):
    """A rule's `fingerprint` param: the dvc.yaml stage `stage` (a pattern over the wildcards) has its params and
    code digested in pipeline.dag.fingerprints; Snakemake reruns a job whose recorded digest differs."""
    return lambda wildcards: FINGERPRINTS[stage.format(**dict(wildcards.items()))]


def train_inputs(wildcards):
    return dag.train_inputs(P, wildcards.experiment, wildcards.variant)


def tune_inputs(wildcards):
    return dag.tune_inputs(P, wildcards.experiment, wildcards.name)


def train_args(wildcards):
    """`--data ... --subsets ... --tuning ...`: the paths the training job reads, on its command line."""
    return dag.input_args(dag.job_inputs(P, wildcards.experiment, wildcards.variant))


def tune_args(wildcards):
    return dag.input_args(dag.job_inputs(P, wildcards.experiment, wildcards.name, tuning=False))


def experiment_runs(wildcards):
    return [dag.run_dir(wildcards.experiment, v) for v in P.variants(wildcards.experiment)]


def all_runs(wildcards):
    return [dag.run_dir(e, v) for e in P.experiments for v in P.variants(e)]


def receipts(wildcards):
    return [f"{dag.TRACKING}/{e}.json" for e in P.experiments]
