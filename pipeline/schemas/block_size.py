"""The `block_size:` section of params.yaml: experiment 1, adaptive block size for the PTB LSTM language model.

    block_size:
      dataset, target                      the PTB dataset key; time-to-target threshold on valid_ppl
      model: {embed_size, hidden_size, ...}   the LSTM (vocabulary size comes from the prepared data)
      train: {epochs, batch_size, optimizer, lr, adam_betas, adam_eps, clip_grad_norm, loss_reduction,
              lr_block_scaling, lr_reference_block, lr_schedule: {kind, ..., min_lr}, eval_batch_size, ...}
      schedule_defaults: {b0, every, max_block}   filled into every variant's schedule that has those keys
      variants: {name: {schedule: {kind, ...}, model: {...}, train: {...}}}   the grid; model/train override
      reference: {name: {schedule, model, train}}   complete configurations runnable by name, not in the grid

`resolve(name)` deep-merges a variant over the section's model/train (and the schedule defaults) and validates
the result; every variant and reference is resolved at load, so a bad override fails before any job starts.
A reference configuration is complete by itself (it inherits nothing), so it is the same in every profile.
"""
from __future__ import annotations

import copy
from typing import Annotated, ClassVar, Literal, Union

from pydantic import Field, ValidationError, model_validator

from .base import ExperimentSection, NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, Strict, Target


# ---------------------------------------------------------------------------------------------- model
class LSTMModel(Strict):
    """pipeline.models.lstm_lm.LSTMConfig without vocab_size (read from the prepared vocab.txt)."""

    embed_size: PositiveInt
    hidden_size: PositiveInt
    num_layers: PositiveInt
    dropout: Annotated[float, Field(ge=0, lt=1)]
    init_range: PositiveFloat | None = 0.1  # U(-r, r) for every parameter (Zaremba et al. 2014); None: torch's
    tie_weights: bool = False


# ---------------------------------------------------------------------------------------------- learning rate
class PlateauLR(Strict):
    """torch ReduceLROnPlateau on the validation loss, stepped once per epoch."""

    kind: Literal["plateau"]
    factor: Annotated[float, Field(gt=0, lt=1)]
    patience: NonNegInt  # torch's meaning: the lr drops after patience + 1 epochs without improvement
    threshold: NonNegFloat = 0.0  # absolute improvement in nats that counts (threshold_mode "abs")
    min_lr: NonNegFloat = 0.0  # floor of the (base, unscaled) lr; torch's default 0


class DecayLR(Strict):
    """`constant_epochs` epochs at the initial lr, then lr x factor every epoch (Zaremba small: 4, 0.5).

    lr of 0-based epoch e = lr * factor ** max(0, e + 1 - constant_epochs), as in Zaremba et al.'s code.
    """

    kind: Literal["decay"]
    constant_epochs: NonNegInt
    factor: Annotated[float, Field(gt=0, le=1)]


class ConstantLR(Strict):
    kind: Literal["constant"]


LRSchedule = Annotated[Union[PlateauLR, DecayLR, ConstantLR], Field(discriminator="kind")]


class Train(Strict):
    """The loop's settings. Two ways for the block to scale the step (pipeline/train/lm.py says how they differ):
    `loss_reduction: sum_over_block` (SGD only: Adam divides the scale out, so the schema refuses the pair) and
    `lr_block_scaling: linear` (any optimizer); using both would count the block twice and is refused too."""

    epochs: PositiveInt
    batch_size: PositiveInt  # parallel streams (columns of the batchified training text)
    optimizer: Literal["adam", "sgd"]
    lr: PositiveFloat  # the lr at block lr_reference_block (the only lr unless lr_block_scaling is linear)
    adam_betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    adam_eps: PositiveFloat = 1e-8  # adam only, like adam_betas; torch's defaults
    weight_decay: NonNegFloat = 0.0
    clip_grad_norm: PositiveFloat | None  # max global gradient norm of the loss as backpropagated; None: off
    loss_reduction: Literal["mean", "sum_over_block"] = "mean"
    lr_block_scaling: Literal["none", "linear"] = "none"  # linear: the epoch's lr x block / lr_reference_block
    lr_reference_block: PositiveInt = 16  # the block at which `lr` applies unscaled (lr_block_scaling linear)
    lr_schedule: LRSchedule
    eval_batch_size: PositiveInt = 10  # evaluation streams; every token after the first is scored once
    eval_block: PositiveInt = 35  # evaluation chunk; it changes nothing but speed
    train_tokens: PositiveInt | None = None  # use only the first N training tokens (a budget); None: all

    @model_validator(mode="after")
    def _block_scales_the_step_once(self):
        if self.loss_reduction == "sum_over_block" and self.optimizer == "adam":
            raise ValueError("loss_reduction sum_over_block is inert under adam (it divides the gradient scale "
                             "out); use lr_block_scaling: linear")
        if self.loss_reduction == "sum_over_block" and self.lr_block_scaling != "none":
            raise ValueError("loss_reduction sum_over_block and lr_block_scaling linear both scale the step by "
                             "the block; choose one")
        return self


