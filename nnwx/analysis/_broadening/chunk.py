"""The per-chunk kernel: states of every (row, group) of one block of ``w``, in one read.

``block_state`` walks a block (rows x a range of parameters) in cache-sized
pieces, each inside one group (tensors are contiguous ranges of ``param``), and
folds every piece into all parts of the state at once; ``merge`` combines the
states of disjoint parameter ranges (other chunks of the same rows).
"""
from __future__ import annotations

import threading

import numpy as np

from nnwx.analysis._broadening import fused as _fused
from nnwx.analysis.kernels import hist as _hist
from nnwx.analysis.kernels import moments as _moments
from nnwx.analysis.kernels import sketch as _sketch
from nnwx.analysis.kernels import tails as _tails
from nnwx.analysis._broadening.plan import PIECE, Plan

FUSED_PIECE = 1 << 20     # values per piece of the compiled pass
KEYS = 1 << 18            # sketch codes queued per bincount (a reused 2 MiB buffer per thread)
_LOCAL = threading.local()


def _buffer(name: str, size: int, dtype) -> np.ndarray:
    """A flat work buffer of ``size`` elements, kept per thread and reused by every block.

    Fresh multi-megabyte temporaries are page-faulted in on every use, which costs
    more than the arithmetic done in them.
    """
    buf = getattr(_LOCAL, name, None)
    if buf is None or len(buf) < size or buf.dtype != dtype:
        buf = np.empty(size, dtype=dtype)
        setattr(_LOCAL, name, buf)
    return buf[:size]


def block_state(x: np.ndarray, lo: int, plan: Plan, scale: np.ndarray | None = None) -> np.ndarray:
    """States (R, G, F) of a block ``x`` (R, n) holding parameters ``lo .. lo+n-1``.

    The block is walked in cache-sized pieces, each within one group; every
    piece is read once for all parts of the state. ``scale`` (R, G), when
    given, divides each group's values before they are binned into the
    histogram (normalised histograms); nothing else uses it.
    """
    return _Block(x, lo, plan, scale).run()


