"""Word-level text corpus (Mikolov's PTB, or the synthetic stand-in) -> vocab.txt + int64 token-id arrays.

    ptb.train.txt / ptb.valid.txt / ptb.test.txt    one sentence per line, words separated by spaces
        -> tokens: the words of every line, then "<eos>" (so a file of L lines and W words gives W + L tokens)
        -> vocab.txt: every type of the TRAIN file plus "<eos>", in order of first appearance (id = line index),
           the same ids as pytorch/examples' word_language_model gives
        -> train.npy, valid.npy, test.npy: int64 [tokens]

Real PTB: 10,000 types (9,999 words + <eos>); 929,589 / 73,760 / 82,430 tokens. The vocabulary comes from the
train file only: PTB is already closed-vocabulary (`<unk>` applied), so a valid/test word missing from it is a
corrupt or different corpus and is an error, not something to map silently to `<unk>`.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .fetch import DataError

EOS = "<eos>"
SPLITS = ("train", "valid", "test")


def tokens_of_lines(lines: Iterable[str], source: str) -> tuple[list[str], int]:
    """The tokens of a corpus (each line's words, then <eos>) and its number of lines."""
    tokens: list[str] = []
    n_lines = 0
    for n_lines, line in enumerate(lines, start=1):
        words = line.split()
        if EOS in words:  # a literal <eos> in the text would silently merge with the line-end marker
            raise DataError(f"{source}: line {n_lines} contains the reserved token {EOS}")
        tokens.extend(words)
        tokens.append(EOS)
    return tokens, n_lines


def read_tokens(path: Path) -> tuple[list[str], int]:
    with open(path, encoding="utf-8") as f:
        return tokens_of_lines(f, Path(path).name)


def build_vocab(train_tokens: list[str]) -> list[str]:
    """Every type of the training tokens, in order of first appearance (<eos> included, as it appears)."""
    return list(dict.fromkeys(train_tokens))


def encode(tokens: list[str], index: dict[str, int], source: str) -> np.ndarray:
    """int64 [len(tokens)] ids; a word outside the training vocabulary is a one-line error naming it."""
    try:
        return np.fromiter((index[t] for t in tokens), dtype=np.int64, count=len(tokens))
    except KeyError as err:
        raise DataError(f"{source}: word {err.args[0]!r} is not in the training vocabulary") from None


def prepare_text(splits: dict[str, tuple[list[str], int]], sources: dict[str, str], out_dir: Path) -> dict:
    """Write vocab.txt and <split>.npy for token lists {split: (tokens, lines)}; returns counts for meta.json."""
    out_dir = Path(out_dir)
    vocab = build_vocab(splits["train"][0])
    index = {word: i for i, word in enumerate(vocab)}
    counts: dict[str, dict[str, int]] = {"tokens": {}, "lines": {}}
    for split in SPLITS:
        tokens, n_lines = splits[split]
        ids = encode(tokens, index, sources[split])
        np.save(out_dir / f"{split}.npy", ids)
        counts["tokens"][split] = int(ids.size)
        counts["lines"][split] = n_lines
    (out_dir / "vocab.txt").write_text("".join(f"{word}\n" for word in vocab), encoding="utf-8")
    return {"vocab_size": len(vocab), "vocab_from": "train", "eos": EOS, **counts}


def prepare_ptb(paths: dict[str, Path], out_dir: Path) -> dict:
    """Prepare the three verified PTB files {split: path} into out_dir; returns counts for meta.json."""
    splits = {split: read_tokens(paths[split]) for split in SPLITS}
    return prepare_text(splits, {split: Path(paths[split]).name for split in SPLITS}, out_dir)


def load_vocab(prepared_dir: Path) -> list[str]:
    """The vocabulary of a prepared text dataset (id = position)."""
    return (Path(prepared_dir) / "vocab.txt").read_text(encoding="utf-8").splitlines()
