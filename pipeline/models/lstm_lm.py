"""Word-level LSTM language model (Zaremba et al. 2014; layout of pytorch/examples word_language_model).

    tokens [T, B] int64 --embedding--> [T, B, E] --dropout--> LSTM x num_layers --> [T, B, H]
        --dropout--> Linear decoder --> logits [T, B, V]

Time-major like pytorch/examples: T is the truncated-BPTT block length (the "block size" of the adaptive
block-size experiment), B the number of parallel streams. The (h, c) state is carried from block to block and
cut from the graph with `detach_hidden` between blocks (truncated BPTT).

Also here: `flops_per_token(cfg, train)`, the analytic cost the training engine logs per token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .flops import TRAIN_TO_FORWARD

Hidden = tuple[torch.Tensor, torch.Tensor]  # (h, c), each [num_layers, B, hidden_size]


# ---------------------------------------------------------------- configuration

@dataclass
class LSTMConfig:
    vocab_size: int              # PTB: 10,000
    embed_size: int              # adaptive-block-size paper: 650 (2 x 650 LSTM, Zaremba's "medium" size)
    hidden_size: int
    num_layers: int
    dropout: float               # on non-recurrent connections; Zaremba: 0 small, 0.5 medium, 0.65 large
    tie_weights: bool = False    # neither source ties; optional (Press & Wolf 2017), needs embed == hidden
    init_range: float | None = 0.1  # every parameter ~ U(-r, r): Zaremba small 0.1, medium 0.05, large 0.04;
    #                                  None = PyTorch's default initialisations

    def validate(self) -> None:
        """One-line ValueError naming the bad field, before any tensor is allocated."""
        for name in ("vocab_size", "embed_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LSTMConfig.{name} must be a positive int, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LSTMConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.init_range is not None and not self.init_range > 0:
            raise ValueError(f"LSTMConfig.init_range must be > 0 or None, got {self.init_range!r}")
        if self.tie_weights and self.embed_size != self.hidden_size:
            raise ValueError(f"LSTMConfig.tie_weights needs embed_size == hidden_size, "
                             f"got {self.embed_size} != {self.hidden_size}")


# ---------------------------------------------------------------- model

class LSTMLM(nn.Module):
    """Embedding -> dropout -> multi-layer LSTM (dropout between layers) -> dropout -> Linear decoder.

    `generator` seeds the initialisation; None draws from torch's global RNG (seeded by the engine).
    Dropout always uses the global RNG (torch offers no generator for it).
    """

    def __init__(self, cfg: LSTMConfig, generator: torch.Generator | None = None):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = nn.Embedding(cfg.vocab_size, cfg.embed_size)
        self.drop = nn.Dropout(cfg.dropout)
        # nn.LSTM applies its dropout to the outputs of every layer but the last (Zaremba's non-recurrent
        # dropout); the last layer's output gets self.drop below. With one layer nn.LSTM's dropout is a no-op.
        self.rnn = nn.LSTM(cfg.embed_size, cfg.hidden_size, cfg.num_layers,
                           dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        if cfg.tie_weights:
            self.decoder.weight = self.encoder.weight  # one [V, E] parameter for input and output (E == H)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise every parameter, drawing from `generator` (None: global RNG).

        init_range r: every weight and bias ~ U(-r, r), as Zaremba's code does for all parameters.
        init_range None: PyTorch's defaults, written out so they too can use `generator`:
        embedding N(0, 1); LSTM U(+-1/sqrt(H)); decoder weight and bias U(+-1/sqrt(fan_in)).
        """
        r = self.cfg.init_range
        with torch.no_grad():
            if r is not None:
                for p in self.parameters():  # a tied weight appears once here
                    nn.init.uniform_(p, -r, r, generator=generator)
                return
            nn.init.normal_(self.encoder.weight, 0.0, 1.0, generator=generator)
            bound = 1.0 / math.sqrt(self.cfg.hidden_size)
            for p in self.rnn.parameters():
                nn.init.uniform_(p, -bound, bound, generator=generator)
            if not self.cfg.tie_weights:
                nn.init.uniform_(self.decoder.weight, -bound, bound, generator=generator)
            nn.init.uniform_(self.decoder.bias, -bound, bound, generator=generator)  # fan_in = hidden_size

    def init_hidden(self, batch_size: int) -> Hidden:
        """Zero (h, c), each [num_layers, batch_size, hidden_size], on the model's device and dtype."""
        weight = self.decoder.weight
        shape = (self.cfg.num_layers, batch_size, self.cfg.hidden_size)
        return (weight.new_zeros(shape), weight.new_zeros(shape))

    def forward(self, tokens: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """tokens [T, B] int64, hidden (h, c) or None for zeros -> (logits [T, B, V], new (h, c))."""
        if tokens.dim() != 2:
            raise ValueError(f"LSTMLM.forward expects tokens [T, B], got shape {tuple(tokens.shape)}")
        if hidden is None:
            hidden = self.init_hidden(tokens.size(1))
        embedded = self.drop(self.encoder(tokens))        # [T, B, E]
        output, hidden = self.rnn(embedded, hidden)       # [T, B, H]; h, c: [L, B, H]
        logits = self.decoder(self.drop(output))          # [T, B, V]
        return logits, hidden


def detach_hidden(hidden: Hidden) -> Hidden:
    """Cut (h, c) from the graph of the previous block (truncated BPTT): values carry over, gradients stop."""
    return tuple(h.detach() for h in hidden)  # type: ignore[return-value]


# ---------------------------------------------------------------- analytic cost

def flops_per_token(cfg: LSTMConfig, train: bool) -> int:
    """FLOPs per token of the matrix products, 1 multiply-add = 2 FLOPs.

    Per layer: the four gates are one [4H, in + H] matrix times [x_t; h_{t-1}] -> 2 * 4 * (in + H) * H, with
    in = E for the first layer and H above. Decoder: 2 * H * V. Ignored (small or free): the embedding (a
    table look-up), biases, gate nonlinearities and elementwise products, dropout, softmax.
    train=True: 3x forward (backward ~ 2x forward), the usual convention (flops.TRAIN_TO_FORWARD).
    """
    cfg.validate()
    h = cfg.hidden_size
    lstm = sum(2 * 4 * ((cfg.embed_size if layer == 0 else h) + h) * h for layer in range(cfg.num_layers))
    decoder = 2 * h * cfg.vocab_size
    forward = lstm + decoder
    return int(TRAIN_TO_FORWARD * forward if train else forward)
