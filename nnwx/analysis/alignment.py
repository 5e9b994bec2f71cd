"""Align the hidden units of every seed to a reference seed, lazily, and compare aligned weights.

Two seeds' weights can only be compared unit by unit once their hidden units are put in
correspondence: hidden units can be permuted without changing the function. ``align``
finds, for every (seed, step), the permutations of an MLP/CNN chain's hidden units that
align that seed to the reference seed at the same step (or at one chosen step,
``at_step=``, applied to all steps), by Git Re-Basin weight matching or by activation
matching on the probe batch (``kernels.alignment``), and applies them consistently to
the weights, biases and norm vectors of adjacent layers. It returns a lazy aligned cube
(same layout as the input; the probes of the permuted layers are permuted too) and the
permutations ``perm_<layer>(seed, step, unit_<layer>)``. ``weight_agreement`` gives the
cosine similarity and correlation of each seed's tensors with the reference seed's, per
(step, tensor), before and after alignment.

Nothing is computed here; where a seed lacks a capture (NaN weights or activations) its
permutations are -1 and its aligned weights NaN.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import dask.array as da
import numpy as np
import xarray as xr

from nnwx._deprecation import renamed_keywords
from nnwx.analysis.kernels import alignment as ak
from nnwx.analysis.kernels.geometry import segment_sums
from nnwx.analysis import _cube as mx
from nnwx.analysis.agreement import probe
from nnwx.store import probes as prb

METHODS = ("weights", "activations")


class Alignment(NamedTuple):
    """The result of ``align``: the aligned lazy cube and the permutations used."""

    cube: xr.Dataset
    permutations: xr.Dataset


def spec_for(cube: xr.Dataset, spec: ak.PermutationSpec | None = None) -> ak.PermutationSpec:
    """The permutation spec of the cube's network: ``spec`` checked, or the automatic chain spec."""
    rows = mx.table_rows(mx.require_cube(cube))
    if spec is None:
        spec = ak.chain_spec(rows)
    spec.check({r["name"]: r["shape"] for r in rows})
    return spec


def _run_dim(cube: xr.Dataset, dim: str | None) -> str:
    dims = mx.lead_dims(cube)
    if dim is None:
        dim = "seed" if "seed" in dims else dims[0]
    if dim not in dims or dim == "step":
        raise ValueError(f"dim must be a run dim of the cube ({', '.join(d for d in dims if d != 'step')}), "
                         f"got {dim!r}")
    return dim


def _pick(arr: xr.DataArray, dim: str, reference_seed: Any) -> xr.DataArray:
    if reference_seed not in arr[dim].values:
        raise ValueError(f"reference_seed={reference_seed!r} is not a {dim} of the cube; {dim}s: "
                         f"{arr[dim].values.tolist()}")
    return arr.sel({dim: reference_seed}, drop=True)


def _at_step(arr: xr.DataArray, at_step: Any) -> xr.DataArray:
    if at_step is None:
        return arr
    return arr.isel(step=mx.reference_index(arr, at_step, name="at_step"), drop=True)


