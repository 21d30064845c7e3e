# Thin shell over `python -m pipeline ...`: the stages, commands and outputs are those of dvc.yaml (a test
# compares them). The grid comes from params.yaml through pipeline.config, validated before any job starts:
# a bad params.yaml stops `snakemake -n` with one line naming the key.
from pipeline import config as harness, dag


configfile: "params.yaml"


try:
    P = harness.validate(config)
except harness.ConfigError as err:
    raise WorkflowError(str(err)) from None
SEEDS = dag.seeds_arg(P)


wildcard_constraints:
    experiment="|".join(harness.EXPERIMENTS),
    dataset="[A-Za-z0-9_]+",
    variant="[^/]+",
    name="[^/]+",


include: "workflow/common.smk"
include: "workflow/data.smk"
include: "workflow/train.smk"
include: "workflow/analysis.smk"


rule all:
    input:
        "report",
    default_target: True
