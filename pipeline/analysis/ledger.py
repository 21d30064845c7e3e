"""The claims ledger: each experiment's claims.yaml (in its package) + the shared units.yaml -> one Ledger.

    <experiment package>/claims.yaml   metric, reference, comparisons, labels, claims (and units of its own)
    units.yaml                         the units every experiment may use (percent, perplexity, ...)

A typo (unknown key, unit or quantity; a claim missing what its kind needs) is a one-line error naming the file
and the entry, raised when the analysis starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ValidationError, model_validator

from ..errors import ConfigError
from ..yamlfile import read_yaml
from ..schemas.base import Pair, Strict

UNITS = Path(__file__).with_name("units.yaml")
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


class Units(Strict):
    units: dict[str, Unit]


class Claim(Strict):
    id: str
    source: str
    statement: str
    kind: Literal["value", "ratio", "better", "best", "trend", "note"]
    experiment: str | None = None  # filled in from the claims file's experiment
    arm: str | None = None
    versus: str | None = None  # the baseline of ratio and better claims
    family: str | None = None  # the family a best claim ranks within
    dataset: str | None = None
    subset: str | None = None  # None: any subset
    quantity: str = "final"
    unit: str | None = None
    claimed: float | None = None
    claimed_sd: float | None = None
    claimed_ci: Pair | None = None
    claimed_range: Pair | None = None  # "about X": the interval our CI must meet
    claimed_n: int | None = None  # the runs behind claimed_sd / claimed_ci (required with either)
    invert: bool = False  # ratio claims: versus / arm instead of arm / versus (speed-ups)
    reason: str | None = None  # note claims: why the harness cannot test it
    caveat: str | None = None  # what the verdict can and cannot show (printed with it), e.g. "checks the schedule"
    size: str = "extra_subset_size"  # trend claims: the final-table column of the training-set size

    @model_validator(mode="after")
    def _complete(self):
        needs = {"value": ["arm", "unit", "claimed"], "ratio": ["arm", "versus", "unit", "claimed"],
                 "better": ["arm", "versus", "unit"], "best": ["arm", "family", "unit"], "note": ["reason"],
                 "trend": ["arm", "versus", "dataset", "unit"]}[self.kind]
        missing = [k for k in needs if getattr(self, k) is None]
        if missing:
            raise ValueError(f"{self.kind} claim needs {', '.join(missing)}")
        if (self.claimed_sd is not None or self.claimed_ci is not None) and not (self.claimed_n or 0) >= 2:
            raise ValueError("claimed_sd / claimed_ci need claimed_n >= 2 (the runs behind the paper's spread)")
        return self


class ExperimentLedger(Strict):
    """One experiment's claims.yaml."""

    metric: str | None = None  # the eval metric its claims are about (None: any)
    reference: str | None = None  # the variant (or method) its tables take ratios against
    units: dict[str, Unit] = {}  # units of its own, besides units.yaml's
    comparisons: list[Rule] = []
    labels: dict[str, dict[str, str]] = {}  # kind (method, dataset, subset) -> name -> the paper's label
    claims: list[Claim] = []  # a claim's experiment is this one


class Ledger(Strict):
    units: dict[str, Unit]
    comparisons: dict[str, list[Rule]]  # experiment -> its comparison rules
    labels: dict[str, dict[str, dict[str, str]]] = {}  # experiment -> kind -> name -> label
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


def _read(model, path: Path):
    try:
        return model.model_validate(read_yaml(Path(path)) or {})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None


def load_ledger(files: dict[str, Path | None], units: Path = UNITS) -> Ledger:
    """{experiment: its claims.yaml or None} -> the Ledger of those experiments (validated as a whole)."""
    shared = _read(Units, units).units
    merged = {"units": dict(shared), "comparisons": {}, "labels": {}, "reference": {}, "metrics": {}, "claims": []}
    for exp, path in files.items():
        if path is None:
            continue
        part = _read(ExperimentLedger, path)
        for name, unit in part.units.items():
            if name in merged["units"] and merged["units"][name] != unit:
                raise ConfigError(f"{path}: units.{name}: differs from the unit of that name elsewhere")
            merged["units"][name] = unit
        for c in part.claims:
            if c.experiment not in (None, exp):
                raise ConfigError(f"{path}: claim {c.id}: names experiment {c.experiment!r}, not {exp!r}")
            if c.unit is not None and c.unit not in merged["units"]:
                raise ConfigError(f"{path}: claim {c.id}: unknown unit {c.unit!r} (units: {', '.join(merged['units'])})")
            if c.quantity not in QUANTITIES:
                raise ConfigError(f"{path}: claim {c.id}: unknown quantity {c.quantity!r}")
        for r in part.comparisons:
            if unknown := [q for q in r.quantities if q not in QUANTITIES]:
                raise ConfigError(f"{path}: comparisons ({r.family}): unknown quantities {unknown}")
        merged["comparisons"][exp] = part.comparisons
        merged["labels"][exp] = part.labels
        merged["reference"].update({exp: part.reference} if part.reference else {})
        merged["metrics"].update({exp: part.metric} if part.metric else {})
        merged["claims"] += [c.model_copy(update={"experiment": exp}) for c in part.claims]
    try:
        return Ledger.model_validate({**merged, "claims": [c.model_dump() for c in merged["claims"]],
                                      "comparisons": {e: [r.model_dump() for r in rs]
                                                      for e, rs in merged["comparisons"].items()},
                                      "units": {n: u.model_dump() for n, u in merged["units"].items()}})
    except ValidationError as err:
        first = err.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"claims ledger of {', '.join(files)}: {message}") from None


def ledger_for(params) -> Ledger:
    """The ledger of the experiments params.yaml runs (pipeline.config.Params)."""
    return load_ledger({e: params.experiment(e).file("claims.yaml") for e in params.experiments})
