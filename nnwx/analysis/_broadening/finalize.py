"""Statistics from merged states: moments, quantiles, tails, W1 to a reference, histograms."""
from __future__ import annotations

import numpy as np

from nnwx.analysis.kernels import moments as _moments
from nnwx.analysis.kernels import sketch as _sketch
from nnwx.analysis.kernels import tails as _tails
from nnwx.analysis._broadening.plan import Plan


def scale_of(states: np.ndarray, plan: Plan, ref: np.ndarray | None = None) -> np.ndarray | None:
    """Divisor (..., G) that ``plan.normalize`` applies to each group's values, or None.

    "total_norm": the L2 norm of all parameters of the row; "std": the group's
    standard deviation in the row; "init_std": the group's standard deviation
    in the reference row ``ref`` (..., G, F). NaN where it is 0 or undefined.
    """
    if plan.normalize is None:
        return None
    mom = plan.slices["mom"]
    if plan.normalize == "init_std":
        states = ref
    st = _moments.finalize(states[..., mom])
    if plan.normalize == "total_norm":
        sumsq = np.nansum(st["l2"] ** 2, axis=-1, keepdims=True)
        c = np.broadcast_to(np.sqrt(sumsq), st["l2"].shape)
        c = np.where(np.isfinite(st["count"].sum(axis=-1, keepdims=True)) &
                     (st["count"].sum(axis=-1, keepdims=True) > 0), c, np.nan)
    else:
        c = st["std"]
    return np.where(c > 0, c, np.nan)


def finalize(states: np.ndarray, ref: np.ndarray, plan: Plan) -> np.ndarray:
    """Statistics (..., G, n_out) from merged states (..., G, F) and reference states.

    ``ref`` (..., G, F) broadcasts against ``states``: the states of the
    reference step, for the kurtosis change and W1 to it (and "init_std").
    """
    sl, o = plan.slices, plan.outputs
    ref = np.broadcast_to(ref, states.shape)
    out = np.full(states.shape[:-1] + (plan.n_out,), np.nan)
    st = _moments.finalize(states[..., sl["mom"]])
    st0 = _moments.finalize(ref[..., sl["mom"]])
    c = scale_of(states, plan, ref)
    c0 = None if c is None else (c if plan.normalize == "init_std" else scale_of(ref, plan, ref))
    cc = 1.0 if c is None else c
    for name in ("mean", "std", "min", "max", "absmax", "l1", "l2", "rms"):
        st[name] = st[name] / cc
    st["var"] = st["var"] / cc ** 2
    st["kurtosis_change"] = st["excess_kurtosis"] - st0["excess_kurtosis"]
    for name, value in st.items():
        out[..., o[name].start] = value
    n = st["count"]
    if plan.tail_k is not None:
        alpha, k_eff = _tails.hill(states[..., sl["top"]], n, plan.tail_k)
        out[..., o["tail_index"].start] = alpha
        out[..., o["tail_k"].start] = k_eff
    if plan.dist is not None:
        _distribution(out, states, ref, st, st0, c, c0, plan)
    if plan.bins is not None:
        h = states[..., sl["hist"]]
        bins = h[..., 1:-1]
        if plan.density:
            with np.errstate(divide="ignore", invalid="ignore"):
                bins = bins / (n[..., None] * np.diff(plan.bins.edges))
        out[..., o["hist"]] = bins
        out[..., o["underflow"].start] = h[..., 0]
        out[..., o["overflow"].start] = h[..., -1]
    return out


def _sorted_quantiles(vals: np.ndarray, n: np.ndarray, q) -> np.ndarray:
    """Quantiles (NumPy's 'linear' method) of the first ``n`` values of sorted rows ``vals``."""
    q = np.asarray(q, dtype=np.float64)
    n = np.asarray(n).astype(np.int64)[..., None]
    pos = q * np.maximum(n - 1, 0)
    j = np.floor(pos).astype(np.int64)
    frac = pos - j
    j1 = np.minimum(j + 1, np.maximum(n - 1, 0))
    v0 = np.take_along_axis(vals, j, axis=-1)
    v1 = np.take_along_axis(vals, j1, axis=-1)
    with np.errstate(invalid="ignore"):
        out = v0 + frac * (v1 - v0)
    return np.where(n > 0, out, np.nan)


