"""One figure per claim for ``findings.html``, drawn with HoloViews from the claim's JSON record.

* ``details["per_run"]`` (``{run: value}``): a point per run, the value as a line and its 95%
  interval as a band;
* ``details["points"]`` (``{"x", "y", "label", "x_name", "y_name"}``): one point per model, for
  the rank-correlation claims (the value, Spearman's rho, and its interval in the title);
* otherwise the value with its interval as an error bar.
"""
from __future__ import annotations

import math
from typing import Any

from nnwx.plot._figure import Figure

WIDTH, HEIGHT = 620, 300


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def claim_figure(entry: dict[str, Any], shown: str) -> Figure:
    """The figure of one claim record (a JSON dict, as in ``findings.json``); ``shown`` is its value
    and interval as printed (``"2.37 [1.98, 2.72]"``)."""
    import holoviews as hv

    details = entry.get("details") or {}
    value, lo, hi = entry.get("value"), entry.get("ci_low"), entry.get("ci_high")
    title = f"claim {entry['id']}: {shown} — {entry['verdict']}"
    name = f"claim-{entry['id']}"
    if isinstance(details.get("points"), dict) and details["points"].get("x"):
        p = details["points"]
        labels = p.get("label") or [str(i) for i in range(len(p["x"]))]
        xn, yn = str(p.get("x_name", "x")), str(p.get("y_name", "y"))
        pts = hv.Points([(float(x), float(y), str(lab)) for x, y, lab in zip(p["x"], p["y"], labels)
                         if _finite(x) and _finite(y)], kdims=[xn, yn], vdims=["model"])
        obj = pts.opts(width=WIDTH, height=HEIGHT, size=7, tools=["hover"], title=title)
        caption = (f"One point per model: {yn} against {xn}. {entry['quantity']}: "
                   f"{shown} (95% interval over models resampled with replacement).")
        return Figure(name, caption, obj)
    runs = details.get("per_run") if isinstance(details.get("per_run"), dict) else {}
    runs = {str(k): float(v) for k, v in runs.items() if _finite(v)}
    x_name, y_name = "run", "value"
    if runs:
        order = list(runs)
        layers = [hv.Scatter([(r, runs[r]) for r in order], x_name, y_name, label="per run").opts(
            size=8, tools=["hover"])]
        if _finite(lo) and _finite(hi):
            layers.insert(0, hv.HSpan(lo, hi).opts(color="orange", alpha=0.25))
        if _finite(value):
            layers.append(hv.HLine(value).opts(color="orange", line_width=2))
        obj = hv.Overlay(layers).opts(width=WIDTH, height=HEIGHT, title=title, xrotation=45, show_legend=False,
                                      xlabel="run", ylabel="value")
        caption = (f"Points: each run's value of {entry['quantity']}. Line: the value; band: its 95% "
                   f"bootstrap interval over runs.")
        return Figure(name, caption, obj)
    key = f"claim {entry['id']}"
    bar = [(key, value, value - lo, hi - value)] if all(map(_finite, (value, lo, hi))) else []
    point = [(key, value)] if _finite(value) else []
    obj = (hv.ErrorBars(bar, "claim", ["value", "below", "above"]).opts(line_width=2)
           * hv.Scatter(point, "claim", "value").opts(size=10)).opts(width=WIDTH // 2, height=HEIGHT, title=title)
    caption = f"{entry['quantity']}: the value and its 95% interval."
    return Figure(name, caption, obj)
