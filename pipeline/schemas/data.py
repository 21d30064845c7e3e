"""The `data:` section: where every source file comes from, how datasets are built from them, subsets."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import DATASET_KINDS, Fraction, PositiveFloat, PositiveInt, Strict

_HASH = re.compile(r"^(sha256:[0-9a-f]{64}|md5:[0-9a-f]{32})$")


class Source(Strict):
    """One downloadable file, addressed by its file name (the mirror is looked up by the same name)."""

    url: str
    hash: str  # "sha256:<64 hex>" or "md5:<32 hex>" (CIFAR publishes MD5 only)

    @field_validator("hash")
    @classmethod
    def _known_hash(cls, v: str) -> str:
        if not _HASH.match(v):
            raise ValueError("must be 'sha256:<64 hex digits>' or 'md5:<32 hex digits>'")
        return v


class Dataset(Strict):
    """A dataset the experiments train on. `files` name entries of `data.sources`."""

    kind: Literal[DATASET_KINDS]
    files: dict[str, str] = Field(default_factory=dict)  # role -> source file name (ptb: train/valid/test; cifar: archive)
    folder: str | None = None  # imagefolder only: a directory with train/<class>/*.png|jpg and test/<class>/*
    # Training subsets, name -> fraction of the training set (0 < f <= 1) or a whole number of samples (>= 2).
    subsets: dict[str, float] = Field(default_factory=dict)

    @field_validator("subsets")
    @classmethod
    def _valid_sizes(cls, v: dict[str, float]) -> dict[str, float]:
        for name, size in v.items():
            if not re.fullmatch(r"[A-Za-z0-9_]+", name):
                raise ValueError(f"subset name {name!r} must be letters, digits or _")
            if size <= 0 or (size > 1 and size != int(size)):
                raise ValueError(f"subset {name!r}: {size} is neither a fraction in (0, 1] nor a whole sample count")
        return v

    @model_validator(mode="after")
    def _needs_inputs(self) -> "Dataset":
        required = {"ptb": {"train", "valid", "test"}, "cifar10": {"archive"}, "cifar100": {"archive"}, "imagefolder": set()}
        missing = required[self.kind] - set(self.files)
        if missing:
            raise ValueError(f"files: missing role(s) {sorted(missing)} for a {self.kind} dataset")
        if self.kind == "imagefolder" and not self.folder:
            raise ValueError("folder: an imagefolder dataset needs a folder")
        if self.kind == "ptb" and self.subsets:
            raise ValueError("subsets: only image datasets have training subsets")
        return self


class SyntheticText(Strict):
    """PTB-like corpus sampled from a random sparse Markov chain (learnable, so perplexity visibly drops)."""

    vocab_size: int = Field(ge=2, le=1_000_000)  # word types; "<eos>" is one of them
    train_tokens: int = Field(ge=2, le=100_000_000)
    valid_tokens: int = Field(ge=2, le=100_000_000)  # a token and its successor: the least an evaluation can score
    test_tokens: int = Field(ge=2, le=100_000_000)
    successors: PositiveInt  # each word is followed by one of this many words: entropy ~ log(successors)
    sentence_length: int = Field(gt=0, le=10_000)  # mean words per line before "<eos>"

    @model_validator(mode="after")
    def _successors_fit(self):
        if self.successors >= self.vocab_size:
            raise ValueError(f"successors {self.successors} needs vocab_size > {self.successors} (the words but "
                             f"<eos> must hold them)")
        return self


class SyntheticImages(Strict):
    """CIFAR-like images: a fixed random pattern per class plus Gaussian noise, uint8 N x 32 x 32 x 3."""

    train_per_class: int = Field(gt=0, le=100_000)  # CIFAR has 5,000 (500 for CIFAR-100)
    test_per_class: int = Field(gt=0, le=100_000)
    noise: PositiveFloat  # noise std relative to the class pattern's contrast
    colour: float = Field(ge=0)  # std of a per-class mean colour (pattern units)
    cifar100_classes: int = Field(ge=2, le=1_000)  # classes of the synthetic stand-in for CIFAR-100

    def classes(self, kind: str) -> int:
        """How many classes the synthetic stand-in of a dataset kind has (CIFAR-10's: 10)."""
        return self.cifar100_classes if kind == "cifar100" else 10


class Synthetic(Strict):
    text: SyntheticText
    images: SyntheticImages


class Data(Strict):
    root: str  # raw downloads (data/raw), prepared arrays (data/prepared), subsets (data/subsets)
    mirror: str | None  # a directory holding source files by name; PIPELINE_DATA_MIRROR overrides
    download_retries: int = Field(ge=0)  # a corrupt or truncated download is fetched again this often
    sources: dict[str, Source]
    datasets: dict[str, Dataset]
    synthetic: Synthetic

    @model_validator(mode="after")
    def _files_are_sources(self) -> "Data":
        for name, ds in self.datasets.items():
            if not re.fullmatch(r"[A-Za-z0-9_]+", name):
                raise ValueError(f"datasets: {name!r}: a dataset name is letters, digits or _ (it names folders and "
                                 f"stages)")
            for role, file in ds.files.items():
                if file not in self.sources:
                    raise ValueError(f"datasets.{name}.files.{role}: {file!r} is not in data.sources")
        return self


__all__ = ["Data", "Dataset", "Source", "Synthetic", "Fraction"]
