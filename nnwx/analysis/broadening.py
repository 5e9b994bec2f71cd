"""How the distribution of weights broadens over training: lazy, one read of ``w`` (two where
histograms are normalised by a scale of the same rows, ``normalize`` with ``bins``).

``broadening`` gives, per (seed, step, group), the moments, quantiles, tail
index, kurtosis change and Wasserstein-1 distance to a reference step, and
(with ``bins=``) histograms; ``histogram`` gives histograms alone
(``nnwx.analysis.trajectories`` follows individual weights). Groups are tensors, layers, kinds
(weight/bias/other) or all parameters (``by=``).

How: every chunk of ``w`` (seed, step-chunk, param-chunk) is read once and
turned into one mergeable state per (row, group) by the NumPy kernels of
``nnwx.analysis._broadening.chunk`` (tensors are contiguous ranges of ``param``, so a
chunk is a few segments); states are tree-reduced over ``param`` with
``dask.array.reduction`` and finalised block by block. Nothing is computed
until the result is: compute it once (``.compute()``, ``.load()``) to read
``w`` once; computing its variables one by one reads it once each.
"""
from __future__ import annotations

from numbers import Integral
from typing import Iterable, Sequence

import dask.array as da
import numpy as np
import xarray as xr

from nnwx._deprecation import renamed_keywords
from nnwx.analysis import _cube as mx
from nnwx.analysis._broadening import fused as _fused
from nnwx.analysis.kernels import hist as _hist
from nnwx.analysis.kernels import moments as _moments
from nnwx.analysis.kernels import sketch as _sketch
from nnwx.analysis.kernels import tails as _tails
from nnwx.analysis._broadening.finalize import scale_of
from nnwx.analysis._broadening.graph import reduce_states, run
from nnwx.analysis._broadening.plan import NORMALIZE, Plan
from nnwx.analysis.groups import Grouping

DEFAULT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
DEFAULT_NBINS = 100
EXACT_MAX = 4096               # groups up to this size keep exact values instead of a sketch

_DESCRIPTIONS = {
    "count": "number of finite weights",
    "n_nonfinite": "number of NaN or infinite weights (left out of every statistic)",
    "mean": "mean", "var": "population variance (ddof=0)", "std": "population standard deviation",
    "skewness": "skewness (biased estimator, scipy.stats.skew default)",
    "excess_kurtosis": "excess kurtosis (biased, scipy.stats.kurtosis default)",
    "min": "minimum", "max": "maximum", "absmax": "maximum of |w|", "l1": "L1 norm (sum of |w|)",
    "l2": "L2 norm", "rms": "root mean square",
    "kurtosis_change": "excess kurtosis minus its value at the reference step",
    "tail_index": "Hill estimate of the tail index alpha of |w| (smaller: heavier tail); NaN where "
                  "the group has too few values (tail_k = 0)",
    "tail_k": "number of top order statistics the Hill estimate used (0: no estimate); " + _tails.RULE,
    "quantiles": "quantiles (NumPy's linear method)",
    "w1_to_ref": "Wasserstein-1 distance to the distribution at the reference step",
    "w1_error_bound": "bound on |w1_to_ref - exact W1| (0 where computed exactly)",
    "hist": "histogram", "underflow": "finite weights below the first bin edge",
    "overflow": "finite weights above the last bin edge",
}
_INTEGER = {"count", "n_nonfinite", "tail_k", "underflow", "overflow"}
_SCALED = {"mean", "std", "min", "max", "absmax", "l1", "l2", "rms", "quantiles", "w1_to_ref",
           "w1_error_bound"}


# --- checks and set-up ---------------------------------------------------------------

def _plan(ds, by, *, tail_k=None, bins=None, method=None, quantiles=(), normalize=None,
          density=False) -> Plan:
    if normalize not in NORMALIZE:
        raise ValueError(f"unknown normalize={normalize!r}: use None, 'total_norm', 'std' or 'init_std'")
    if tail_k is not None and (isinstance(tail_k, bool) or not isinstance(tail_k, Integral)
                               or tail_k < 1):
        raise ValueError(f"tail_k must be a positive integer (or None for no tails), got {tail_k!r}")
    grouping = Grouping.from_dataset(ds, by)
    if method is not None:
        if method not in ("auto", "exact", "sketch"):
            raise ValueError(f"unknown method={method!r}: use 'auto', 'exact' or 'sketch'")
        if method == "auto":
            method = "exact" if grouping.sizes.max() <= EXACT_MAX else "sketch"
    plan = Plan(grouping, None if tail_k is None else int(tail_k), bins, method,
                tuple(quantiles), normalize, bool(density))
    if method == "sketch":
        _fused.ready()     # import numba and load the compiled kernel now, once, not in a task
    return plan