# ---------------------------------------------------------------------------------------------- block schedules
class _Growing(Strict):
    b0: PositiveInt  # block of epoch 0 (paper §4: 16)
    max_block: PositiveInt  # ceiling of the schedule

    @model_validator(mode="after")
    def _b0_below_max(self):
        if self.b0 > self.max_block:
            raise ValueError(f"b0 {self.b0} exceeds max_block {self.max_block}")
        return self


class Constant(Strict):
    kind: Literal["constant"]
    block: PositiveInt


class Linear(_Growing):
    kind: Literal["linear"]
    step: PositiveInt  # tokens added every `every` epochs
    every: PositiveInt


class Exponential(_Growing):
    kind: Literal["exponential"]
    factor: Annotated[float, Field(gt=1)]
    every: PositiveInt


class Doubling(_Growing):
    kind: Literal["doubling"]
    every: PositiveInt


class Plateau(_Growing):
    kind: Literal["plateau"]
    factor: Annotated[float, Field(gt=1)]
    patience: PositiveInt  # bad epochs in a row before the block grows
    delta: NonNegFloat  # nats per token: a smaller validation-loss gain counts as no gain


Schedule = Annotated[Union[Constant, Linear, Exponential, Doubling, Plateau], Field(discriminator="kind")]


class ScheduleDefaults(Strict):
    """Keys filled into a variant's schedule when it has them and does not set them itself."""

    b0: PositiveInt
    every: PositiveInt
    max_block: PositiveInt


# ---------------------------------------------------------------------------------------------- variants
class Variant(Strict):
    schedule: dict  # {kind: constant|linear|exponential|doubling|plateau, ...}; validated once resolved
    model: dict = Field(default_factory=dict)  # overrides of the section's model
    train: dict = Field(default_factory=dict)  # overrides of the section's train (nested dicts merge)


class Resolved(Strict):
    """A variant's complete configuration: what the experiment module builds and the run's config hash covers."""

    model: LSTMModel
    train: Train
    schedule: Schedule


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ---------------------------------------------------------------------------------------------- the section
class BlockSize(ExperimentSection):
    dataset: str
    target: Target
    model: LSTMModel
    train: Train
    schedule_defaults: ScheduleDefaults
    variants: dict[str, Variant] = Field(min_length=1)
    reference: dict[str, Variant] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _every_variant_resolves(self) -> "BlockSize":
        clash = sorted(set(self.variants) & set(self.reference))
        if clash:
            raise ValueError(f"reference: {clash} are also variant names")
        for name in [*self.variants, *self.reference]:
            self.resolve(name)
        return self

    def variant_names(self) -> list[str]:
        return list(self.variants)

    def reference_names(self) -> list[str]:
        """Configurations runnable by name (`python -m pipeline train block_size <name>`) but not in the grid."""
        return list(self.reference)

    def variant_datasets(self, variant: str) -> list[str]:
        return [self.dataset]

    DATA_KINDS: ClassVar[tuple[str, ...]] = ("ptb",)

    def data_references(self) -> list[tuple[str, str, str | None]]:
        return [("block_size.dataset", self.dataset, None)]

    def resolve(self, name: str) -> Resolved:
        """The complete configuration of a variant or reference; ValueError naming the key path when invalid."""
        if name in self.variants:
            where, v = f"variants.{name}", self.variants[name]
            kind = v.schedule.get("kind")
            fields = _SCHEDULE_FIELDS.get(kind, set())
            defaults = {k: val for k, val in self.schedule_defaults.model_dump().items() if k in fields}
            raw = {"model": _merge(self.model.model_dump(), v.model),
                   "train": _merge(self.train.model_dump(), v.train),
                   "schedule": {**defaults, **v.schedule}}
        elif name in self.reference:
            where, v = f"reference.{name}", self.reference[name]
            raw = {"model": v.model, "train": v.train, "schedule": v.schedule}
        else:
            known = ", ".join([*self.variants, *self.reference])
            raise ValueError(f"block_size: unknown variant {name!r}; known: {known}")
        try:
            return Resolved.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            path = ".".join(str(p) for p in first["loc"])
            msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
            raise ValueError(f"{where}: {path}: {msg}") from None


_SCHEDULE_FIELDS = {kind: set(cls.model_fields) for kind, cls in
                    {"constant": Constant, "linear": Linear, "exponential": Exponential, "doubling": Doubling,
                     "plateau": Plateau}.items()}  # which schedule_defaults keys each kind takes
