"""Experiment 1's figures besides its learning curves: the block size per epoch.

    CURVES   what block_size_curves shows;  FIGURES   name -> pipeline.analysis.figures.Figure
"""
from ...analysis.figures import Figure, trace

CURVES = "validation perplexity per epoch (test perplexity exists only after the last), fixed vs growing block size"
FIGURES = {
    "block_size_block_trace": Figure("block size (BPTT length) per epoch",
                                     trace("block_size", "block_size", "block size (tokens per BPTT segment)")),
}