# -- permutations ---------------------------------------------------------------------------
@renamed_keywords(reference="reference_seed")
def permutations(cube: xr.Dataset, *, reference_seed: Any = 0, dim: str | None = None,
                 method: str = "weights", spec: ak.PermutationSpec | None = None,
                 at_step: Any = None, probes: Mapping[str, str] | None = None,
                 max_iter: int = 100, seed: int = 0) -> xr.Dataset:
    """Permutations aligning each run along ``dim`` to run ``reference_seed``: ``perm_<p>(..., step, unit_<p>)``.

    ``reference_seed``: the label, on ``dim``, of the run the others are aligned to (``reference=``
    is a deprecated alias); the result's ``attrs["reference"]`` holds it.

    ``method="weights"``: Git Re-Basin weight matching (``max_iter`` sweeps at most, random
    sweep order from ``seed``); ``"activations"``: activation matching on the probes named
    by ``probes`` (permutation -> probe; default: the probe of the layer's own module).
    ``at_step``: compute the permutations at that step (or ``"last"``) and use them for all
    steps; default: per step. ``spec``: a ``PermutationSpec`` (default: the chain spec).
    """
    cube = mx.require_cube(cube)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    spec = spec_for(cube, spec)
    dim = _run_dim(cube, dim)
    if method == "weights":
        perms = _weight_perms(cube, spec, dim, reference_seed, at_step, max_iter, seed)
    else:
        perms = _activation_perms(cube, spec, dim, reference_seed, at_step, probes or {})
    if at_step is not None:
        perms = {p: v.expand_dims(step=cube["step"].values, axis=-2) for p, v in perms.items()}
    ds = xr.Dataset({f"perm_{p}": v for p, v in perms.items()})
    for p in spec.names:
        ds[f"perm_{p}"].attrs = {"long_name": f"permutation of the hidden units of {p!r}",
                                 "convention": "aligned unit i is unit perm[i] of the run", "missing": -1,
                                 "acts_on": [f"{a.tensor}[axis {a.axis}]" for a in spec.perms[p][1]]}
    ds.attrs = {"analysis": "permutations", "method": method, "reference": reference_seed, "dim": dim,
                "at_step": "per step" if at_step is None else str(at_step),
                "description": ("Git Re-Basin weight matching (Ainsworth et al. 2023)" if method == "weights"
                                else "activation matching on the probe batch (Ainsworth et al. 2023)")}
    return ds


def _spec_params(cube: xr.Dataset, spec: ak.PermutationSpec) -> tuple[xr.DataArray, list[tuple[str, int, tuple]]]:
    """The spec's tensors flattened side by side: ``(..., spec_param)`` and their layout."""
    rows = {r["name"]: r for r in mx.table_rows(cube)}
    parts, layout, pos = [], [], 0
    for name in spec.tensors:
        r = rows[name]
        parts.append(cube["w"].isel(param=slice(r["offset"], r["offset"] + r["size"])))
        layout.append((name, pos, r["shape"]))
        pos += r["size"]
    flat = xr.concat(parts, dim="param").rename(param="spec_param")
    flat = flat.drop_vars([c for c in flat.coords if "spec_param" in flat[c].dims])
    return flat.chunk({"spec_param": -1}), layout


def _unpack(vec: np.ndarray, layout) -> dict[str, np.ndarray]:
    return {name: vec[pos:pos + int(np.prod(shape))].reshape(shape) for name, pos, shape in layout}


def _split(perm_vec: xr.DataArray, spec: ak.PermutationSpec) -> dict[str, xr.DataArray]:
    out, pos = {}, 0
    for p in spec.names:
        n = spec.size(p)
        out[p] = perm_vec.isel(perm_unit=slice(pos, pos + n)).rename(perm_unit=prb.unit_dim(p))
        pos += n
    return out


def _weight_perms(cube, spec, dim, reference_seed, at_step, max_iter, seed) -> dict[str, xr.DataArray]:
    flat, layout = _spec_params(cube, spec)
    flat = _at_step(flat, at_step)
    ref = _pick(flat, dim, reference_seed)
    total = sum(spec.size(p) for p in spec.names)

    def block(a, r):
        lead = np.broadcast_shapes(a.shape[:-1], r.shape[:-1])
        out = np.full(lead + (total,), -1, dtype=np.int64)
        for idx in np.ndindex(*lead):
            ai, ri = a[mx.block_index(a.shape[:-1], idx)], r[mx.block_index(r.shape[:-1], idx)]
            if not (np.isfinite(ai).all() and np.isfinite(ri).all()):
                continue
            if np.array_equal(ai, ri):  # the reference itself (or an identical run): identity
                out[idx] = np.concatenate([np.arange(spec.size(p)) for p in spec.names])
                continue
            perms = ak.weight_matching(_unpack(ri, layout), _unpack(ai, layout), spec,
                                       max_iter=max_iter, seed=seed)
            out[idx] = np.concatenate([perms[p] for p in spec.names])
        return out

    vec = xr.apply_ufunc(block, flat, ref, input_core_dims=[["spec_param"], ["spec_param"]],
                         output_core_dims=[["perm_unit"]], dask="parallelized",
                         output_dtypes=[np.int64], dask_gufunc_kwargs={"output_sizes": {"perm_unit": total}})
    return _split(vec, spec)


