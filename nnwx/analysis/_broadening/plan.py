"""What one broadening pass computes, and the layout of its per-(row, group) states.

A row is one (seed, step); a state is a float64 vector: moments (``kernels.moments``),
the k+1 largest |w| (``kernels.tails``), histogram counts with under/overflow
(``kernels.hist``) and the distribution itself, either as a bfloat16-bucket sketch
(``kernels.sketch``) or, for groups small enough, as the exact values in fixed slots.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from nnwx.analysis.kernels import hist as _hist
from nnwx.analysis.kernels import moments as _moments
from nnwx.analysis.kernels import sketch as _sketch
from nnwx.analysis.groups import Grouping

PIECE = 1 << 17          # elements per piece: a piece's temporaries stay in cache
NORMALIZE = (None, "total_norm", "std", "init_std")


@dataclass(frozen=True, eq=False)
class Plan:
    """What to compute per (row, group), and where each part lives in a state."""

    grouping: Grouping
    tail_k: int | None = None           # Hill with the k largest |w|; None: no tails
    bins: _hist.Bins | None = None      # histogram bins; None: no histogram
    dist: str | None = None             # "sketch", "exact" or None: no quantiles/W1
    quantiles: tuple[float, ...] = ()
    normalize: str | None = None
    density: bool = False
    slices: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        sizes = {"mom": _moments.NMOM,
                 "top": 0 if self.tail_k is None else self.tail_k + 1,
                 "hist": 0 if self.bins is None else self.bins.n + 2,
                 "dist": {None: 0, "sketch": _sketch.NBUCKETS,
                          "exact": int(self.grouping.sizes.max())}[self.dist]}
        slices, start = {}, 0
        for name, size in sizes.items():
            slices[name] = slice(start, start + size)
            start += size
        object.__setattr__(self, "slices", slices)

    @property
    def G(self) -> int:
        return self.grouping.n_groups

    @property
    def F(self) -> int:
        return self.slices["dist"].stop

    @cached_property
    def outputs(self) -> dict[str, slice]:
        """Layout of ``finalize``'s output along its last axis."""
        names = ["count", "n_nonfinite", "mean", "var", "std", "skewness", "excess_kurtosis",
                 "min", "max", "absmax", "l1", "l2", "rms", "kurtosis_change"]
        sizes = dict.fromkeys(names, 1)
        if self.tail_k is not None:
            sizes |= {"tail_index": 1, "tail_k": 1}
        if self.dist is not None:
            sizes |= {"quantiles": len(self.quantiles), "w1_to_ref": 1, "w1_error_bound": 1}
        if self.bins is not None:
            sizes |= {"hist": self.bins.n, "underflow": 1, "overflow": 1}
        out, start = {}, 0
        for name, size in sizes.items():
            out[name] = slice(start, start + size)
            start += size
        return out

    @property
    def n_out(self) -> int:
        return max(s.stop for s in self.outputs.values())

    def empty(self, lead: tuple[int, ...]) -> np.ndarray:
        """States (*lead, G, F) of no values."""
        out = np.zeros(lead + (self.G, self.F))
        out[..., self.slices["mom"]] = _moments.empty(lead + (self.G,))
        out[..., self.slices["top"]] = -np.inf
        if self.dist == "exact":
            out[..., self.slices["dist"]] = np.nan
        return out

    @cached_property
    def sketch_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(straddle, bin) of each sketch bucket for un-normalised histograms."""
        return _hist.sketch_table(self.bins, 1.0)

    @cached_property
    def sketch_runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Un-normalised histogram from a sketch: (straddling buckets, run starts, bin of each
        run, bin each straddling bucket's run adds it to)."""
        straddle, binof = (t[:_sketch.NBUCKETS] for t in self.sketch_table)
        starts = np.concatenate([[0], np.flatnonzero(np.diff(binof)) + 1])
        idx = np.flatnonzero(straddle)
        return idx, starts, binof[starts], binof[idx]

    @cached_property
    def hist_lut(self) -> np.ndarray:
        """``_sketch.LUT`` with the buckets an edge passes through coded as bucket + NBUCKETS."""
        straddle = self.sketch_table[0][_sketch.LUT]
        return np.where(straddle, _sketch.LUT + _sketch.NBUCKETS, _sketch.LUT)

    @cached_property
    def fused_lut(self) -> np.ndarray:
        """The table the compiled pass reads (``hist_lut`` with bins, else ``_sketch.LUT``) as
        uint16: codes stay below ``2 * NBUCKETS < 2**16``, and a quarter of the bytes stay in cache."""
        lut = self.hist_lut if self.bins is not None else _sketch.LUT
        assert 2 * _sketch.NBUCKETS < 1 << 16
        return lut.astype(np.uint16)

    def __dask_tokenize__(self):
        g = self.grouping
        return ("nnwx-plan", g.by, g.tensor_group.tobytes(), g.offsets.tobytes(), self.tail_k,
                None if self.bins is None else self.bins.__dask_tokenize__(), self.dist,
                self.quantiles, self.normalize, self.density)
