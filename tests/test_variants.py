"""The one variant grammar (pipeline/variants.py) on a toy settings model: merge, grid, overrides, references."""
from __future__ import annotations

from typing import Annotated, Literal, Union

import pytest
from pydantic import Field

from pipeline.errors import ConfigError
from pipeline.schemas.base import Strict
from pipeline.variants import merge, resolve_section


class Fixed(Strict):
    kind: Literal["fixed"]
    size: int


class Growing(Strict):
    kind: Literal["growing"]
    start: int
    every: int


class Train(Strict):
    lr: float
    epochs: int = Field(gt=0)
    tags: list[str]


class Settings(Strict):
    dataset: str
    method: str
    train: Train
    schedule: Annotated[Union[Fixed, Growing], Field(discriminator="kind")]


DEFAULTS = {"dataset": "a", "method": "base", "train": {"lr": 0.1, "epochs": 3, "tags": ["x", "y"]},
            "schedule": {"kind": "growing", "start": 16, "every": 2}}


def section(**grammar) -> dict:
    return {**DEFAULTS, **grammar}


# ---- merge ------------------------------------------------------------------------------------------------------
def test_merge_is_deep_and_leaves_its_inputs_alone():
    base = {"train": {"lr": 0.1, "epochs": 3}, "keep": 1}
    out = merge(base, {"train": {"lr": 0.5}})
    assert out == {"train": {"lr": 0.5, "epochs": 3}, "keep": 1}
    assert base == {"train": {"lr": 0.1, "epochs": 3}, "keep": 1}


def test_lists_and_scalars_replace():
    assert merge({"tags": ["x", "y"], "n": 1}, {"tags": ["z"], "n": None}) == {"tags": ["z"], "n": None}


def test_a_new_kind_keeps_only_the_keys_it_has():
    out = merge(DEFAULTS, {"schedule": {"kind": "fixed", "size": 8}}, Settings)
    assert out["schedule"] == {"kind": "fixed", "size": 8}
    # the same kind merges key by key
    assert merge(DEFAULTS, {"schedule": {"every": 5}}, Settings)["schedule"] == {"kind": "growing", "start": 16,
                                                                                 "every": 5}
    # without the model no key can be known to belong to the new kind: the old mapping is replaced
    assert merge(DEFAULTS, {"schedule": {"kind": "fixed", "size": 8}})["schedule"] == {"kind": "fixed", "size": 8}


# ---- explicit variants, grid, references --------------------------------------------------------------------------
def test_explicit_variants_override_the_defaults_in_file_order():
    s = resolve_section("toy", section(variants={"slow": {"train": {"lr": 0.01}}, "base": {}}), Settings)
    assert list(s.variants) == ["slow", "base"]
    assert s.variants["slow"].train.lr == 0.01 and s.variants["slow"].train.epochs == 3
    assert s.variants["base"].model_dump() == Settings.model_validate(DEFAULTS).model_dump()
    assert s.coords == {"slow": {}, "base": {}}


def test_the_grid_expands_in_product_order_without_the_exclusions():
    grid = {"name": "{method}-{dataset}", "axes": {"method": {"base": {}, "fast": {"train": {"lr": 1.0}}},
                                                   "dataset": {"a": {}, "b": {"train": {"epochs": 9}}}},
            "exclude": [{"method": "fast", "dataset": "b"}]}
    s = resolve_section("toy", section(grid=grid), Settings)
    assert list(s.variants) == ["base-a", "base-b", "fast-a"]
    assert s.coords["fast-a"] == {"method": "fast", "dataset": "a"}
    # an axis sets the setting of its own name, and its overrides merge in
    assert (s.variants["base-b"].dataset, s.variants["base-b"].train.epochs) == ("b", 9)
    assert (s.variants["fast-a"].method, s.variants["fast-a"].train.lr) == ("fast", 1.0)


def test_a_variant_named_like_a_grid_cell_overrides_that_cell_and_others_join_the_grid():
    grid = {"name": "{dataset}", "axes": {"dataset": {"a": {}, "b": {}}}}
    s = resolve_section("toy", section(grid=grid, variants={"b": {"train": {"lr": 2.0}}, "extra": {}}), Settings)
    assert list(s.variants) == ["a", "b", "extra"]
    assert s.variants["b"].train.lr == 2.0 and s.variants["b"].dataset == "b"


def test_a_reference_inherits_nothing_and_is_not_in_the_grid():
    ref = {**DEFAULTS, "train": {"lr": 9.0, "epochs": 1, "tags": []}}
    s = resolve_section("toy", section(variants={"base": {}}, reference={"paper": ref}), Settings)
    assert list(s.variants) == ["base"] and s.settings("paper").train.lr == 9.0
    with pytest.raises(ConfigError, match="toy.reference.partial: schedule: required key is missing"):
        resolve_section("toy", section(variants={"base": {}}, reference={"partial": {k: v for k, v in ref.items()
                                                                                     if k != "schedule"}}), Settings)


@pytest.mark.parametrize("grammar, expected", [
    ({"variants": {"v": {"train": {"lr": "fast"}}}}, "toy.variants.v.train.lr: Input should be a valid number"),
    ({"variants": {"v": {"schedule": {"kind": "fixed", "sise": 3}}}}, "toy.variants.v.schedule.sise: unknown key"),
    ({"variants": {"v": {}}, "train": {"lr": 0.1, "epochs": 0, "tags": []}},
     "toy.train.epochs: Input should be greater than 0"),
    ({"grid": {"name": "{dataset}", "axes": {"dataset": {"a": {"train": {"epochs": -1}}}}}},
     "toy.grid.axes.dataset.a.train.epochs: Input should be greater than 0"),
    ({"grid": {"name": "{dataset}", "axes": {"dataset": {"a": {"dataset": "b"}}}}},
     "toy.grid.axes.dataset.a: sets 'dataset', which the axis sets itself"),
    ({"grid": {"name": "x", "axes": {"dataset": {"a": {}, "b": {}}}}}, "toy.grid.name: 'x' must name every axis"),
    ({"grid": {"name": "{dataset}", "axes": {"dataset": {"a": {}}}, "exclude": [{"dataset": "c"}]}},
     "toy.grid.exclude[0]"),
    ({"grid": {"name": "{dataset}", "axes": {"dataset": {}}}}, "toy.grid.axes.dataset: an axis needs at least one"),
    ({}, "toy: no variants"),
])
def test_bad_grammar_is_one_line_naming_the_key(grammar, expected):
    with pytest.raises(ConfigError) as info:
        resolve_section("toy", section(**grammar), Settings)
    assert expected in str(info.value) and "\n" not in str(info.value)
