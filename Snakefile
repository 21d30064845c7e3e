# Thin shell over `python -m pipeline ...`: the stages, commands and outputs are those of dvc.yaml (a test
# compares them). The grid comes from params.yaml through pipeline.config, validated before any job starts:
# a bad params.yaml stops `snakemake -n` with one line naming the key. Experiments (built in or plug-ins named
# in params.yaml) are found by pipeline/registry.py; nothing here names one.
import os

from pipeline import config as harness, dag
from pipeline.yamlfile import read_yaml


configfile: "params.yaml"
report: "workflow/report/workflow.rst"


try:
    FILE = read_yaml("params.yaml")  # what the jobs read: a duplicate key (YAML keeps the last silently) stops here too
    P = harness.validate(config, os.environ.get("PIPELINE_PROFILE"))  # the profile the jobs will see
    harness.check_overrides(config, FILE)  # `--config` may choose the profile only: jobs read params.yaml
except harness.ConfigError as err:
    raise WorkflowError(str(err)) from None
config["profile"] = P.profile  # PIPELINE_PROFILE may override the file: the report captions name the active one
os.environ.update(PIPELINE_PROFILE=P.profile)  # `--config profile=...` too: every job (local or sbatch) runs the planned one
FINGERPRINTS = dag.fingerprints(P)  # stage -> digest of its resolved params and code: a change reruns the job


wildcard_constraints:
    experiment="|".join(P.experiments),
    dataset="[A-Za-z0-9_]+",
    variant="[^/]+",
    name="[^/]+",
    seed="[0-9]+",


include: "workflow/common.smk"
include: "workflow/data.smk"
include: "workflow/train.smk"
include: "workflow/analysis.smk"


localrules:
    all,
    settings,
    track,
    collect,
    analyze,
    figures,
    report,


rule all:
    input:
        "report",
    default_target: True
