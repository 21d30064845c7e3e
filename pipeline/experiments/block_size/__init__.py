"""Experiment 1: adaptive block size (truncated-BPTT length) for the word-level PTB LSTM language model
(adaptive-block-size.txt). Torch-free: read when params.yaml is loaded; train.py is imported by training jobs only.

    schema.py     Settings: dataset, target, model, train, schedule
    schedule.py  the block-size schedules (fixed, linear, exponential, doubling, plateau)
    train.py      train(job): LSTM LM, optimizer, LR scheduler, block schedule -> pipeline.train.lm.fit
    cost.py       the plan's FLOPs of a run, a tuning job or a step (pipeline/plan.py)
    tables.py    the paper's Table 1 (test perplexity)
    figures.py   the block-size trace
    claims.yaml  the claims ledger's entries; choices.md: the choices the sources leave open
"""
from ...errors import ConfigError
from ...registry import Experiment
from .schema import Settings


def method_name(settings: Settings) -> str:
    """fixed / doubling / linear / exponential / plateau, with "_sum_loss" for the loss summed over the block
    (SGD) and "_lr_x_block" for the lr scaled with the block (the same reading under any optimizer)."""
    kind = "fixed" if settings.schedule.kind == "constant" else settings.schedule.kind
    if settings.train.loss_reduction == "sum_over_block":
        return kind + "_sum_loss"
    return kind + ("_lr_x_block" if settings.train.lr_block_scaling == "linear" else "")


def describe(variant: str, settings: Settings, coords: dict) -> dict:
    return {"method": method_name(settings), "dataset": settings.dataset, "subset": None}


def check(params, variant: str, settings: Settings) -> None:
    """Synthetic text large enough for the variant: two rows of `batch_size` training columns, two tokens to
    evaluate (the real PTB always is)."""
    if not params.synthetic:
        return
    text = params.data.synthetic.text
    if (settings.train.train_tokens or 0) > text.train_tokens:
        raise ConfigError(f"block_size variant {variant!r}: train.train_tokens {settings.train.train_tokens} exceeds "
                          f"the synthetic text's data.synthetic.text.train_tokens {text.train_tokens}")
    train = min(text.train_tokens, settings.train.train_tokens or text.train_tokens)
    if train < 2 * settings.train.batch_size:
        raise ConfigError(f"data.synthetic.text.train_tokens: {train} tokens are too few for block_size variant "
                          f"{variant!r} (batch_size {settings.train.batch_size} needs at least "
                          f"{2 * settings.train.batch_size})")


def cost(settings, sizes, kind):
    """The plan's FLOPs (pipeline/plan.py) from cost.py, imported only when asked: it builds models to count."""
    from .cost import estimate

    return estimate(settings, sizes, kind)


EXPERIMENT = Experiment(name="block_size", settings=Settings, data_kinds=("ptb",), describe=describe, check=check,
                        cost=cost)
