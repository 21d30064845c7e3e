"""params.yaml validation: every kind of bad input stops with one line that names the key path."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pipeline import config


def error_for(raw: dict, profile: str | None = None) -> str:
    with pytest.raises(config.ConfigError) as info:
        config.validate(raw, profile)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


def test_repository_params_are_valid_in_every_profile(raw_params):
    for profile in config.PROFILES:
        p = config.validate(raw_params, profile)
        assert p.profile == profile
        assert p.synthetic == (profile == "smoke")


def test_grid_is_identical_in_every_profile(raw_params):
    grids = {prof: {e: config.validate(raw_params, prof).variants(e) for e in config.validate(raw_params).experiments}
             for prof in config.PROFILES}
    assert grids["smoke"] == grids["quick"] == grids["paper"]


def test_unknown_top_level_key(raw_params):
    raw_params["seedz"] = [0]
    assert "seedz: unknown key" in error_for(raw_params)


def test_unknown_nested_key(raw_params):
    raw_params["data"]["synthetic"]["images"]["hue"] = 3
    assert "data.synthetic.images.hue: unknown key" in error_for(raw_params)


def test_wrong_type(raw_params):
    raw_params["data"]["synthetic"]["text"]["train_tokens"] = "many"
    assert "data.synthetic.text.train_tokens" in error_for(raw_params)


def test_zero_samples(raw_params):
    raw_params["data"]["synthetic"]["images"]["train_per_class"] = 0
    assert "data.synthetic.images.train_per_class: Input should be greater than 0" in error_for(raw_params)


def test_impossible_subset_size(raw_params):
    raw_params["data"]["datasets"]["cifar10"]["subsets"]["p1"] = 0
    assert "data.datasets.cifar10.subsets" in error_for(raw_params)


def test_profile_that_does_not_exist(raw_params):
    raw_params["profile"] = "fast"
    assert error_for(raw_params).startswith("params.yaml: profile: 'fast' is not one of")


def test_empty_seed_list(raw_params):
    raw_params["seeds"] = []
    assert "seeds: List should have at least 1 item" in error_for(raw_params)


def test_duplicate_seeds(raw_params):
    raw_params["seeds"] = [0, 1, 1]
    assert "seeds" in error_for(raw_params)


def test_negative_seed(raw_params):
    raw_params["seeds"] = [0, -1]
    assert "seeds.1" in error_for(raw_params)


def test_bad_checksum_format(raw_params):
    raw_params["data"]["sources"]["ptb.train.txt"]["hash"] = "sha256:abc"
    assert "data.sources.ptb.train.txt.hash" in error_for(raw_params)


def test_dataset_file_not_a_source(raw_params):
    raw_params["data"]["datasets"]["ptb"]["files"]["train"] = "missing.txt"
    assert "missing.txt" in error_for(raw_params)


def test_profile_override_for_unknown_profile(raw_params):
    raw_params["block_size"]["profiles"] = {"huge": {}}
    assert "block_size.profiles.huge" in error_for(raw_params)


def test_profile_override_with_unknown_key(raw_params):
    raw_params["block_size"].setdefault("profiles", {}).setdefault("smoke", {})["no_such_key"] = 1
    assert "block_size.no_such_key: unknown key [profile smoke]" in error_for(raw_params, "smoke")


def test_an_unknown_section_names_the_experiments_there_are(raw_params):
    raw_params["edbaa"] = {}
    message = error_for(raw_params)
    assert "edbaa: unknown key" in message and "experiments: block_size, edba, growth, optimizers" in message


def test_a_section_can_be_left_out(raw_params):
    """An experiment runs when params.yaml has its section: without `growth:` the grid has three experiments."""
    del raw_params["growth"]
    assert config.validate(raw_params).experiments == ["block_size", "edba", "optimizers"]


def test_unknown_variant_and_seed(raw_params):
    p = config.validate(raw_params)
    with pytest.raises(config.ConfigError, match="unknown variant 'nope'"):
        p.check_variant("block_size", "nope")
    with pytest.raises(config.ConfigError, match=r"seeds \[99\]"):
        p.check_seeds([99])


def test_cli_and_snakemake_refuse_bad_params(raw_params, tmp_path, root):
    raw_params["seeds"] = []
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw_params))
    cli = subprocess.run([sys.executable, "-m", "pipeline", "check", "--params", str(bad)],
                         capture_output=True, text=True, cwd=root)
    assert cli.returncode == 2
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: seeds: List should have at least 1 item")
    snake = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad)],
                           capture_output=True, text=True, cwd=root)
    assert snake.returncode != 0
    assert "seeds: List should have at least 1 item" in snake.stdout + snake.stderr


# ---- references between sections, and the profiles that are not active ------------------------------------------
@pytest.mark.parametrize("edit, expected", [
    (lambda r: r["block_size"].update(dataset="nope"),
     "block_size variant 'fixed16': dataset 'nope' is not a key of data.datasets"),
    (lambda r: r["block_size"].update(dataset="cifar10"), "block_size variant 'fixed16': 'cifar10' is a cifar10 dataset"),
    (lambda r: r["edba"]["grid"]["axes"]["subset"].update(p50={}),
     "edba variant 'baseline-cifar10-p50': subset 'p50' is not in data.datasets.cifar10.subsets"),
    (lambda r: r["optimizers"]["train"].update(subset="p50"), "optimizers variant 'sgd': subset 'p50'"),
    (lambda r: r["growth"]["grid"]["axes"]["dataset"].update(ptb=r["growth"]["grid"]["axes"]["dataset"]["cifar10"]),
     "growth variant 'fixed_full-ptb': 'ptb' is a ptb dataset"),
    (lambda r: r["optimizers"]["variants"]["norm-weight"].update(lr_from="norm-batch"),
     "optimizers variant 'norm-weight': reads the tuning of 'norm-batch', which is not a variant that tunes itself"),
])
def test_a_reference_to_a_missing_or_wrong_dataset_or_subset(raw_params, edit, expected):
    edit(raw_params)
    assert expected in error_for(raw_params)


def test_a_typo_in_an_inactive_profile_stops_the_active_one_too(raw_params):
    raw_params["block_size"]["profiles"]["quick"]["trian"] = {"epochs": 2}
    message = error_for(raw_params, "smoke")
    assert "block_size.trian: unknown key [profile quick]" in message


def test_every_profile_needs_its_entry(raw_params):
    del raw_params["profiles"]["quick"]
    assert "profiles: quick missing" in error_for(raw_params, "smoke")


@pytest.mark.parametrize("edit, expected", [
    (lambda r: r["block_size"]["train"].update(lrr=1), "block_size.train.lrr: unknown key"),
    (lambda r: r["block_size"]["variants"]["linear"]["schedule"].update(stepp=1),
     "block_size.variants.linear.schedule.stepp: unknown key"),
    (lambda r: r["edba"]["grid"]["axes"]["method"]["edba"].update(polcy="x"), "edba.grid.axes.method.edba.polcy: unknown key"),
    (lambda r: r["edba"]["edba"].update(window=0), "edba.edba.window: Input should be greater than 0"),
    (lambda r: r["optimizers"]["schedule_options"]["step"].update(milestones=[0.5, 2]),
     "optimizers.schedule_options.step.milestones.1: Input should be less than 1"),
    (lambda r: r["data"]["synthetic"]["images"].pop("noise"), "data.synthetic.images.noise: required key is missing"),
])
def test_a_bad_key_is_named_where_params_yaml_sets_it(raw_params, edit, expected):
    """The one line names the key path in the file: a section default, a grid axis value, or one variant's own."""
    edit(raw_params)
    assert expected in error_for(raw_params)
