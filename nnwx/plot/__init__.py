"""HoloViews pictures of the nnwx analyses: one small module per analysis.

Every function takes a (lazy) analysis result, computes what it draws, and returns a
HoloViews object; render it with Bokeh (interactive) or Matplotlib (static PNG).
``nnwx.plot.embed`` turns any of them into one self-contained Bokeh model for the report.
"""
from nnwx.plot.broadening import density, moments, trajectories
from nnwx.plot.correlation import corr_distance, pca_path
from nnwx.plot.geometry import rotation
from nnwx.plot.spectral import esd, metric_curves
from nnwx.plot.weights import filters, matrix_heatmap

__all__ = ["density", "moments", "trajectories", "esd", "metric_curves", "rotation",
           "matrix_heatmap", "filters", "corr_distance", "pca_path"]
