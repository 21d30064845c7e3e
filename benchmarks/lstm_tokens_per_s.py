"""Training tokens per second of the PTB LSTM language model at given block sizes, through the real loop.

Runs `pipeline.train.lm.train_epoch` (forward, per-token mean loss, backward, clip, Adam step, hidden state
carried across blocks) on random token ids (speed does not depend on the text) for about `--tokens` training
tokens per block size, after one untimed warm-up block. Defaults: the paper's 2 x 650 model, batch 64,
blocks 16 and 256 (the first and the last block of the doubling schedule), PTB's 10,000-word vocabulary.

    python benchmarks/lstm_tokens_per_s.py                              # ~2-3 minutes on 2 CPU cores
    python benchmarks/lstm_tokens_per_s.py --hidden 200 --blocks 20,35 --batch 20

Prints one JSON line per block size: tokens, seconds, tokens_per_s, steps, and the machine's thread count.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from pipeline.device import select_device, synchronize
from pipeline.models.lstm_lm import LSTMConfig, LSTMLM
from pipeline.seeding import generator
from pipeline.train.lm import LMLoop, train_epoch


def measure(model, optimizer, block: int, batch: int, tokens: int, vocab: int, device) -> dict:
    """Time train_epoch over ceil(tokens / (block * batch)) blocks of random ids; one warm-up block first."""
    steps = max(1, -(-tokens // (block * batch)))
    ids = torch.randint(0, vocab, ((steps * block + 1), batch), generator=generator(0, "benchmark")).to(device)
    loop = LMLoop(epochs=1, batch_size=batch, clip_grad_norm=0.25, loss_reduction="mean", lr_block_scaling="none",
                  lr_reference_block=16, eval_batch_size=10, eval_block=35)  # the paper profile's training settings
    train_epoch(model, ids[: block + 1], block, optimizer, loop)  # warm-up: allocator, kernels
    synchronize(device)
    start = time.perf_counter()
    stats = train_epoch(model, ids, block, optimizer, loop)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"block": block, "batch": batch, "steps": steps, "tokens": stats["tokens"], "seconds": round(seconds, 2),
            "tokens_per_s": round(stats["tokens"] / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=650, help="embedding and hidden size (paper: 650)")
    parser.add_argument("--layers", type=int, default=2, help="LSTM layers (paper: 2)")
    parser.add_argument("--batch", type=int, default=64, help="parallel streams (paper: 64)")
    parser.add_argument("--blocks", default="16,256", help="comma-separated block sizes (doubling: 16 .. 256)")
    parser.add_argument("--tokens", type=int, default=65536, help="training tokens timed per block size")
    parser.add_argument("--vocab", type=int, default=10000, help="vocabulary size (PTB: 10,000)")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when available)")
    args = parser.parse_args()

    device = select_device(args.device)
    cfg = LSTMConfig(vocab_size=args.vocab, embed_size=args.hidden, hidden_size=args.hidden,
                     num_layers=args.layers, dropout=0.0, init_range=0.05)
    for block in (int(b) for b in args.blocks.split(",")):
        model = LSTMLM(cfg, generator(0, "init")).to(device)  # a fresh model and optimizer per block size
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        row = measure(model, optimizer, block, args.batch, args.tokens, args.vocab, device)
        row.update(hidden=args.hidden, layers=args.layers, device=str(device), threads=torch.get_num_threads())
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