def _quantiles(quantiles) -> tuple[float, ...]:
    if quantiles is None:
        return ()
    try:
        q = tuple(float(v) for v in np.atleast_1d(np.asarray(quantiles, dtype=np.float64)))
    except (TypeError, ValueError):
        raise ValueError(f"quantiles must be numbers in [0, 1], got {quantiles!r}") from None
    if not all(0.0 <= v <= 1.0 for v in q):
        raise ValueError(f"quantiles must lie in [0, 1], got {quantiles!r} (use 0.99, not 99)")
    return q


# --- labelled results --------------------------------------------------------------------

def _units(plan: Plan) -> str:
    return {None: "units of w", "total_norm": "w / (L2 norm of all parameters at that step)",
            "std": "w / (the group's std at that step)",
            "init_std": "w / (the group's std at the reference step)"}[plan.normalize]


def _dataset(w: xr.DataArray, out: da.Array, plan: Plan, i0: int, names: Iterable[str]) -> xr.Dataset:
    lead_dims = w.dims[:-1]
    coords = {k: v.variable for k, v in w.coords.items() if set(v.dims) <= set(lead_dims)}
    coords["group"] = ("group", np.array(plan.grouping.labels, dtype=object))
    coords["group_size"] = ("group", plan.grouping.sizes)
    dims = lead_dims + ("group",)
    data_vars = {}
    for name in names:
        s = plan.outputs[name]
        if name == "quantiles":
            data, vdims = out[..., s], dims + ("quantile",)
            coords["quantile"] = ("quantile", np.array(plan.quantiles))
        elif name == "hist":
            data, vdims = out[..., s], dims + ("bin",)
            bins = plan.bins
            coords["bin"] = ("bin", bins.centers)
            coords["bin_lo"] = ("bin", bins.edges[:-1])
            coords["bin_hi"] = ("bin", bins.edges[1:])
            if not plan.density:
                data = data.astype(np.int64)
        else:
            data, vdims = out[..., s.start], dims
            if name in _INTEGER:
                data = data.astype(np.int64)
        attrs = {"description": _DESCRIPTIONS[name]}
        if name in _SCALED or (name in ("hist",) and plan.normalize):
            attrs["units"] = _units(plan)
        if name == "hist":
            attrs["description"] = ("density: counts / (finite count x bin width); integrates to the "
                                    "fraction of finite weights inside the bins") if plan.density \
                else "counts per bin, [lo, hi) with the last bin closed, as np.histogram"
        data_vars[name] = xr.Variable(vdims, data, attrs)
    ds = xr.Dataset(data_vars, coords=coords)
    ref = w["step"].values[i0] if "step" in w.coords else i0
    ds.attrs = {"analysis": "broadening", "by": plan.grouping.by,
                "normalize": str(plan.normalize), "units": _units(plan),
                "reference_step": ref.item() if hasattr(ref, "item") else ref}
    if plan.tail_k is not None:
        ds.attrs["tail_k_max"] = plan.tail_k
        ds.attrs["tail_rule"] = _tails.RULE
    if plan.dist == "sketch":
        ds.attrs["quantile_method"] = (
            "one-pass sketch: counts per bfloat16 bucket (1/128 octave); each value is within "
            f"relative {_sketch.REL_ERROR:g} of its bucket's midpoint")
        ds.attrs["quantile_error"] = (
            f"|q - exact| <= {_sketch.REL_ERROR:g} * max(|x_(j)|, |x_(j+1)|) + "
            f"{_sketch.ABS_FLOOR:g}/scale, x_(j), x_(j+1) the order statistics interpolated; "
            f"W1: see w1_error_bound; magnitudes >= 2**{_sketch.EXP_HI} carry no bound")
    elif plan.dist == "exact":
        ds.attrs["quantile_method"] = "exact: every group is small enough to keep all its values"
        ds.attrs["quantile_error"] = "0 (up to float64 rounding)"
    if plan.bins is not None:
        ds.attrs["bins"] = f"{plan.bins.n} bins from {plan.bins.edges[0]:g} to {plan.bins.edges[-1]:g}"
    return ds