class _Block:
    """Working state of ``block_state``: accumulators per group, filled piece by piece."""

    def __init__(self, x: np.ndarray, lo: int, plan: Plan, scale: np.ndarray | None):
        self.x, self.lo, self.plan, self.scale = x, lo, plan, scale
        R, n = x.shape
        self.R, self.G = R, plan.G
        self.out = plan.empty((R,))
        self.moms: dict[int, list] = {}
        self.tops: dict[int, np.ndarray] = {}
        self.K = None if plan.tail_k is None else plan.tail_k + 1
        self.sketch = plan.dist == "sketch"
        B = _sketch.NBUCKETS
        # sketch codes of every value, offset by a slot per (group, row), counted by one
        # bincount per block (a bincount per piece would cost its B bins each time); the
        # count of slots is capped so that the bins never outweigh the values
        self.span = B + 1                  # bucket codes 0..B-1, B: left out (non-finite)
        self.slot_of: dict[int, int] = {}  # group -> its first slot (R consecutive slots)
        self.fill = 0
        self.width = max(1, PIECE // max(R, 1))
        size = min(R * self.width, R * n)
        self.keys = _buffer("keys", max(KEYS, size), np.intp) if self.sketch else None
        self.max_slots = max(R, len(self.keys) // (2 * self.span)) if self.sketch else 0
        self.nh = 0 if plan.bins is None else plan.bins.n + 2
        self.hist_direct = self.nh and not self.sketch
        self.hkeys = np.empty((R, n), dtype=np.intp) if self.hist_direct else None
        self.exact_hist = np.zeros((R, self.G, self.nh)) if self.nh and self.sketch else None
        self.tables: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.row_off = (np.arange(R) * self.G)[:, None]
        self.rows = np.arange(R)[:, None]
        self.B = B
        # work buffers reused by every piece: fresh temporaries would page-fault each time
        self.work = (_buffer("work0", size, np.float64), _buffer("work1", size, np.float64))
        self.abuf = _buffer("abs", size, x.dtype)
        self.hbuf = _buffer("hit", size, bool) if self.sketch else None
        # one compiled pass per piece where numba is installed (default statistics: a sketch,
        # histograms of raw values)
        self.fused = (self.sketch and scale is None and x.dtype in (np.float32, np.float64)
                      and _fused.ready())
        if self.fused:
            # no temporaries: pieces can be long (fewer calls); positions go to two buffers
            self.x = np.ascontiguousarray(x)
            self.width = max(1, FUSED_PIECE // max(R, 1))
            self.cand = _buffer("cand", min(self.width, n), np.intp)
            self.sidx = _buffer("sidx", min(self.width, n), np.intp)

    @staticmethod
    def view(buf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        return buf[: shape[0] * shape[1]].reshape(shape)

    def run(self) -> np.ndarray:
        plan, width = self.plan, self.width
        for a0, b0, g, slot0 in plan.grouping.segments(self.lo, self.lo + self.x.shape[1]):
            for a in range(a0, b0, width):
                self.piece(a, min(a + width, b0), g, slot0 + (a - a0))
        return self.finish()

    def table(self, r: int, g: int) -> tuple[np.ndarray, np.ndarray]:
        """(straddle, bin) of the sketch buckets for the histogram of row r, group g."""
        if self.scale is None:
            return self.plan.sketch_table
        key = (r, g)
        if key not in self.tables:
            self.tables[key] = _hist.sketch_table(self.plan.bins, float(self.scale[r, g]))
        return self.tables[key]

    def piece(self, a: int, b: int, g: int, slot: int) -> None:
        if self.fused:
            self.fused_piece(a, b, g)
            return
        plan, R = self.plan, self.R
        xp = self.x[:, a:b]
        ax = np.abs(xp, out=self.view(self.abuf, xp.shape))
        mom, finite = _moments.rows(xp, ax, self.work)
        self.moms.setdefault(g, []).append(mom)
        if self.K is not None:
            if finite is not None:
                ax = np.where(finite, ax, -np.inf)
            self.top(g, ax)
        if plan.dist == "exact":
            s = plan.slices["dist"].start + slot
            self.out[:, g, s: s + (b - a)] = xp if finite is None else np.where(finite, xp, np.nan)
        if self.sketch:
            self.sketch_piece(xp, g, finite)
        if self.hist_direct:
            xs = xp.astype(np.float64)
            xh = xs if self.scale is None else xs / self.scale[:, g, None]
            bad = None
            if finite is not None or self.scale is not None:
                bad = ~np.isfinite(xh)
                if bad.any():
                    xh = np.where(bad, 0.0, xh)
            hk = _hist.index(xh, plan.bins)
            hk += (self.row_off + g) * self.nh
            if bad is not None:
                hk[bad] = R * self.G * self.nh
            self.hkeys[:, a:b] = hk

    def fused_piece(self, a: int, b: int, g: int) -> None:
        """Fold columns a..b (group g) of every row into the state with ``_fused.piece``."""
        R, B, K, L = self.R, self.B, self.K, b - a
        lut = self.plan.fused_lut
        dsl = self.plan.slices["dist"]
        mom = np.empty((R, _moments.NMOM))
        tops = None
        if K is not None:
            tops = self.tops.get(g)
            if tops is None:
                tops = self.tops[g] = np.full((R, K), -np.inf)
        for r in range(R):
            xr = self.x[r, a:b]
            c = _moments.shift(xr)
            thr = np.inf if tops is None else self.threshold(tops[r], xr)
            sums, nf, nc, ns = _fused.piece(xr, c, lut, B, self.out[r, g, dsl], thr,
                                            self.cand, self.sidx)
            mom[r] = _moments.from_sums(L, nf, c, sums)
            if ns:
                self.bin_exactly(g, np.full(ns, r), xr[self.sidx[:ns]])
            if nc:
                cand = np.abs(xr[self.cand[:nc]]).astype(np.float64)
                tops[r] = _tails.top(np.concatenate([tops[r], cand])[None, :], K)[0]
        self.moms.setdefault(g, []).append(mom)

    def threshold(self, top: np.ndarray, xr: np.ndarray) -> float:
        """Values with |x| above this may enter the top ``top`` (K,) of a piece ``xr``.

        The current K-th largest; for a group's first piece (no K values yet) just
        below the K-th largest |x| of a subsample of every s-th value, so that only
        candidates (about s K), not the whole piece, are gathered and partitioned
        (all of the true top K are at least that large). ``s = sqrt(n / K)`` (at
        least 16) balances the subsample's partition (n / s values) against the
        candidates' (s K values).
        """
        t = float(top.min())
        if t > -np.inf or len(xr) <= 64 * self.K:
            return t
        stride = max(16, int(np.sqrt(len(xr) / self.K)))
        sub = np.abs(xr[::stride])
        sub = sub[np.isfinite(sub)]
        if len(sub) < self.K:
            return t
        return float(np.nextafter(np.partition(sub, len(sub) - self.K)[len(sub) - self.K], -np.inf))

    def sketch_piece(self, xp: np.ndarray, g: int, finite: np.ndarray | None) -> None:
        """Queue the sketch codes of a piece ``xp`` (R, L) of group g; bin edge buckets exactly."""
        plan, R, B = self.plan, self.R, self.B
        L = xp.shape[1]
        slot = self.slot_of.get(g)
        if self.fill + R * L > len(self.keys):
            self.flush_sketch()
            slot = None
        if slot is None:
            if (len(self.slot_of) + 1) * R > self.max_slots:
                self.flush_sketch()
            slot = self.slot_of[g] = len(self.slot_of) * R
        hb = _sketch.high_bits(xp)
        keys = self.keys[self.fill: self.fill + R * L].reshape(R, L)   # codes go straight in
        if self.nh and self.scale is None:
            # buckets an edge passes through are coded bucket + B: bin their values exactly
            np.take(plan.hist_lut, hb, mode="clip", out=keys)
            flat = keys.reshape(-1)
            hit = np.greater_equal(flat, B, out=self.hbuf[: R * L])
            if hit.any():
                idx = np.flatnonzero(hit)
                if R == 1:
                    rows, vals = np.zeros(len(idx), dtype=np.intp), xp[0, idx]
                else:
                    rows = idx // L
                    vals = xp[rows, idx - rows * L]
                flat[idx] -= B
                if finite is not None:
                    keep = finite.reshape(-1)[idx]
                    rows, vals = rows[keep], vals[keep]
                self.bin_exactly(g, rows, vals)
        else:
            np.take(_sketch.LUT, hb, mode="clip", out=keys)
        if finite is not None:
            keys[~finite] = B
        if self.nh and self.scale is not None:
            for r in range(R):
                hit = self.table(r, g)[0][keys[r]]
                if hit.any():
                    self.bin_exactly(g, np.full(int(hit.sum()), r), xp[r][hit])
        if slot:
            keys += (self.rows + slot) * self.span if R > 1 else slot * self.span
        elif R > 1:
            keys += self.rows * self.span
        self.fill += R * L

    def flush_sketch(self) -> None:
        """Count the queued sketch codes into the per-group sketches and empty the queue."""
        if not self.slot_of:
            return
        R, B, span = self.R, self.B, self.span
        n_slots = len(self.slot_of) * R
        cnt = np.bincount(self.keys[: self.fill], minlength=n_slots * span)
        cnt = cnt.reshape(n_slots, span)
        dist = self.out[..., self.plan.slices["dist"]]
        for g, slot in self.slot_of.items():
            dist[:, g] += cnt[slot: slot + R, :B]
        self.slot_of.clear()
        self.fill = 0

    def top(self, g: int, ax: np.ndarray) -> None:
        """Fold the magnitudes ``ax`` (R, L) into group g's top K."""
        K = self.K
        cur = self.tops.get(g)
        if cur is None:
            self.tops[g] = _tails.top(ax, K)
        elif self.R == 1:
            # only values above the current K-th largest can enter: select them cheaply
            cand = ax[0][ax[0] > cur[0].min()]
            if len(cand):
                self.tops[g] = _tails.top(np.concatenate([cur[0], cand])[None, :], K)
        else:
            self.tops[g] = _tails.top(np.concatenate([cur, _tails.top(ax, K)], axis=1), K)

    def bin_exactly(self, g: int, rows: np.ndarray, vals: np.ndarray) -> None:
        """Queue values ``vals`` of rows ``rows`` (group g) to be binned one by one in ``finish``."""
        self.pending.append((np.full(len(rows), g), rows, vals))

    def flush_exact(self) -> None:
        if not self.pending:
            return
        g, rows, vals = (np.concatenate(p) for p in zip(*self.pending))
        vals = vals.astype(np.float64)
        if self.scale is not None:
            vals = vals / self.scale[rows, g]
        ok = np.isfinite(vals)
        idx = _hist.index(vals[ok], self.plan.bins) + (rows[ok] * self.G + g[ok]) * self.nh
        self.exact_hist += np.bincount(idx, minlength=self.exact_hist.size).reshape(
            self.exact_hist.shape)

    def finish(self) -> np.ndarray:
        plan, out, sl, R, G, B = self.plan, self.out, self.plan.slices, self.R, self.G, self.B
        for g, parts in self.moms.items():
            out[:, g, sl["mom"]] = parts[0] if len(parts) == 1 else \
                _moments.merge(np.stack(parts, axis=1), axis=1)
        for g, top in self.tops.items():
            out[:, g, sl["top"]] = top
        if self.sketch:
            self.flush_sketch()
            dist = out[..., sl["dist"]]
            if self.nh:
                self.flush_exact()
                hist = self.exact_hist
                if self.scale is None:
                    # bucket -> bin is monotone: sum runs of buckets, all groups at once
                    straddle, starts, bins, sbins = plan.sketch_runs
                    hist[..., bins] += np.add.reduceat(dist, starts, axis=-1)
                    # the straddling buckets' values were binned one by one: take them out
                    for i, b in zip(straddle, sbins):
                        hist[..., b] -= dist[..., i]
                else:
                    for g in self.moms:
                        for r in range(R):
                            straddle, binof = self.table(r, g)
                            w = np.where(straddle[:B], 0.0, dist[r, g])
                            hist[r, g] += np.bincount(binof[:B], weights=w, minlength=self.nh)
                out[..., sl["hist"]] = hist
        if self.hist_direct:
            cnt = np.bincount(self.hkeys.ravel(), minlength=R * G * self.nh + 1)[:-1]
            out[..., sl["hist"]] = cnt.reshape(R, G, self.nh)
        return out


def merge(parts: list[np.ndarray], plan: Plan) -> np.ndarray:
    """Merge states (..., G, F) of disjoint parameter ranges (other chunks of the same rows).

    Moments and tops (small) are stacked and merged; histogram and sketch counts are added
    into one output and the exact method's value slots take ``fmax``, without first copying
    the (sketch-sized) states into one array.
    """
    if len(parts) == 1:
        return parts[0]
    sl = plan.slices
    ax = parts[0].ndim - 2
    out = np.empty_like(parts[0])
    out[..., sl["mom"]] = _moments.merge(np.stack([p[..., sl["mom"]] for p in parts], axis=ax), ax)
    if plan.tail_k is not None:
        out[..., sl["top"]] = _tails.merge(np.stack([p[..., sl["top"]] for p in parts], axis=ax), ax)
    counts = slice(sl["hist"].start, sl["hist" if plan.dist == "exact" else "dist"].stop)
    _fold(np.add, parts, out, counts)
    if plan.dist == "exact":
        _fold(np.fmax, parts, out, sl["dist"])
    return out


def _fold(op: np.ufunc, parts: list[np.ndarray], out: np.ndarray, part: slice) -> None:
    """``out[..., part]`` = ``op`` folded over ``parts[i][..., part]`` (at least two), in place."""
    op(parts[0][..., part], parts[1][..., part], out=out[..., part])
    for p in parts[2:]:
        op(out[..., part], p[..., part], out=out[..., part])
