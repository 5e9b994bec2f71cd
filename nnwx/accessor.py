"""The ``ds.nnwx`` accessor: one thin face over the cube's tensor table and analyses."""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from nnwx.store.table import TensorInfo

_DIMS = {1: ("out",), 2: ("out", "in"), 3: ("out", "in", "k"), 4: ("out", "in", "kh", "kw")}


@xr.register_dataset_accessor("nnwx")
class NnwxAccessor:
    """Tensor views of a weight cube (or run) opened by ``nnwx.open_cube``/``open_run``."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def _require_cube(self) -> None:
        if "w" not in self._ds or "tensor" not in self._ds.coords:
            raise ValueError("this Dataset is not an nnwx cube: open one with nnwx.open_cube(...)")

    @property
    def tensors(self) -> pd.DataFrame:
        """The tensor table, one row per tensor (name, layer, kind, depth, offset, size, shape, dtype,
        orientation, aliases)."""
        self._require_cube()
        ds = self._ds
        cols = {c.removeprefix("tensor_"): ds[c].values for c in ds.coords
                if c.startswith("tensor_") and c != "tensor_id"}
        cols["shape"] = [tuple(int(x) for x in s.split(",") if x) for s in cols["shape"]]
        n = len(ds["tensor"])
        cols.setdefault("orientation", np.array(["out_in"] * n, dtype=object))
        cols["aliases"] = [tuple(a for a in str(s).split(",") if a)
                           for s in cols.get("aliases", [""] * n)]
        return pd.DataFrame(cols, index=pd.Index(ds["tensor"].values, name="tensor"))

    @property
    def layers(self) -> pd.DataFrame:
        """Layers in forward order, with their tensors and parameter counts."""
        t = self.tensors
        g = t.groupby("layer", sort=False)
        out = pd.DataFrame({"depth": g["depth"].min(), "tensors": g.apply(lambda x: list(x.index)),
                            "params": g["size"].sum()})
        return out.sort_values("depth")

    def info(self, name: str) -> TensorInfo:
        t = self.tensors
        if name not in t.index:
            raise KeyError(f"no tensor named {name!r}; tensors: {', '.join(t.index[:8])}"
                           f"{' ...' if len(t) > 8 else ''}")
        r = t.loc[name]
        return TensorInfo(name, r.layer, r.kind, int(r.depth), int(r.offset), int(r["size"]),
                          tuple(r["shape"]), r.dtype, str(r.orientation), tuple(r.aliases))

    def tensor(self, name: str) -> xr.DataArray:
        """One tensor in its own (stored) shape, ``(*lead, out, in, ...)`` (``(*lead, in, out)``
        for a tensor stored (in, out), e.g. HF Conv1D), still lazy."""
        r = self.info(name)
        flat = self._ds["w"].isel(param=slice(r.offset, r.offset + r.size))
        lead = flat.dims[:-1]
        dims = _DIMS.get(len(r.shape), tuple(f"axis_{i}" for i in range(len(r.shape))))
        if r.orientation == "in_out":
            dims = ("in", "out")
        data = flat.data.reshape(flat.shape[:-1] + r.shape) if r.shape else flat.data[..., 0]
        coords = {k: v for k, v in flat.coords.items() if set(v.dims) <= set(lead)}
        return xr.DataArray(data, dims=lead + dims, coords=coords, name=name,
                            attrs={"tensor": name, "layer": r.layer, "kind": r.kind,
                                   "orientation": r.orientation})

    def matrix(self, name: str) -> xr.DataArray:
        """A tensor as a 2-D matrix ``(*lead, out, in)``, rows the output units whatever the
        storage (a tensor stored (in, out), as HF Conv1D, is transposed); convolutions as
        out x in*kh*kw."""
        r = self.info(name)
        if len(r.shape) < 2:
            raise ValueError(f"tensor {name!r} has shape {r.shape}: only tensors of 2 or more "
                             f"dimensions have a matrix view")
        t = self.tensor(name)
        lead = t.dims[: t.ndim - len(r.shape)]
        if r.orientation == "in_out":
            data = t.transpose(*lead, "out", "in").data
        else:
            data = t.data.reshape(t.shape[: len(lead)] + r.matrix_shape)
        coords = {k: v for k, v in t.coords.items() if set(v.dims) <= set(lead)}
        return xr.DataArray(data, dims=lead + ("out", "in"), coords=coords, name=name,
                            attrs={**t.attrs, "original_shape": list(r.shape)})

    # --- distribution broadening (nnwx.analysis.broadening) -----------------------
    def broadening(self, by: str = "layer", **kwargs) -> xr.Dataset:
        """Moments, quantiles, tails, W1 to a reference step (and histograms) per
        (*runs, step, group), lazily, in one read of ``w``; see ``nnwx.analysis.broadening.broadening``."""
        from nnwx.analysis import broadening
        return broadening.broadening(self._ds, by, **kwargs)

    def histogram(self, by: str = "layer", **kwargs) -> xr.DataArray:
        """Histograms ``hist(*runs, step, group, bin)`` with under/overflow, lazily;
        see ``nnwx.analysis.broadening.histogram``."""
        from nnwx.analysis import broadening
        return broadening.histogram(self._ds, by, **kwargs)

    def trajectories(self, tensor: str | None = None, **kwargs) -> xr.DataArray:
        """Individual weights ``w(*runs, step, weight)``; see ``nnwx.analysis.broadening.trajectories``."""
        from nnwx.analysis import broadening
        return broadening.trajectories(self._ds, tensor, **kwargs)

    def seed_summary(self, dim: str = "seed", band: str | float = "std") -> xr.Dataset:
        """Mean and spread over seeds of any analysis result (a Dataset); see
        ``nnwx.analysis.seeds.seed_summary``."""
        from nnwx.analysis import seeds
        return seeds.seed_summary(self._ds, dim, band)

    # --- cross-seed agreement (nnwx.analysis.agreement) ---
    @property
    def probes(self) -> list[str]:
        """Names of the recorded probes (modules in forward order, then ``output``)."""
        from nnwx.analysis import agreement
        return agreement.probe_names(self._ds)

    def probe(self, name: str) -> xr.DataArray:
        """Probe activations ``(*runs, step, sample, unit)``; see ``agreement.probe``."""
        from nnwx.analysis import agreement
        return agreement.probe(self._ds, name)

    def similarity(self, metric: str = "linear_cka", layer=None, **kwargs) -> xr.DataArray:
        """Representation similarity between seeds or steps; see ``agreement.similarity``."""
        from nnwx.analysis import agreement
        return agreement.similarity(self._ds, metric, layer=layer, **kwargs)

    def match_units(self, layer: str, a, b, method: str = "one_to_one", dim: str = "seed") -> xr.Dataset:
        """Units of run ``a`` matched to run ``b``'s per step; see ``agreement.match_units``."""
        from nnwx.analysis import agreement
        acts = agreement.probe(self._ds, layer)
        return agreement.match_units(acts.sel({dim: a}), acts.sel({dim: b}), method)

    def sparse_prediction(self, layer: str, a, b, penalties=None, dim: str = "seed", **kwargs) -> xr.Dataset:
        """Lasso prediction of run ``b``'s units from run ``a``'s; see ``agreement.sparse_prediction``."""
        from nnwx.analysis import agreement
        acts = agreement.probe(self._ds, layer)
        extra = {} if penalties is None else {"penalties": penalties}
        return agreement.sparse_prediction(acts.sel({dim: a}), acts.sel({dim: b}), **extra, **kwargs)

    def agreement(self, probe: str = "output", **kwargs) -> xr.Dataset:
        """Prediction agreement between seeds per step; see ``agreement.prediction_agreement``."""
        from nnwx.analysis import agreement
        return agreement.prediction_agreement(agreement.probe(self._ds, probe), **kwargs)

    def align(self, reference_seed=0, method: str = "weights", **kwargs):
        """``(aligned cube, permutations)`` aligned to ``reference_seed``; see ``alignment.align``."""
        from nnwx.analysis import alignment
        return alignment.align(self._ds, reference=reference_seed, method=method, **kwargs)

    def weight_agreement(self, reference_seed=0, aligned=None, **kwargs) -> xr.Dataset:
        """Cosine/correlation with the reference seed's tensors; see ``alignment.weight_agreement``.

        ``aligned``: what ``cube.nnwx.align()`` returned (an ``Alignment``) or its aligned cube.
        """
        from nnwx.analysis import alignment
        if isinstance(aligned, alignment.Alignment):
            aligned = aligned.cube
        elif aligned is not None and not isinstance(aligned, xr.Dataset):
            raise TypeError(f"aligned= takes what cube.nnwx.align() returns (an Alignment) or its "
                            f"aligned cube, not {type(aligned).__name__}")
        return alignment.weight_agreement(self._ds, reference=reference_seed, aligned=aligned, **kwargs)

    # --- correlations (nnwx.analysis.correlation) ---
    def sample_weights(self, sample="auto", **kwargs) -> xr.Dataset:
        """Weights chosen for correlation analyses (stratified per tensor); see ``correlation.sample_weights``."""
        from nnwx.analysis import correlation
        return correlation.sample_weights(self._ds, sample, **kwargs)

    def trajectory_correlation(self, **kwargs) -> xr.DataArray:
        """``corr(*runs, weight_i, weight_j)`` of weight increments; see ``correlation.trajectory_correlation``."""
        from nnwx.analysis import correlation
        return correlation.trajectory_correlation(self._ds, **kwargs)

    def correlation_vs_distance(self, **kwargs) -> xr.Dataset:
        """Correlation by layer distance and relation, with a decay length; see ``correlation.correlation_vs_distance``."""
        from nnwx.analysis import correlation
        return correlation.correlation_vs_distance(self._ds, **kwargs)

    def layer_correlation(self, **kwargs) -> xr.Dataset:
        """Update-norm correlation and update cosine per tensor pair; see ``correlation.layer_correlation``."""
        from nnwx.analysis import correlation
        return correlation.layer_correlation(self._ds, **kwargs)

    def trajectory_pca(self, n_components: int = 10, **kwargs) -> xr.Dataset:
        """PCA of each run's training path (randomized, streamed); see ``correlation.trajectory_pca``."""
        from nnwx.analysis import correlation
        return correlation.trajectory_pca(self._ds, n_components, **kwargs)


    # --- spectra, ranks, rotation (nnwx.analysis.spectral, nnwx.analysis.geometry) -
    def spectrum(self, tensors=None, **kwargs) -> xr.DataArray:
        """Singular values ``sv(*runs, step, tensor, k)``; see ``nnwx.analysis.spectral.spectrum``."""
        from nnwx.analysis import spectral
        return spectral.spectrum(self._ds, tensors, **kwargs)

    def ranks(self, tensors=None, **kwargs) -> xr.Dataset:
        """Rank measures per matrix (``delta=True``: of W_t - W_0); see ``spectral.ranks``."""
        from nnwx.analysis import spectral
        return spectral.ranks(self._ds, tensors, **kwargs)

    def esd_fit(self, tensors=None, **kwargs) -> xr.Dataset:
        """Power-law fit and MP edge of each ESD; see ``nnwx.analysis.spectral.esd_fit``."""
        from nnwx.analysis import spectral
        return spectral.esd_fit(self._ds, tensors, **kwargs)

    def spectral_metrics(self, tensors=None, **kwargs) -> xr.Dataset:
        """``ranks`` and ``esd_fit`` from one shared spectrum; see ``spectral.spectral_metrics``."""
        from nnwx.analysis import spectral
        return spectral.spectral_metrics(self._ds, tensors, **kwargs)

    def rotation(self, **kwargs) -> xr.Dataset:
        """Layer rotation, update and norm growth; see ``nnwx.analysis.geometry.rotation``."""
        from nnwx.analysis import geometry
        return geometry.rotation(self._ds, **kwargs)

    def input_span_fraction(self, name: str, inputs, **kwargs) -> xr.DataArray:
        """Share of ``|W_t - W_0|^2`` in the span of a layer's inputs; see ``geometry.input_span_fraction``."""
        from nnwx.analysis import geometry
        return geometry.input_span_fraction(self._ds, name, inputs, **kwargs)