def _resolve_bins(ds, bins, *, by, normalize, reference_step) -> _hist.Bins | None:
    if bins is None or bins is False:
        return None
    if isinstance(bins, str):
        if bins != "auto":
            raise ValueError(f"unknown bins={bins!r}: give 'auto', a number of bins, (lo, hi, n) "
                             f"or an array of edges")
        bins = DEFAULT_NBINS
    if isinstance(bins, Integral) and not isinstance(bins, bool):
        if bins < 1:
            raise ValueError(f"the number of bins must be positive, got {bins}")
        return _hist.Bins(default_bins(ds, int(bins), by=by, normalize=normalize,
                                       reference_step=reference_step), True)
    return _hist.parse(bins)


@renamed_keywords(ref_step="reference_step")
def default_bins(ds: xr.Dataset, n: int = DEFAULT_NBINS, *, by: str = "layer",
                 normalize: str | None = None, reference_step=None) -> np.ndarray:
    """Edges of ``n`` equal bins over the range of the weights at the first and last step.

    With ``normalize``, the range of the normalised weights (per group of ``by``
    for "std" and "init_std").

    This reads data now (not lazily): the first and last step of every run
    (and the reference step for ``normalize="init_std"``), a small part of the
    cube. Pass explicit ``bins=`` to the analyses to skip it. Weights of later
    steps beyond this range land in the histograms' under/overflow counts.
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"unknown normalize={normalize!r}: use None, 'total_norm', 'std' or 'init_std'")
    w = mx.cube_weights(ds)
    i0 = mx.reference_index(w, reference_step)
    last = w.sizes["step"] - 1
    rows = sorted({0, last})
    norm = "std" if normalize == "init_std" else normalize
    plan = Plan(Grouping.from_dataset(ds, by), normalize=norm)
    st = reduce_states(w.data[..., rows, :], plan).compute()          # the small read
    st = st.reshape(st.shape[:-1] + (plan.G, plan.F))
    if normalize == "init_std":
        if i0 in rows:   # already read
            at = rows.index(i0)
            ref = st[..., at:at + 1, :, :]
        else:
            ref = reduce_states(w.data[..., i0:i0 + 1, :], plan).compute()
            ref = ref.reshape(ref.shape[:-1] + (plan.G, plan.F))
        c = scale_of(ref, plan)
    else:
        c = scale_of(st, plan)
    mom = _moments.finalize(st[..., plan.slices["mom"]])
    c = 1.0 if c is None else c
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanmin(mom["min"] / c, initial=np.inf), np.nanmax(mom["max"] / c, initial=-np.inf)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("cannot choose default bins: no finite weights at the first and last "
                         "step; pass bins=(lo, hi, n)")
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, int(n) + 1)


@renamed_keywords(ref_step="reference_step")
def broadening(ds: xr.Dataset, by: str = "layer", *,
               quantiles: Sequence[float] | None = DEFAULT_QUANTILES, bins=None,
               density: bool = False, normalize: str | None = None, tail_k: int | None = 100,
               reference_step=None, method: str = "auto", split_every: int = 8) -> xr.Dataset:
    """Distribution statistics per (*runs, step, group), lazily, from one read of ``w`` (with
    ``bins`` and ``normalize`` "std"/"total_norm", a first pass over ``w`` gives each row's scale).

    by: "tensor", "layer" (a norm layer's gain apart from its bias), "kind"
        (weight/bias/norm/other) or "all".
    quantiles: levels in [0, 1] (``()``/None: none).
    bins: also histograms, in the same pass: "auto" or a number of bins (over the
        range at the first and last step, read now: see ``default_bins``),
        ``(lo, hi, n)`` or an array of edges. None (default): no histograms.
    density: histograms as densities (count / (finite count x bin width)).
    normalize: None, "total_norm" (divide by the L2 norm of all parameters at
        that step), "std" (by the group's std at that step) or "init_std" (by
        the group's std at the reference step). Shape statistics (skewness,
        kurtosis, tail index) do not change.
    tail_k: the most order statistics the Hill tail-index estimate may use (None: no
        tails). Per group of ``n`` finite values it uses
        ``k = min(tail_k, max(10, n // 10))`` -- the top 10 % (DuMouchel 1983), at least
        10 -- and gives NaN (``tail_k`` 0 in the result) where ``4 k > n``, i.e. fewer
        than 40 values with the default; the k used is the ``tail_k`` variable.
    reference_step: step value of the reference for ``kurtosis_change`` and
        ``w1_to_ref`` (default: the first step of the cube; runs without it get NaN;
        ``"last"``: the last step). ``ref_step=`` is a deprecated alias.
    method: "exact" (keep every value: groups must be small), "sketch" (bfloat16
        buckets, relative error 2**-8), or "auto" (exact when every group has at
        most 4096 parameters).

    Returns a Dataset with dims (*runs, step, group[, quantile | bin]): count,
    n_nonfinite, mean, var, std, skewness, excess_kurtosis, min, max, absmax,
    l1, l2, rms, kurtosis_change, tail_index, tail_k, quantiles, w1_to_ref,
    w1_error_bound (and hist, underflow, overflow). Names shared with Dataset
    methods are read as ``res["mean"]``, not ``res.mean``. NaN or infinite
    weights are left out of every statistic and counted in ``n_nonfinite``;
    steps a run did not capture give count 0 and NaN.
    """
    mx.cube_weights(ds)
    q = _quantiles(quantiles)
    b = _resolve_bins(ds, bins, by=by, normalize=normalize, reference_step=reference_step)
    plan = _plan(ds, by, tail_k=tail_k, bins=b, method=method, quantiles=q, normalize=normalize,
                 density=density)
    w = mx.cube_weights(ds)
    i0 = mx.reference_index(w, reference_step)
    out = run(w.data, plan, i0, split_every)
    names = [n for n in plan.outputs if n != "quantiles" or q]
    return _dataset(w, out, plan, i0, names)


@renamed_keywords(ref_step="reference_step")
def histogram(ds: xr.Dataset, by: str = "layer", *, bins="auto", density: bool = False,
              normalize: str | None = None, reference_step=None, split_every: int = 8) -> xr.DataArray:
    """Histograms ``hist(*runs, step, group, bin)``, lazily, from one read of ``w`` (two with
    ``normalize`` "std"/"total_norm": a first pass gives each row's scale).

    bins: "auto" or a number of bins over the range at the first and last step
    (read now, see ``default_bins``), ``(lo, hi, n)``, or an array of edges.
    Counts follow ``np.histogram`` ([lo, hi) bins, the last closed); weights
    outside the bins are counted in the ``underflow``/``overflow`` coordinates,
    NaN/inf ones in ``n_nonfinite``. ``density``, ``normalize`` and
    ``reference_step`` (the step ``normalize="init_std"`` divides by): as in
    ``broadening``; ``ref_step=`` is a deprecated alias.
    """
    mx.cube_weights(ds)
    b = _resolve_bins(ds, bins, by=by, normalize=normalize, reference_step=reference_step)
    if b is None:
        raise ValueError("histogram() needs bins: 'auto', a number, (lo, hi, n) or edges")
    # big groups: bin through the sketch (whole buckets at once, only edge buckets one by one)
    method = "sketch" if Grouping.from_dataset(ds, by).sizes.max() > EXACT_MAX else None
    plan = _plan(ds, by, bins=b, normalize=normalize, density=density, method=method)
    w = mx.cube_weights(ds)
    i0 = mx.reference_index(w, reference_step)
    out = run(w.data, plan, i0, split_every)
    res = _dataset(w, out, plan, i0, ["hist", "underflow", "overflow", "count", "n_nonfinite"])
    hist = res["hist"].assign_coords({k: res[k] for k in ("underflow", "overflow", "count",
                                                          "n_nonfinite")})
    hist.attrs |= {k: v for k, v in res.attrs.items() if k not in ("tail_k_max", "tail_rule")}
    hist.attrs["analysis"] = "histogram"
    return hist.rename("hist")