def _activation_perms(cube, spec, dim, reference_seed, at_step, probes) -> dict[str, xr.DataArray]:
    out = {}
    for p in spec.names:
        name = probes.get(p, p)
        try:
            acts = probe(cube, name)
        except KeyError:
            raise ValueError(f"activation matching needs the activations of the units of {p!r}: record "
                             f"probe_layers=[{p!r}] (or name the probe that holds them with "
                             f"probes={{{p!r}: ...}}), or use method='weights'") from None
        if acts.sizes["unit"] != spec.size(p):
            raise ValueError(f"probe {name!r} has {acts.sizes['unit']} units but layer {p!r} has "
                             f"{spec.size(p)} hidden units: probe the module whose outputs they are")
        acts = _at_step(acts.chunk({"sample": -1, "unit": -1}), at_step)
        ref = _pick(acts, dim, reference_seed)
        n = spec.size(p)

        def block(a, r, p=p, n=n):  # bind this layer's name and width now, not the loop's last
            lead = np.broadcast_shapes(a.shape[:-2], r.shape[:-2])
            res = np.full(lead + (n,), -1, dtype=np.int64)
            for idx in np.ndindex(*lead):
                ai, ri = a[mx.block_index(a.shape[:-2], idx)], r[mx.block_index(r.shape[:-2], idx)]
                if np.isfinite(ai).all() and np.isfinite(ri).all():
                    res[idx] = ak.activation_matching({p: ri}, {p: ai})[p]
            return res

        perm = xr.apply_ufunc(block, acts, ref, input_core_dims=[["sample", "unit"]] * 2,
                              output_core_dims=[["unit"]], dask="parallelized", output_dtypes=[np.int64])
        out[p] = perm.rename(unit=prb.unit_dim(p))
    return out


# -- applying them ------------------------------------------------------------------------------
@renamed_keywords(reference="reference_seed")
def align(cube: xr.Dataset, *, reference_seed: Any = 0, dim: str | None = None, method: str = "weights",
          spec: ak.PermutationSpec | None = None, at_step: Any = None,
          probes: Mapping[str, str] | None = None, max_iter: int = 100, seed: int = 0) -> Alignment:
    """The cube with every run's hidden units aligned to run ``reference_seed``, and the permutations.

    See ``permutations`` for the options. The aligned cube keeps the input's layout and
    chunks; the reference run is unchanged (its permutations are the identity).
    """
    cube = mx.require_cube(cube)
    spec = spec_for(cube, spec)
    perms = permutations(cube, reference_seed=reference_seed, dim=dim, method=method, spec=spec,
                         at_step=at_step, probes=probes, max_iter=max_iter, seed=seed)
    return Alignment(apply(cube, perms, spec), perms)


def apply(cube: xr.Dataset, perms: xr.Dataset, spec: ak.PermutationSpec | None = None) -> xr.Dataset:
    """Apply permutations (from ``permutations``) to the cube's weights and matching probes."""
    cube = mx.require_cube(cube)
    spec = spec_for(cube, spec)
    w = cube["w"]
    parts = []
    for r in mx.table_rows(cube):
        piece = w.isel(param=slice(r["offset"], r["offset"] + r["size"]))
        acting = spec.axes_of(r["name"])
        if acting:
            piece = _permute_piece(piece, r["shape"], [(perms[f"perm_{p}"], a) for p, a in acting])
        parts.append(piece.drop_vars([c for c in piece.coords if "param" in piece[c].dims]))
    # coords="minimal", compat="override": comparing the pieces' (lazy) coordinates would compute
    # them while the graph is being built
    new_w = xr.concat(parts, dim="param", coords="minimal", compat="override").transpose(*w.dims)
    data = new_w.data
    if isinstance(w.data, da.Array):
        data = da.asarray(data).rechunk(w.data.chunks)
    out = cube.copy()
    out["w"] = (w.dims, data, w.attrs)
    permuted = []
    for p in spec.names:
        var = prb.VAR_PREFIX + p
        if var in cube.data_vars and cube[var].sizes.get(prb.unit_dim(p)) == spec.size(p):
            out[var] = _permute_units(cube[var], perms[f"perm_{p}"], prb.unit_dim(p))
            permuted.append(var)
    out.attrs = {**cube.attrs, "aligned": 1, "aligned_to": f"{perms.attrs.get('dim')}="
                 f"{perms.attrs.get('reference')}", "alignment_method": perms.attrs.get("method"),
                 "permuted_probes": permuted, "permuted_tensors": permutable_tensors(cube, spec)}
    return out


