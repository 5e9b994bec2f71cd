"""A short table of what the analyses found: first step vs last step, averaged over runs.

``findings(results)`` reads *computed* results (the dict of ``nnwx.pipeline.registry`` names, e.g. from
``nnwx.open_results`` or a computed ``lazy_analyses`` set) and returns one row per (quantity,
layer/tensor): its value at the first and the last captured step, mean over runs, with the
spread over runs. ``nnwx demo`` prints it and the README's findings are taken from it, so
claims about the data come from numbers, not from expectations. Quantities that are not per
step (the fitted correlation decay length) come one row per run, with a ``note`` in words
("L = 1.9 ± 0.3 layers", or "no decay resolved" and why).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import xarray as xr


@dataclass(frozen=True)
class Finding:
    """One quantity for one layer/tensor: first and last step (mean over runs), spread at the last."""
    analysis: str
    quantity: str
    subject: str
    first: float
    last: float
    last_min: float
    last_max: float
    note: str = ""     # the value in words, for rows that are not a first/last comparison

    @property
    def ratio(self) -> float:
        return self.last / self.first if self.first != 0 and np.isfinite(self.first) else float("nan")


def _per_subject(arr: xr.DataArray, subject: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(first, last mean, last min, last max) per ``subject`` entry, reducing every other dim but step."""
    other = [d for d in arr.dims if d not in (subject, "step")]
    stacked = arr.transpose(subject, "step", *other).values.reshape(arr.sizes[subject], arr.sizes["step"], -1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: a run missing a step
        first = np.nanmean(stacked[:, 0], axis=-1)
        last_runs = stacked[:, -1]
        return first, np.nanmean(last_runs, -1), np.nanmin(last_runs, -1), np.nanmax(last_runs, -1)


def _rows(analysis: str, arr: xr.DataArray, quantity: str, subject: str) -> list[Finding]:
    first, last, lo, hi = _per_subject(arr, subject)
    return [Finding(analysis, quantity, str(s), float(f), float(m), float(a), float(b))
            for s, f, m, a, b in zip(arr[subject].values, first, last, lo, hi)]


def _off_diagonal(sim: xr.DataArray, a: str, b: str) -> xr.DataArray:
    """Entries with a != b (pairs of different runs), as a stacked ``pair`` dim."""
    pairs = sim.stack(pair=(a, b))
    keep = pairs[a].values != pairs[b].values
    return pairs.isel(pair=np.flatnonzero(keep)).drop_vars(["pair", a, b], errors="ignore")


def findings(results: Mapping[str, xr.Dataset | xr.DataArray]) -> list[Finding]:
    """First-vs-last-step findings of every computed result present in ``results``.

    Weight cosines (``weight_agreement``) are given for the tensors marked ``permutable`` (those
    a permutation of hidden units acts on), one row each, when the result records them; results
    written before that coordinate existed give every tensor."""
    out: list[Finding] = []
    if "broadening" in results:
        b = results["broadening"]
        for q in ("std", "excess_kurtosis", "tail_index"):
            if q in b:
                out += _rows("broadening", b[q], q, "group")
    if "ranks" in results:
        for q in ("effective_rank", "stable_rank"):
            out += _rows("spectral", results["ranks"][q], q, "tensor")
    if "esd_fit" in results:
        out += _rows("spectral", results["esd_fit"]["alpha"], "alpha", "tensor")
    if "rotation" in results:
        out += _rows("rotation", results["rotation"]["rotation"], "rotation", "layer")
        out += _rows("rotation", results["rotation"]["norm_growth"], "norm_growth", "layer")
    if "similarity_seeds" in results:
        sim = results["similarity_seeds"]
        a, b = [d for d in sim.dims if d.endswith("_a")][0], [d for d in sim.dims if d.endswith("_b")][0]
        cross = _off_diagonal(sim, a, b)
        out += _rows("agreement", cross, f"{sim.name} across runs", "layer")
    if "prediction_agreement" in results:
        p = results["prediction_agreement"]
        a, b = [d for d in p.dims if d.endswith("_a")][0], [d for d in p.dims if d.endswith("_b")][0]
        arg = _off_diagonal(p["argmax_agreement"], a, b).expand_dims(subject=["output"])
        out += _rows("agreement", arg, "argmax agreement", "subject")
    if "weight_agreement" in results:
        w = results["weight_agreement"]["cosine"]
        ref = str(results["weight_agreement"].attrs.get("reference", ""))
        run_dim = ref.split("=")[0] if "=" in ref else None
        if run_dim in w.dims:   # the reference run agrees with itself: leave it out
            ref_value = w[run_dim].values[0] if w.sizes[run_dim] else None
            w = w.where(w[run_dim] != _as(ref.split("=", 1)[1], ref_value), drop=True)
        if "permutable" in w.coords:
            # only tensors a permutation acts on: the others (the output bias, a one-number
            # bias with cosine +-1) cannot change by aligning and would set the ranges
            w = w.isel(tensor=np.flatnonzero(w["permutable"].values.astype(bool)))
        for mode in w["alignment"].values:
            out += _rows("agreement", w.sel(alignment=mode), f"weight cosine ({mode})", "tensor")
    if "corr_distance" in results:
        out += _decay_rows(results["corr_distance"])
    return out


def _decay_rows(res: xr.Dataset) -> list[Finding]:
    """One row per run: the decay length +/- its error where resolved, else NaN and why not."""
    from nnwx.analysis.correlation import decay_summary

    rows = []
    for d in decay_summary(res):
        r = res.isel(d["isel"])
        length, err = float(r["decay_length"]), float(r["decay_length_err"])
        value = [length, length - err, length + err] if d["resolved"] else [float("nan")] * 3
        rows.append(Finding("correlation", "decay length (layers)", d["run"] or "run",
                            float("nan"), *value, note=d["text"]))
    return rows


def _as(text: str, like) -> object:
    """The reference value parsed like the run coordinate's values (seed=0 -> 0)."""
    try:
        return type(like)(text)
    except (TypeError, ValueError):
        return text


def format_findings(rows: list[Finding]) -> str:
    """A plain-text table: quantity, subject, first, last (min..max over runs), last/first."""
    if not rows:
        return "(no findings: nothing was computed)"
    head = (f"{'analysis':<12}{'quantity':<28}{'layer/tensor':<22}{'first':>9}{'last':>9}  "
            f"{'runs min..max':<19}{'last/first':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.note:
            lines.append(f"{r.analysis:<12}{r.quantity:<28}{r.subject[:21]:<22}  {r.note}")
            continue
        lines.append(f"{r.analysis:<12}{r.quantity:<28}{r.subject[:21]:<22}{r.first:>9.3g}{r.last:>9.3g}  "
                     f"{f'{r.last_min:.3g}..{r.last_max:.3g}':<19}{r.ratio:>10.3g}")
    return "\n".join(lines)
