"""Synthetic stand-ins for the smoke profile, in exactly the prepared formats of the real data.

    text   (for ptb):  a random sparse Markov chain over vocab_size - 1 words ("w0", "w1", ...); each word has
                       `successors` equally likely successors, so a model that learns the chain reaches a
                       perplexity near `successors` (uniform guessing: vocab_size). Lines of about
                       sentence_length words (1 + Poisson(sentence_length - 1)), then "<eos>", written through the
                       very same code as PTB (ptb.prepare_text), token counts exactly as configured.
    images (for cifar10 / cifar100 / imagefolder): uint8 [N, 32, 32, 3]; each class has a fixed random smooth
                       pattern (a sum of a few low-frequency 2-D cosines per channel, standardised to std 1) and
                       every image is pattern + Gaussian noise of std `noise` (relative to the pattern's std),
                       mapped to pixels as 128 + 48 * value (so +-2.6 std fit in 0..255) and clipped.

Seeded from the fixed data seed DATA_SEED = 0 with purpose "synthetic/<dataset kind>" (pipeline.seeding.rng),
never from a run seed: every run seed and every method trains on the same data, and a given NumPy version gives
the same bytes on every machine. meta.json records a sha256 of the arrays so any difference would be visible.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..seeding import rng
from .cifar import SIDE, write_image_dataset
from .fetch import DataError
from .ptb import SPLITS, prepare_text, tokens_of_lines

DATA_SEED = 0  # the data are part of the benchmark, not of a run: one fixed seed for every run
WAVES = 4  # cosines per channel and class: enough to make 100 classes distinct, few enough to stay smooth
MAX_FREQ = 3  # cycles per image side: low frequencies only, so patterns are smooth blobs, not texture
PIXEL_CENTER, PIXEL_SCALE = 128.0, 48.0
CHUNK = 1000  # images generated at once


# ---- text ---------------------------------------------------------------------------------------------------
def markov_chain(n_words: int, successors: int, gen: np.random.Generator) -> np.ndarray:
    """int64 [n_words, successors]: the allowed next words of each word (distinct, equally likely)."""
    return np.stack([gen.choice(n_words, size=successors, replace=False) for _ in range(n_words)])


def sample_lines(chain: np.ndarray, n_tokens: int, sentence_length: int, gen: np.random.Generator,
                 cover: bool) -> list[str]:
    """Lines of words whose token count (words + one <eos> per line) is exactly n_tokens.

    cover=True starts line j with word perm[j mod n_words], so a corpus of >= n_words lines contains every word
    (the training file defines the vocabulary and must hold all of them); otherwise the first word is uniform.
    """
    n_words, k = chain.shape
    start_order = gen.permutation(n_words)
    lines, used = [], 0
    while used < n_tokens:
        remaining = n_tokens - used
        length = min(1 + int(gen.poisson(sentence_length - 1)), remaining - 1)
        if remaining - (length + 1) == 1:  # a single token left would be a line of only <eos>: absorb it
            length += 1
        word = start_order[len(lines) % n_words] if cover else int(gen.integers(n_words))
        words = []
        for _ in range(length):
            words.append(f"w{word}")
            word = chain[word, gen.integers(k)]
        lines.append(" ".join(words))
        used += length + 1
    return lines


def synthetic_corpus(cfg, kind: str = "ptb") -> dict[str, list[str]]:
    """{split: lines} of the synthetic corpus described by cfg (params.data.synthetic.text)."""
    n_words = cfg.vocab_size - 1  # one type is <eos>
    if n_words < 1 or cfg.successors > n_words:
        raise DataError(f"data.synthetic.text: successors={cfg.successors} needs vocab_size > {cfg.successors}")
    gen = rng(DATA_SEED, f"synthetic/{kind}")
    chain = markov_chain(n_words, cfg.successors, gen)
    budgets = {"train": cfg.train_tokens, "valid": cfg.valid_tokens, "test": cfg.test_tokens}
    return {s: sample_lines(chain, budgets[s], cfg.sentence_length, gen, cover=(s == "train")) for s in SPLITS}


def write_synthetic_text(cfg, out_dir: Path, kind: str = "ptb") -> dict:
    """Write the synthetic corpus in the prepared text format; returns counts + settings for meta.json."""
    corpus = synthetic_corpus(cfg, kind)
    splits = {s: tokens_of_lines(corpus[s], f"synthetic {s}") for s in SPLITS}
    counts = prepare_text(splits, {s: f"synthetic {s}" for s in SPLITS}, out_dir)
    if counts["vocab_size"] != cfg.vocab_size:
        raise DataError(f"data.synthetic.text: train_tokens={cfg.train_tokens} too few to contain all "
                        f"{cfg.vocab_size} types (got {counts['vocab_size']})")
    digest = _sha256(*(np.load(Path(out_dir) / f"{s}.npy") for s in SPLITS))
    return {**counts, "generator": {"data_seed": DATA_SEED, "settings": cfg.model_dump(), "content_sha256": digest}}


# ---- images ---------------------------------------------------------------------------------------------------
def class_patterns(n_classes: int, gen: np.random.Generator, colour: float = 0.0) -> np.ndarray:
    """float64 [n_classes, 32, 32, 3]: one smooth pattern per class (mean 0, std 1) plus a per-class mean colour
    of std `colour`, a cue that global average pooling sees at once (so tiny CNNs learn within a few steps)."""
    coords = np.arange(SIDE) / SIDE  # pixel position in image widths
    rows, cols = np.meshgrid(coords, coords, indexing="ij")  # [32, 32] each
    freqs = gen.integers(-MAX_FREQ, MAX_FREQ + 1, size=(n_classes, 3, WAVES, 2))
    freqs[..., 0] = np.where((freqs[..., 0] == 0) & (freqs[..., 1] == 0), 1, freqs[..., 0])  # no flat waves
    amps = gen.normal(size=(n_classes, 3, WAVES))
    phases = gen.uniform(0, 2 * np.pi, size=(n_classes, 3, WAVES))
    # [C, 3, W, 1, 1] x [32, 32] -> [C, 3, W, 32, 32], summed over W -> [C, 3, 32, 32]
    angle = 2 * np.pi * (freqs[..., 0, None, None] * rows + freqs[..., 1, None, None] * cols) + phases[..., None, None]
    patterns = (amps[..., None, None] * np.cos(angle)).sum(axis=2).transpose(0, 2, 3, 1)  # [C, 32, 32, 3]
    patterns -= patterns.mean(axis=(1, 2, 3), keepdims=True)
    patterns /= patterns.std(axis=(1, 2, 3), keepdims=True)
    return patterns + colour * gen.normal(size=(n_classes, 1, 1, 3))  # [C, 1, 1, 3]: one colour per class


def noisy_images(patterns: np.ndarray, per_class: int, noise: float, gen: np.random.Generator):
    """(x uint8 [C * per_class, 32, 32, 3], y int64) in a random order: pattern of y + N(0, noise^2) per pixel."""
    y = gen.permutation(np.repeat(np.arange(len(patterns), dtype=np.int64), per_class))
    x = np.empty((len(y), SIDE, SIDE, 3), dtype=np.uint8)
    patterns = patterns.astype(np.float32)
    for start in range(0, len(y), CHUNK):  # float32 chunks: bounded memory, no 100 MB temporaries
        part = y[start:start + CHUNK]
        eps = gen.standard_normal(size=(len(part), SIDE, SIDE, 3), dtype=np.float32)
        values = patterns[part] + np.float32(noise) * eps
        x[start:start + CHUNK] = np.clip(np.rint(PIXEL_CENTER + PIXEL_SCALE * values), 0, 255)
    return x, y


def synthetic_images(cfg, n_classes: int, kind: str) -> dict:
    """{"train": (x, y), "test": (x, y), "classes": [...]} from cfg (params.data.synthetic.images)."""
    gen = rng(DATA_SEED, f"synthetic/{kind}")
    patterns = class_patterns(n_classes, gen, cfg.colour)
    train = noisy_images(patterns, cfg.train_per_class, cfg.noise, gen)
    test = noisy_images(patterns, cfg.test_per_class, cfg.noise, gen)
    return {"train": train, "test": test, "classes": [f"class{c}" for c in range(n_classes)]}


def write_synthetic_images(cfg, n_classes: int, kind: str, out_dir: Path) -> dict:
    """Write synthetic images in the prepared image format; returns classes, counts, settings for meta.json."""
    arrays = synthetic_images(cfg, n_classes, kind)
    meta = {"classes": arrays["classes"], **write_image_dataset(arrays, out_dir)}
    digest = _sha256(*arrays["train"], *arrays["test"])
    return {**meta, "generator": {"data_seed": DATA_SEED, "settings": cfg.model_dump(), "content_sha256": digest}}


def _sha256(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