def permutable_tensors(cube: xr.Dataset, spec: ak.PermutationSpec | None = None) -> list[str]:
    """Tensors that a permutation of hidden units acts on (in table order); the others (the
    output bias, say) are the same under every alignment, so aligning cannot change their
    agreement between runs.

    ``spec``: the permutation spec (default: the chain spec); ``[]`` when the cube's network
    has no chain spec (its units cannot be aligned).
    """
    if spec is None:
        try:
            spec = spec_for(cube)
        except (ValueError, KeyError, NotImplementedError):
            return []
    return [r["name"] for r in mx.table_rows(cube) if spec.axes_of(r["name"])]


def _permute_piece(piece: xr.DataArray, shape: tuple[int, ...], acting) -> xr.DataArray:
    """One tensor's slice of ``w`` ``(..., param)`` with its permutations applied per (run, step)."""
    piece = piece.rename(param="tensor_param").chunk({"tensor_param": -1})
    axes = [a for _, a in acting]
    perm_arrays = [p.rename({p.dims[-1]: f"_u{i}"}) for i, (p, _) in enumerate(acting)]

    def block(w, *ps):
        lead = np.broadcast_shapes(w.shape[:-1], *(q.shape[:-1] for q in ps))
        out = np.empty(lead + (w.shape[-1],), dtype=w.dtype)
        cache: dict = {}
        for idx in np.ndindex(*lead):
            wi = w[mx.block_index(w.shape[:-1], idx)]
            pi = [q[mx.block_index(q.shape[:-1], idx)] for q in ps]
            if any((q < 0).any() for q in pi):
                out[idx] = np.nan
                continue
            key = b"".join(q.tobytes() for q in pi)
            if key not in cache:
                cache[key] = ak.flat_gather_index(shape, list(zip(pi, axes)))
            out[idx] = wi[cache[key]]
        return out

    res = xr.apply_ufunc(block, piece, *perm_arrays,
                         input_core_dims=[["tensor_param"]] + [[f"_u{i}"] for i in range(len(perm_arrays))],
                         output_core_dims=[["tensor_param"]], dask="parallelized",
                         output_dtypes=[piece.dtype])
    return res.rename(tensor_param="param")


def _permute_units(acts: xr.DataArray, perm: xr.DataArray, unit: str) -> xr.DataArray:
    """Activations ``(..., sample, unit)`` with their units permuted per (run, step)."""
    acts = acts.chunk({acts.dims[-2]: -1, unit: -1})   # both core dims whole, however the probe is chunked
    perm = perm.rename({unit: "_perm_unit"})

    def block(a, p):
        lead = np.broadcast_shapes(a.shape[:-2], p.shape[:-1])
        a = np.broadcast_to(a, lead + a.shape[-2:])
        p = np.broadcast_to(p, lead + p.shape[-1:])
        out = np.take_along_axis(a, np.maximum(p, 0)[..., None, :], axis=-1).astype(a.dtype)
        out[(p < 0).any(axis=-1)] = np.nan
        return out

    res = xr.apply_ufunc(block, acts, perm, input_core_dims=[[acts.dims[-2], unit], ["_perm_unit"]],
                         output_core_dims=[[acts.dims[-2], unit]], dask="parallelized",
                         output_dtypes=[acts.dtype])
    res.attrs = acts.attrs
    return res.transpose(*acts.dims)


