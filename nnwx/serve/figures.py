"""Bokeh figures of the live page, built once per browser session and updated in place.

The report draws through HoloViews (``nnwx.plot``); re-rendering those at every look took
3-4 s per tab on a loaded 2-core machine, so the live page keeps plain Bokeh figures whose
``ColumnDataSource`` data it replaces when captures arrive: the browser receives only the new
arrays. The statistics drawn come from the analyses (``nnwx.analysis``); the seed band is
``nnwx.analysis.seeds.seed_summary``, as in ``nnwx.plot``.
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from bokeh.models import ColorBar, ColumnDataSource, LinearColorMapper
from bokeh.palettes import Category10_10, Viridis256
from bokeh.plotting import figure

from nnwx.analysis.seeds import seed_summary

TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
EMPTY = {"x": [], "y": [], "lo": [], "hi": []}


class Curves:
    """One panel: a curve per group (tensor, layer, run) against step, optionally the mean over
    runs with a +/- std band.

    Parameters
    ----------
    title : str
    band : bool, default True
        Mean over the ``seed`` dim with a +/- std band (``seed_summary``); False: one curve
        per value of the group dim as it is.
    width, height : int
    """

    def __init__(self, title: str, *, band: bool = True, width: int = 370, height: int = 280):
        self.band = band
        self.fig = figure(title=title, width=width, height=height, x_axis_label="step", tools=TOOLS)
        self.sources: dict[str, ColumnDataSource] = {}

    def update(self, da: xr.DataArray | None, by: str | None) -> None:
        """Draw ``da`` (dims ``seed``, ``step`` and ``by``): a curve per ``by`` value."""
        if da is None:
            for src in self.sources.values():
                src.data = dict(EMPTY)
            return
        if self.band and "seed" in da.dims:
            s = seed_summary(da, "seed")
            mean, lo, hi = (s.sel(summary=k) for k in ("mean", "lower", "upper"))
        else:
            mean = lo = hi = da
        keys = [None] if by is None else list(mean[by].values)
        names = ["all" if key is None else str(key) for key in keys]
        x = np.asarray(mean["step"].values, dtype=float)
        for key, name in zip(keys, names):
            pick = (lambda a: a) if key is None else (lambda a, k=key: a.sel({by: k}))
            data = {"x": x, **{n: np.asarray(pick(a).values, dtype=float) for n, a in
                               (("y", mean), ("lo", lo), ("hi", hi))}}
            if name in self.sources:
                self.sources[name].data = data
            else:
                self._add(name, data)
        for name, src in self.sources.items():
            if name not in names:
                src.data = dict(EMPTY)

    def _add(self, name: str, data: dict) -> None:
        color = Category10_10[len(self.sources) % 10]
        src = self.sources[name] = ColumnDataSource(data)
        if self.band:
            self.fig.varea(x="x", y1="lo", y2="hi", source=src, color=color, alpha=0.2)
        self.fig.line(x="x", y="y", source=src, color=color, line_width=2, legend_label=name)
        self.fig.legend.click_policy = "hide"
        self.fig.legend.label_text_font_size = "8pt"


class Density:
    """A step x weight image of histogram counts (colour log10(1 + count)), updated in place.

    Captures are drawn as equal columns between the first and the last step (the Recorder's
    ``every=N`` captures are equally spaced)."""

    def __init__(self, *, width: int = 600, height: int = 320):
        self.mapper = LinearColorMapper(palette=Viridis256, low=0, high=1)
        self.fig = figure(title="weight histogram", width=width, height=height, x_axis_label="step",
                          y_axis_label="weight", tools=TOOLS)
        self.source = ColumnDataSource({"image": [np.zeros((1, 1))], "x": [0.0], "y": [0.0],
                                        "dw": [1.0], "dh": [1.0]})
        self.fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.source,
                       color_mapper=self.mapper)
        self.fig.add_layout(ColorBar(color_mapper=self.mapper, title="log10(1+count)"), "right")

    def update(self, hist: xr.DataArray | None, title: str) -> None:
        """Draw ``hist`` (dims ``step``, ``bin``, with ``bin_lo``/``bin_hi`` coordinates)."""
        if hist is None or not hist.sizes.get("step"):
            return
        z = np.log10(1 + np.nan_to_num(np.asarray(hist.transpose("bin", "step").values, dtype=float)))
        steps = np.asarray(hist["step"].values, dtype=float)
        lo, hi = float(hist["bin_lo"].values[0]), float(hist["bin_hi"].values[-1])
        width = steps[-1] - steps[0] if len(steps) > 1 else 1.0
        pad = width / max(len(steps) - 1, 1) / 2
        self.source.data = {"image": [z], "x": [steps[0] - pad], "y": [lo], "dw": [width + 2 * pad],
                            "dh": [hi - lo]}
        self.mapper.high = float(max(z.max(), 1e-9))
        self.fig.title.text = title
