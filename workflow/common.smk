# Input functions of the rules: named, in one place; they ask pipeline.dag, which dvc.yaml is written from.


def fingerprint(first_output):
    """A job's `fingerprint` param: the digest of its params keys, resolved settings and code (pipeline.dag.
    fingerprints, by the job's first output, a pattern over the wildcards); Snakemake reruns a job whose recorded
    digest differs. (A function of the wildcards only: Snakemake does not record params derived from outputs.)"""
    return lambda wildcards: FINGERPRINTS[str(first_output).format(**dict(wildcards.items()))]


# the `settings` rule's outputs: one file per variant (dvc.yaml declares their folder, results/settings)
SETTINGS_FILES = [dag.settings_file(e, v) for e in P.experiments for v in P.variants(e)]


def settings_input(wildcards):
    """The variant's resolved settings file (written by the `settings` rule). ancient(): it only orders the jobs;
    whether a job reruns is its fingerprint's call, so rewriting the settings never reruns an unchanged variant."""
    return ancient(dag.settings_file(wildcards.experiment, wildcards.get("variant") or wildcards.name))


# A training job's outputs: its seeds' folders. One job per (experiment, variant) trains every seed in turn; with
# the profile's `job_per: seed` each seed is its own job (a `seed` wildcard), as in dvc.yaml (pipeline.dag).
if P.job_per == "seed":
    TRAIN_OUTPUTS = [directory("results/runs/{experiment}/{variant}/seed{seed}")]
    TRAIN_LOG = "logs/train/{experiment}/{variant}/seed{seed}.log"
    TRAIN_BENCHMARK = "results/benchmarks/train/{experiment}/{variant}/seed{seed}.tsv"  # runtime, peak memory
else:
    TRAIN_OUTPUTS = [directory(f"results/runs/{{experiment}}/{{variant}}/seed{s}") for s in P.seeds]
    TRAIN_LOG = "logs/train/{experiment}/{variant}.log"
    TRAIN_BENCHMARK = "results/benchmarks/train/{experiment}/{variant}.tsv"


def train_seeds(wildcards):
    """The job's seeds: its `seed` wildcard, or every seed of params.yaml."""
    return [int(wildcards.seed)] if "seed" in wildcards.keys() else list(P.seeds)


def train_seeds_arg(wildcards):
    return dag.seeds_arg(train_seeds(wildcards))


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
    return dag.run_dirs(P, wildcards.experiment)


def all_runs(wildcards):
    return [d for e in P.experiments for d in dag.run_dirs(P, e)]


def receipts(wildcards):
    return [f"{dag.TRACKING}/{e}.json" for e in P.experiments]
