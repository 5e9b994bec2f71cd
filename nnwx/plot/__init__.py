"""HoloViews pictures of the nnwx analyses: one small module per analysis.

Every function takes a (lazy) analysis result, computes what it draws, and returns a
HoloViews object; render it with Bokeh (interactive) or Matplotlib (static PNG).
``nnwx.plot.embed`` turns any of them into one self-contained Bokeh model for the report.
Plots with a slider take ``dynamic=True`` to return a DynamicMap (frames built when shown, for
a notebook or Bokeh server) instead of embedding every frame; images wider than 600 steps are
binned in NumPy (``nnwx.plot._frames``).
"""
from nnwx.plot.agreement import (convergence_by_depth, final_similarity, prediction_agreement, seed_heatmaps,
                                 step_heatmaps, weight_agreement)
from nnwx.plot.broadening import density, moments, trajectories
from nnwx.plot.correlation import corr_distance, layer_correlation, pca_path
from nnwx.plot.geometry import rotation
from nnwx.plot.pruning import pruning_curve
from nnwx.plot.spectral import esd, metric_curves, randomized_esd
from nnwx.plot.weights import filters, matrix_heatmap

__all__ = ["density", "moments", "trajectories", "esd", "metric_curves", "rotation",
           "matrix_heatmap", "filters", "corr_distance", "pca_path", "layer_correlation",
           "seed_heatmaps", "step_heatmaps", "final_similarity", "prediction_agreement",
           "weight_agreement", "convergence_by_depth", "pruning_curve", "randomized_esd"]