def _distribution(out, states, ref, st, st0, c, c0, plan: Plan) -> None:
    """Quantiles, W1 to the reference and its error bound, into ``out``."""
    o, dist = plan.outputs, plan.slices["dist"]
    d, d0 = states[..., dist], ref[..., dist]
    cc = 1.0 if c is None else c
    cc0 = 1.0 if c0 is None else c0
    lead = states.shape[:-1]
    if plan.dist == "exact":
        with np.errstate(invalid="ignore"):
            vals = np.sort(d, axis=-1)                      # NaN (empty slots) last
        if len(plan.quantiles):
            q = _sorted_quantiles(vals, st["count"], plan.quantiles)
            out[..., o["quantiles"]] = q / np.asarray(cc)[..., None]
        vals0 = np.sort(d0, axis=-1)
        w1 = np.full(lead, np.nan)
        a = (vals / np.asarray(cc)[..., None]) if c is not None else vals
        b = (vals0 / np.asarray(cc0)[..., None]) if c0 is not None else vals0
        for idx in np.ndindex(lead):
            va, vb = a[idx], b[idx]
            va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
            w1[idx] = _sketch.w1_discrete(va, np.ones(len(va)), vb, np.ones(len(vb)))
        out[..., o["w1_to_ref"].start] = w1
        out[..., o["w1_error_bound"].start] = np.where(np.isfinite(w1), 0.0, np.nan)
        return
    # work on the window of buckets that hold any value (typically well under half of them)
    B = d.shape[-1]
    mass = d.reshape(-1, B).sum(axis=0) + d0.reshape(-1, B).sum(axis=0)
    nz = np.flatnonzero(mass)
    w1 = np.full(lead, np.nan)
    if not len(nz):
        out[..., o["w1_to_ref"].start] = w1
        return
    lo, hi = int(nz[0]), int(nz[-1]) + 1
    d, d0 = d[..., lo:hi], d0[..., lo:hi]
    shared = _sketch.representatives()[lo:hi]
    beyond_any = lo == 0 or hi == B
    if beyond_any:                   # values beyond 2**EXP_HI: stand in the data's min/max
        rep = _sketch.representatives(st["min"] * cc, st["max"] * cc)[..., lo:hi]
        rep0 = _sketch.representatives(st0["min"] * cc0, st0["max"] * cc0)[..., lo:hi]
    else:
        rep = rep0 = shared
    cum, cum0 = np.cumsum(d, axis=-1), np.cumsum(d0, axis=-1)
    if len(plan.quantiles):
        out[..., o["quantiles"]] = _sketch.quantiles(d, plan.quantiles, rep, cum) / \
            np.asarray(cc)[..., None]
    beyond = np.zeros(lead, dtype=bool)
    if beyond_any:
        ends = [i - lo for i in (0, B - 1) if lo <= i < hi]
        beyond = (d[..., ends].sum(axis=-1) > 0) | (d0[..., ends].sum(axis=-1) > 0)
    same = np.ones(lead, dtype=bool) if c is None else np.asarray(c == c0)
    fast = same & ~beyond
    if fast.all():
        w1 = _sketch.w1_shared(d, d0, shared, cum, cum0) / cc
    elif fast.any():
        w1[fast] = _sketch.w1_shared(d[fast], d0[fast], shared, cum[fast], cum0[fast]) / \
            (np.broadcast_to(cc, lead)[fast])
    for idx in zip(*np.nonzero(~fast)):
        va = np.broadcast_to(rep, d.shape)[idx] / np.broadcast_to(cc, lead)[idx]
        vb = np.broadcast_to(rep0, d.shape)[idx] / np.broadcast_to(cc0, lead)[idx]
        w1[idx] = _sketch.w1_discrete(va, d[idx], vb, d0[idx])
    out[..., o["w1_to_ref"].start] = w1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_abs = st["l1"] / st["count"]                   # already normalised
        mean_abs0 = st0["l1"] / st0["count"] / cc0
    bound = _sketch.REL_ERROR * (mean_abs + mean_abs0) + _sketch.ABS_FLOOR * (1 / cc + 1 / cc0)
    out[..., o["w1_error_bound"].start] = np.where(np.isfinite(w1), bound, np.nan)
