"""Settings of experiment 1 (adaptive block size for the PTB LSTM language model): one variant's configuration.

    dataset, target                        the PTB dataset key; time-to-target threshold on valid_ppl
    model: {embed_size, hidden_size, ...}  the LSTM (vocabulary size comes from the prepared data)
    train: {epochs, batch_size, optimizer, lr, adam_betas, adam_eps, clip_grad_norm, loss_reduction,
            lr_block_scaling, lr_reference_block, lr_schedule: {kind, ..., min_lr}, eval_batch_size, ...}
    schedule: {kind: constant|linear|exponential|doubling|plateau, ...}   the block-size schedule

The section's defaults, its variants and its reference configurations (complete by themselves, inheriting
nothing, so the same in every profile) follow the grammar of pipeline/variants.py. Types and ranges only: every
value is in params.yaml, with its reason.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from ...schemas.base import (BatchSize, Epochs, NonNegFloat, NonNegInt, PositiveFloat, PositiveInt, Samples, Strict,
                             Target, Width)


# ---------------------------------------------------------------------------------------------- model
class LSTMModel(Strict):
    """pipeline.models.lstm_lm.LSTMConfig without vocab_size (read from the prepared vocab.txt)."""

    embed_size: Width
    hidden_size: Width
    num_layers: int = Field(gt=0, le=64)
    dropout: Annotated[float, Field(ge=0, lt=1)]
    init_range: PositiveFloat | None  # U(-r, r) for every parameter (Zaremba et al. 2014); None: torch's
    tie_weights: bool


# ---------------------------------------------------------------------------------------------- learning rate
class PlateauLR(Strict):
    """torch ReduceLROnPlateau on the validation loss, stepped once per epoch."""

    kind: Literal["plateau"]
    factor: Annotated[float, Field(gt=0, lt=1)]
    patience: NonNegInt  # torch's meaning: the lr drops after patience + 1 epochs without improvement
    threshold: NonNegFloat  # absolute improvement in nats that counts (threshold_mode "abs")
    min_lr: NonNegFloat  # floor of the (base, unscaled) lr


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

    epochs: Epochs
    batch_size: BatchSize  # parallel streams (columns of the batchified training text)
    optimizer: Literal["adam", "sgd"]
    lr: PositiveFloat  # the lr at block lr_reference_block (the only lr unless lr_block_scaling is linear)
    adam_betas: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)]
    adam_eps: PositiveFloat  # adam only, like adam_betas
    weight_decay: NonNegFloat
    clip_grad_norm: PositiveFloat | None  # max global gradient norm of the loss as backpropagated; None: off
    loss_reduction: Literal["mean", "sum_over_block"]
    lr_block_scaling: Literal["none", "linear"]  # linear: the epoch's lr x block / lr_reference_block
    lr_reference_block: PositiveInt  # the block at which `lr` applies unscaled (lr_block_scaling linear)
    lr_schedule: LRSchedule
    eval_batch_size: BatchSize  # evaluation streams; every token after the first is scored once
    eval_block: BatchSize  # evaluation chunk; it changes nothing but speed
    train_tokens: Samples | None  # use only the first N training tokens (a budget); None: all

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


# ---------------------------------------------------------------------------------------------- one variant
class Settings(Strict):
    """One variant's complete configuration (pipeline/variants.py resolves it from the section)."""

    dataset: str  # a ptb-kind key of data.datasets
    target: Target  # time-to-target threshold (a per-epoch history column: valid_ppl)
    model: LSTMModel
    train: Train
    schedule: Schedule
