"""Experiment 3's figures besides its learning curves: the network's width per epoch.

    CURVES   what growth_curves shows;  FIGURES   name -> pipeline.analysis.figures.Figure
"""
from ...analysis.figures import Figure, trace

CURVES = "test accuracy per epoch, growing vs fixed networks"
FIGURES = {
    "growth_width_trace": Figure("network width per epoch",
                                 trace("growth", "width", "width (fraction of the full network's channels)")),
}
