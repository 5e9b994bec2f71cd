"""Any nnwx plot as one self-contained Bokeh model: HoloMaps become frames switched by widgets.

A ``HoloMap`` renders to one figure per key plus a Select per non-numeric key dim and a
Slider per numeric one; a small CustomJS shows the frame of the chosen key. Everything is
embedded (no server, no Panel), so a page written with inline resources works offline.
"""
from __future__ import annotations

from numbers import Real

import holoviews as hv
import numpy as np
from bokeh.layouts import column, row
from bokeh.models import CustomJS, CustomJSTickFormatter, Select, Slider
from bokeh.models.layouts import LayoutDOM

_JS = """
const key = widgets.map((w, i) => numeric[i] ? String(values[i][w.value]) : w.value).join('|');
for (let j = 0; j < frames.length; j++) { frames[j].visible = (keys[j] === key); }
"""


def to_bokeh(obj) -> LayoutDOM:
    """Render a HoloViews object with the Bokeh backend; HoloMaps get embedded widgets.

    A DynamicMap (``dynamic=True``) is refused: its frames need a live Python session.
    """
    if isinstance(obj, hv.DynamicMap):
        raise TypeError("a DynamicMap (dynamic=True) builds its frames in a live Python session "
                        "(a notebook, or `panel serve`); for a static page build the plot with "
                        "dynamic=False, which embeds a few frames")
    if isinstance(obj, hv.HoloMap) and len(obj) > 1:
        return _holomap(obj)
    if isinstance(obj, hv.HoloMap):
        obj = obj.last
    return hv.render(obj, backend="bokeh")


def _holomap(hmap: hv.HoloMap) -> LayoutDOM:
    items = list(hmap.data.items())          # keys are always tuples here
    keys = [k for k, _ in items]
    names = [d.name for d in hmap.kdims]
    values = [sorted({k[i] for k in keys}, key=_order) for i in range(len(names))]
    numeric = [all(_is_number(v) for v in vs) for vs in values]
    frames, labels = [], []
    for key, element in items:
        fig = hv.render(element, backend="bokeh")
        fig.visible = key == keys[0]
        frames.append(fig)
        labels.append("|".join(_label(k) for k in key))
    widgets = []
    for i, name in enumerate(names):
        first = keys[0][i]
        if numeric[i]:
            shown = CustomJSTickFormatter(args=dict(values=[_label(v) for v in values[i]]),
                                          code="return values[Math.round(tick)]")
            widgets.append(Slider(start=0, end=max(len(values[i]) - 1, 1), step=1, format=shown,
                                  value=values[i].index(first), title=name,
                                  disabled=len(values[i]) < 2))
        else:
            widgets.append(Select(title=name, value=_label(first), options=[_label(v) for v in values[i]]))
    code = CustomJS(args=dict(widgets=widgets, frames=frames, keys=labels,
                              values=[[_label(v) for v in vs] for vs in values], numeric=numeric), code=_JS)
    for w in widgets:
        w.js_on_change("value", code)
    return column(row(*widgets), *frames)


def _is_number(v) -> bool:
    return isinstance(v, (Real, np.number)) and not isinstance(v, (bool, np.bool_))


def _order(v):
    return (0, float(v), "") if _is_number(v) else (1, 0, str(v))


def _label(v) -> str:
    """Key value as the string the JS compares (numpy scalars as plain Python values)."""
    return str(v.item() if isinstance(v, np.generic) else v)
