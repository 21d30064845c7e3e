"""A method brought as a plug-in: a package outside pipeline/, named in a params file (or an entry point), joins
the grid, both orchestrators, the tables and the report without any edit of pipeline/."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pipeline import config, dag, registry
from pipeline.code import code_digest
from pipeline.errors import ConfigError

TOY = {
    "__init__.py": '''
        """A toy method: the harness's image loop at a learning rate the variant chooses."""
        from pipeline.registry import Experiment
        from pipeline.schemas.base import IMAGE_KINDS

        from .schema import Settings

        EXPERIMENT = Experiment(name="toy", settings=Settings, data_kinds=IMAGE_KINDS)
        ''',
    "schema.py": '''
        from pipeline.schemas.base import PositiveFloat, PositiveInt, Strict, Target


        class Settings(Strict):
            dataset: str
            subset: str
            target: Target
            epochs: PositiveInt
            lr: PositiveFloat
        ''',
    "train.py": '''
        import torch

        from pipeline.models import build_model
        from pipeline.seeding import generator
        from pipeline.train import image, runner


        def train(job):
            cfg = job.settings
            spec = job.spec("test_acc", "max")
            data = job.image_data(cfg.dataset, cfg.subset)
            run = job.start(spec)
            model = build_model("resnet20", data.num_classes, (2, 2, 4), generator=generator(job.seed, "init"))
            optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
            loop = image.ImageLoop(epochs=cfg.epochs, samples_per_epoch=len(data.y), eval_every=1, eval_batch=500,
                                   augment=False)
            image.fit(run, model, optimizer, None, data, image.FixedBatch(20), loop, runner.seed_generators(job.seed))
            return runner.finish_run(run)
        ''',
    "claims.yaml": '''
        metric: test_acc
        comparisons:
          - {family: toy, methods: [fast], baselines: [slow]}
        claims:
          - {id: toy-fast, source: "a toy", statement: "the larger lr is more accurate", kind: better, arm: fast,
             versus: slow, unit: percent}
        ''',
    "choices.md": "# toy\n\n## Toy method\n\n- toy.lr: two values, to have something to compare.\n",
}
TOY_SECTION = {
    "target": {"metric": "test_acc", "value": 0.2, "mode": "max"}, "epochs": 1, "lr": 0.01,
    "grid": {"name": "{method}-{dataset}-{subset}",
             "axes": {"method": {"slow": {}, "fast": {"lr": 0.1}}, "dataset": {"cifar10": {}}, "subset": {"n100": {}}}},
}


@pytest.fixture(autouse=True)
def _forget_toy():
    """Each test imports its own toy package: none may see another test's."""
    yield
    for name in [m for m in sys.modules if m == "toy" or m.startswith("toy.")]:
        del sys.modules[name]


def write_toy(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, text in TOY.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    return folder


def toy_params(raw: dict, plugin: str, only_toy: bool = False) -> dict:
    raw = {k: v for k, v in raw.items() if not (only_toy and k in ("block_size", "edba", "growth", "optimizers"))}
    return {**raw, "plugins": [plugin], "toy": TOY_SECTION, **({"seeds": [0, 1, 2]} if only_toy else {})}


@pytest.fixture
def workdir(tmp_path, root):
    """A working directory (the orchestrators' shells linked in) and a toy package beside it, outside pipeline/."""
    write_toy(tmp_path / "methods" / "toy")
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Snakefile", "workflow", "envs"):
        (work / name).symlink_to(root / name)
    return work


def run(args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PIPELINE_PROFILE", None)
    out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_a_plugin_joins_check_snakemake_and_dvc(workdir, raw_params, root):
    before = code_digest(root / "pipeline")
    (workdir / "params.yaml").write_text(yaml.safe_dump(toy_params(raw_params, "../methods/toy"), sort_keys=False))
    check = run(["pipeline", "check"], workdir).stdout
    assert "toy (2 variants" in check and "slow-cifar10-n100, fast-cifar10-n100" in check
    assert "block_size (6 variants" in check  # the built-in experiments are still there

    jobs = run(["snakemake", "-n", "-p"], workdir).stdout
    for variant in ("slow-cifar10-n100", "fast-cifar10-n100"):
        assert (f"python -m pipeline train toy {variant} --seeds 0,1,2,3,4 --data data/prepared/cifar10 "
                f"--subsets data/subsets/cifar10 --out results/runs/toy/{variant}") in jobs
    assert "python -m pipeline track toy --runs results/runs/toy --out results/tracking/toy.json" in jobs

    run(["pipeline", "dvc-yaml", "--out", "dvc.yaml"], workdir)
    stages = yaml.safe_load((workdir / "dvc.yaml").read_text())["stages"]
    assert set(stages["train_toy"]["foreach"]) == {"slow-cifar10-n100", "fast-cifar10-n100"}
    assert "toy" in stages["track"]["foreach"]
    toy_folder = str((workdir.parent / "methods" / "toy").resolve())
    assert toy_folder in stages["train_toy"]["do"]["deps"]  # its code reruns its jobs
    assert toy_folder in stages["analyze"]["deps"]  # and its tables
    assert len(dag.groups(config.load(workdir / "params.yaml"))) == len(dag.groups(config.load(root / "params.yaml"))) + 1
    assert code_digest(root / "pipeline") == before  # nothing under pipeline/ was touched


def test_a_plugin_runs_from_data_to_report_in_process(tmp_path, raw_params):
    """The toy trains, is collected, analysed against its claims, drawn and reported: its variants, claim, choices
    and the generic curves appear, beside nothing pipeline/ had to be told."""
    from pipeline.analysis.collect import collect
    from pipeline.analysis.figures import figures
    from pipeline.analysis.tables import analyze
    from pipeline.data.stages import prepare_dataset, write_subsets
    from pipeline.report.render import render
    from pipeline.train.jobs import Inputs, Job

    write_toy(tmp_path / "toy")
    params = config.validate(toy_params(raw_params, "toy", only_toy=True), base=tmp_path)
    assert params.experiments == ["toy"]
    prepare_dataset(params, "cifar10", tmp_path / "prepared")
    write_subsets(params, "cifar10", tmp_path / "prepared", tmp_path / "subsets")
    inputs = Inputs.from_paths(data=[tmp_path / "prepared"], subsets=[tmp_path / "subsets"])
    train = params.experiment("toy").module("train").train
    for variant in params.variants("toy"):
        for seed in params.seeds:
            train(Job(params, "toy", variant, seed, inputs, tmp_path / "runs" / "toy" / variant / f"seed{seed}",
                      tmp_path / "ckpt"))
    collect(tmp_path / "runs", tmp_path / "tables")
    meta = analyze(tmp_path / "tables", params, tmp_path / "analysis", log=lambda _: None)
    figures(tmp_path / "tables", tmp_path / "figures", params, analysis_dir=tmp_path / "analysis")
    render(tmp_path / "analysis", tmp_path / "figures", tmp_path / "report", params)

    assert meta["experiments"] == {"toy": 6}
    claims = (tmp_path / "analysis" / "claims.csv").read_text()
    assert "toy-fast" in claims and "not comparable (profile smoke)" in claims
    manifest = json.loads((tmp_path / "figures" / "figures.json").read_text())["figures"]
    assert [f["name"] for f in manifest] == ["toy_curves", "claims_chart"]
    assert manifest[0]["status"] == "drawn"
    report = (tmp_path / "report" / "report.md").read_text()
    for seen in ("toy-fast", "fast-cifar10-n100", "slow-cifar10-n100", "## Toy method", "toy_curves"):
        assert seen in report
    assert "block_size" not in report  # only what params names is run and reported


def test_an_installed_package_joins_through_its_entry_point(tmp_path, raw_params, monkeypatch):
    write_toy(tmp_path / "site" / "toy")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    point = importlib.metadata.EntryPoint(name="toy", value="toy", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [point] if group == registry.ENTRY_POINT_GROUP else [])
    registry._entry_points.cache_clear()
    try:
        raw = {**raw_params, "toy": TOY_SECTION}
        params = config.validate(raw)
        assert params.experiments[-1] == "toy" and params.experiment("toy").folder == (tmp_path / "site" / "toy")
        assert params.describe("toy", "fast-cifar10-n100") == {"method": "fast", "dataset": "cifar10", "subset": "n100"}
    finally:
        registry._entry_points.cache_clear()


@pytest.mark.parametrize("break_it, expected", [
    (lambda f: (f / "__init__.py").unlink(), "plugins[0]: {folder} is not a Python package folder"),
    (lambda f: (f / "__init__.py").write_text("EXPERIMENT = 3\n"), "defines no EXPERIMENT"),
    (lambda f: (f / "__init__.py").write_text("import no_such_module\n"),
     "importing {folder}/__init__.py failed: ModuleNotFoundError"),
    (lambda f: (f / "__init__.py").write_text(
        "from pipeline.registry import Experiment\nfrom pipeline.experiments.edba import Settings\n"
        "EXPERIMENT = Experiment(name='edba', settings=Settings, data_kinds=('cifar10',))\n"),
     "experiment 'edba' is already defined by pipeline/experiments/edba"),
])
def test_a_broken_plugin_is_one_line_naming_it(tmp_path, raw_params, break_it, expected):
    folder = write_toy(tmp_path / "toy")
    break_it(folder)
    with pytest.raises(ConfigError) as info:
        config.validate(toy_params(raw_params, "toy"), base=tmp_path)
    assert expected.format(folder=folder) in str(info.value) and "\n" not in str(info.value)


def test_a_plugin_section_is_validated_like_any_other(tmp_path, raw_params):
    write_toy(tmp_path / "toy")
    raw = toy_params(raw_params, "toy")
    raw["toy"] = {**TOY_SECTION, "lr": -1.0}
    with pytest.raises(ConfigError, match=r"toy.lr: Input should be greater than 0"):
        config.validate(raw, base=tmp_path)
    raw["toy"] = {**TOY_SECTION, "grid": {**TOY_SECTION["grid"], "axes": {**TOY_SECTION["grid"]["axes"],
                                                                          "subset": {"n500": {}}}}}
    with pytest.raises(ConfigError, match=r"toy variant 'slow-cifar10-n500': subset 'n500' is not in"):
        config.validate(raw, base=tmp_path)


def readme_section(root: Path) -> dict:
    """The params of the README's "Adding a method" walk-through (its yaml block naming the example)."""
    text = (root / "README.md").read_text()
    part = text[text.index("## Adding a method"):]
    blocks = [b.split("```", 1)[0] for b in part.split("```yaml\n")[1:]]
    return yaml.safe_load(next(b for b in blocks if "plugins:" in b))


@pytest.mark.slow
def test_the_readme_example_runs_through_snakemake_to_the_report(tmp_path, raw_params, root):
    """The README's walk-through as a user does it: the example folder, its params section, `snakemake --cores 2`
    (every job a process of its own), then its runs in the tables, MLflow's receipt and the report."""
    work = tmp_path / "work"
    (work / "examples").mkdir(parents=True)
    (work / "examples" / "label_smoothing").symlink_to(root / "examples" / "label_smoothing")
    for name in ("Snakefile", "workflow", "envs"):
        (work / name).symlink_to(root / name)
    raw = {k: v for k, v in raw_params.items() if k not in ("block_size", "edba", "growth", "optimizers")}
    (work / "params.yaml").write_text(yaml.safe_dump({**raw, "seeds": [0, 1, 2], **readme_section(root)}))
    run(["snakemake", "--cores", "2"], work)
    final = (work / "results" / "tables" / "runs_final.csv").read_text()
    assert final.count("label_smoothing,") == 6
    receipt = json.loads((work / "results" / "tracking" / "label_smoothing.json").read_text())
    assert len(receipt["runs"]) == 6
    report = (work / "report" / "report.md").read_text()
    for seen in ("Label smoothing against hard labels", "ls-better", "smoothing-cifar10-n100", "Label smoothing (example)"):
        assert seen in report