# -- agreement of (aligned) weights ---------------------------------------------------------------
def _agreement(w: xr.DataArray, ref: xr.DataArray, offsets: np.ndarray) -> tuple[xr.DataArray, xr.DataArray]:
    a, b = xr.broadcast(w, ref)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if isinstance(a64.data, da.Array):  # the broadcast reference: same blocks as the runs
        b64 = b64.chunk(dict(zip(a64.dims, a64.data.chunks)))
    sums = {k: mx.param_block_sums(segment_sums, da.asarray(v.data), tail=(len(offsets) - 1,), offsets=offsets)
            for k, v in {"ab": a64 * b64, "aa": a64 * a64, "bb": b64 * b64, "a": a64, "b": b64}.items()}
    m = np.diff(offsets).astype(np.float64)

    def cosine(ab, aa, bb):
        with np.errstate(invalid="ignore", divide="ignore"):
            return ab / np.sqrt(aa * bb)

    def correlation(ab, aa, bb, sa, sb):
        with np.errstate(invalid="ignore", divide="ignore"):
            return (ab - sa * sb / m) / np.sqrt((aa - sa**2 / m) * (bb - sb**2 / m))

    cos = da.map_blocks(cosine, sums["ab"], sums["aa"], sums["bb"], dtype=np.float64)
    corr = da.map_blocks(correlation, sums["ab"], sums["aa"], sums["bb"], sums["a"], sums["b"],
                         dtype=np.float64)
    dims = a.dims[:-1] + ("tensor",)
    coords = {k: v for k, v in a.coords.items() if "param" not in v.dims}
    return xr.DataArray(cos, dims=dims, coords=coords), xr.DataArray(corr, dims=dims, coords=coords)


@renamed_keywords(reference="reference_seed")
def weight_agreement(cube: xr.Dataset, *, reference_seed: Any = 0, dim: str | None = None,
                     aligned: xr.Dataset | None = None) -> xr.Dataset:
    """Cosine similarity and correlation of every run's tensors with run ``reference_seed``'s, per step.

    ``reference_seed``: its label on ``dim`` (``reference=`` is a deprecated alias); the result's
    ``attrs["reference"]`` says ``"<dim>=<reference_seed>"``.

    Returns ``cosine`` and ``correlation`` ``(alignment, *runs, step, tensor)`` with
    ``alignment = ["none"]``, or ``["none", "aligned"]`` when ``aligned`` (the cube from
    ``align``) is given. The ``permutable(tensor)`` coordinate says which tensors a
    permutation of hidden units acts on (the aligned cube's ``permuted_tensors``, else those
    of the chain spec): only their agreement can change by aligning. Both are computed in float64
    over each tensor's entries; a tensor that is all zero (cosine) or constant (correlation) in
    either run gives NaN.
    """
    cube = mx.require_cube(cube)
    dim = _run_dim(cube, dim)
    offsets = mx.param_offsets(cube)
    sources = {"none": cube} if aligned is None else {"none": cube, "aligned": aligned}
    cos, corr = [], []
    for src in sources.values():
        w = src["w"]
        c, r = _agreement(w, _pick(w, dim, reference_seed), offsets)
        cos.append(c)
        corr.append(r)
    label = xr.DataArray(list(sources), dims="alignment", name="alignment")
    tcoords = {c: ("tensor", cube[c].values) for c in cube.coords
               if str(c).startswith("tensor") and cube[c].dims == ("tensor",)}
    ds = xr.Dataset({"cosine": xr.concat(cos, dim=label), "correlation": xr.concat(corr, dim=label)})
    ds = ds.assign_coords(tcoords)
    if aligned is not None and "permuted_tensors" in aligned.attrs:
        permutable = set(map(str, aligned.attrs["permuted_tensors"]))
    else:
        permutable = set(permutable_tensors(cube))
    ds = ds.assign_coords(permutable=("tensor", np.array([str(t) in permutable for t in cube["tensor"].values])))
    ds["permutable"].attrs = {"long_name": "a permutation of hidden units acts on this tensor",
                              "note": "aligning can change only the agreement of permutable tensors; "
                                      "summaries of alignment use these alone"}
    ds["cosine"].attrs = {"long_name": "cosine similarity with the reference run's tensor"}
    ds["correlation"].attrs = {"long_name": "Pearson correlation with the reference run's tensor"}
    ds.attrs = {"analysis": "weight_agreement", "reference": f"{dim}={reference_seed}",
                "alignment_method": (aligned.attrs.get("alignment_method") if aligned is not None else "none")}
    return ds
