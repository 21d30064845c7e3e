"""The built-in experiments, one package each (pipeline/registry.py finds every sub-package here):

    block_size/   adaptive block size for the PTB LSTM language model
    edba/         Efficient Dynamic Batch Adaptation on CIFAR subsets
    growth/       incrementally growing networks (variance transfer, LR adaptation)
    optimizers/   the rapid-training survey's techniques like for like

A method brought by a user is a package of the same shape outside pipeline/ (the README, "Adding a method").
"""
