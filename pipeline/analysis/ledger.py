"""The claims ledger's schema: claims.yaml -> a validated Ledger (units, comparisons, labels, claims).

A typo in claims.yaml (unknown key, unit or quantity; a claim missing what its kind needs) is a one-line error
naming the entry, raised when the analysis starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import ValidationError, model_validator

from ..schemas.base import Strict

LEDGER = Path(__file__).with_name("claims.yaml")
# quantity -> direction; None: the run's own mode (max for accuracy, min for perplexity)
QUANTITIES = {"final": None, "best": None, "seconds_to_target": "min", "epochs_to_target": "min",
              "train_seconds": "min", "train_flops": "min"}
# time-to-target quantities: a run that never reached the target has no value; it is censored (slower than any
# run that did), not dropped (claims.py ranks it last)
CENSORED = ("seconds_to_target", "epochs_to_target")


# ---- the ledger ---------------------------------------------------------------------------------------------------
class Unit(Strict):
    scale: float  # harness value x scale = the paper's unit (fractions -> %)
    label: str
    max_halfwidth: float | None = None  # widest CI half-width (paper units) that may "reproduce" a value


class Rule(Strict):
    family: str
    methods: list[str] | Literal["all"]
    baselines: list[str] | Literal["all"]
    variants: list[str] | None = None  # glob patterns on variant names; None: every variant of the experiment
    quantities: list[str] = ["final"]


class Claim(Strict):
    id: str
    source: str
    statement: str
    kind: Literal["value", "ratio", "better", "best", "note"]
    experiment: str | None = None
    arm: str | None = None
    versus: str | None = None  # the baseline of ratio and better claims
    family: str | None = None  # the family a best claim ranks within
    dataset: str | None = None
    subset: str | None = None  # None: any subset
    quantity: str = "final"
    unit: str | None = None
    claimed: float | None = None
    claimed_sd: float | None = None
    claimed_ci: tuple[float, float] | None = None
    claimed_range: tuple[float, float] | None = None  # "about X": the interval our CI must meet
    claimed_n: int | None = None  # the runs behind claimed_sd / claimed_ci (required with either)
    invert: bool = False  # ratio claims: versus / arm instead of arm / versus (speed-ups)
    reason: str | None = None  # note claims: why the harness cannot test it

    @model_validator(mode="after")
    def _complete(self):
        needs = {"value": ["experiment", "arm", "unit", "claimed"], "ratio": ["experiment", "arm", "versus", "unit", "claimed"],
                 "better": ["experiment", "arm", "versus", "unit"], "best": ["experiment", "arm", "family", "unit"],
                 "note": ["reason"]}[self.kind]
        missing = [k for k in needs if getattr(self, k) is None]
        if missing:
            raise ValueError(f"{self.kind} claim needs {', '.join(missing)}")
        if (self.claimed_sd is not None or self.claimed_ci is not None) and not (self.claimed_n or 0) >= 2:
            raise ValueError("claimed_sd / claimed_ci need claimed_n >= 2 (the runs behind the paper's spread)")
        return self


class Ledger(Strict):
    units: dict[str, Unit]
    comparisons: dict[str, list[Rule]]
    labels: dict[str, dict[str, str]] = {}
    reference: dict[str, str] = {}  # experiment -> the variant name ratios in its table are taken against
    metrics: dict[str, str] = {}  # experiment -> the eval metric its claims are about
    claims: list[Claim]

    @model_validator(mode="after")
    def _consistent(self):
        ids = [c.id for c in self.claims]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate claim ids: {sorted({i for i in ids if ids.count(i) > 1})}")
        for c in self.claims:
            if c.unit is not None and c.unit not in self.units:
                raise ValueError(f"claim {c.id}: unknown unit {c.unit!r}")
            if c.quantity not in QUANTITIES:
                raise ValueError(f"claim {c.id}: unknown quantity {c.quantity!r}")
        for exp, rules in self.comparisons.items():
            for r in rules:
                if unknown := [q for q in r.quantities if q not in QUANTITIES]:
                    raise ValueError(f"comparisons.{exp}.{r.family}: unknown quantities {unknown}")
        return self


def load_ledger(path: Path = LEDGER) -> Ledger:
    try:
        return Ledger.model_validate(yaml.safe_load(Path(path).read_text()))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{path}: {where}: {first['msg']}") from None
