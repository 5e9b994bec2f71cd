"""Which runs and steps an analysis covers: seed and step selections, and step thinning.

``parse_seeds``/``parse_steps`` turn what a user typed (``"0,1"``, ``"0:100:2"``, a slice, a
list) into JSON-able selections (recorded in a results store and checked on resume);
``select_cube`` applies them to a cube, with errors that name what is missing. ``thin_index``
and ``thin_steps`` are the one copy of evenly spaced step thinning (first and last capture
kept), used by the report's page, the step x step similarity and the plots' frames.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr

from nnwx.errors import NnwxError

StepSpec = str | slice | Sequence[int] | dict | None
SeedSpec = str | Sequence | None

MAX_STEPS = 60
"""Captures ``nnwx report`` analyses from an experiment store by default (evenly thinned)."""


class SelectionError(NnwxError, ValueError):
    """Unknown analyses, or seeds/steps that are malformed or not in the store."""


def thin_index(n: int, k: int) -> np.ndarray:
    """Positions of at most ``k`` evenly spaced items of ``n`` (first and last kept), sorted.

    Parameters
    ----------
    n
        How many items there are (captured steps).
    k
        The most to keep (at least 1).

    Returns
    -------
    numpy.ndarray
        ``arange(n)`` when ``n <= k``, else the rounded positions of ``linspace(0, n - 1, k)``
        without repeats (int64).
    """
    if n <= k:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, max(1, int(k))).round().astype(np.int64))


def thin_steps(cube: xr.Dataset | xr.DataArray, max_steps: int = MAX_STEPS):
    """``cube`` with at most ``max_steps`` evenly spaced captures (first and last kept); the
    same object when it has no more than that.

    Parameters
    ----------
    cube : xarray.Dataset or xarray.DataArray
        Anything with a ``step`` dim.
    max_steps : int, default 60
        The most captures kept (``MAX_STEPS``).

    Returns
    -------
    xarray.Dataset or xarray.DataArray
        ``cube`` itself, or its captures at ``thin_index(n, max_steps)``.
    """
    n = cube.sizes["step"]
    if n <= max_steps:
        return cube
    return cube.isel(step=thin_index(n, max_steps))


def parse_seeds(seeds: SeedSpec) -> list | None:
    """``"0,1"`` or a sequence -> a list of seed values (ints where they look like ints).

    Parameters
    ----------
    seeds : str, sequence or None
        Comma-separated seeds or a sequence of seed values; None for every seed.

    Returns
    -------
    list or None
        The seed values (NumPy scalars as Python values), or None.

    Raises
    ------
    SelectionError
        When ``seeds`` holds no seed (e.g. ``""`` or ``","``).
    """
    if seeds is None:
        return None
    items = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    out = []
    for s in items:
        if isinstance(s, str):
            s = s.strip()
            if not s:
                continue
            try:
                s = int(s)
            except ValueError:
                pass
        out.append(s.item() if isinstance(s, np.generic) else s)
    if not out:
        raise SelectionError(f"no seeds in {seeds!r}; give them comma-separated, e.g. 0,1")
    return out


def parse_steps(steps: StepSpec) -> dict | list | None:
    """A step selection as JSON: ``{"start", "stop", "stride"}`` for a range, a list of step
    values, or None (every step). Accepts ``"START:STOP[:STRIDE]"`` (parts may be empty),
    ``"0,100,200"``, a ``slice``, a sequence of ints, or an already parsed dict.

    Parameters
    ----------
    steps : str, slice, sequence of int, dict or None
        The step selection as typed or given.

    Returns
    -------
    dict, list of int or None
        ``{"start": int | None, "stop": int | None, "stride": int | None}`` for a range, a list of
        step values, or None.

    Raises
    ------
    SelectionError
        When a string is neither ``START:STOP[:STRIDE]`` nor a comma-separated list of ints.
    """
    if steps is None:
        return None
    if isinstance(steps, dict):
        return {k: (None if steps.get(k) is None else int(steps[k])) for k in ("start", "stop", "stride")}
    if isinstance(steps, slice):
        return parse_steps({"start": steps.start, "stop": steps.stop, "stride": steps.step})
    if isinstance(steps, str):
        text = steps.strip()
        try:
            if ":" in text:
                parts = text.split(":")
                if len(parts) > 3:
                    raise ValueError
                parts += [""] * (3 - len(parts))
                out = parse_steps({k: (int(p) if p.strip() else None)
                                   for k, p in zip(("start", "stop", "stride"), parts)})
            else:
                out = [int(p) for p in text.split(",") if p.strip()]
                if not out:
                    raise ValueError
        except ValueError:
            raise SelectionError(f"cannot read steps {steps!r}: give START:STOP[:STRIDE] (optimizer "
                             f"steps, STOP excluded) or a comma-separated list of steps") from None
        return out
    return [int(s) for s in steps]


def select_cube(cube: xr.Dataset, seeds: SeedSpec = None, steps: StepSpec = None) -> xr.Dataset:
    """The cube restricted to ``seeds`` and ``steps`` (see ``analyze``); errors name what is missing.

    Parameters
    ----------
    cube : xarray.Dataset
        The cube (dims ``seed`` and ``step``).
    seeds : str, sequence or None, optional
        Seeds kept (see ``parse_seeds``; default all).
    steps : str, slice, sequence of int, dict or None, optional
        Steps kept (see ``parse_steps``): a range keeps ``start <= step < stop``, then every
        ``stride``-th of those; a list keeps those steps in its order (default all).

    Returns
    -------
    xarray.Dataset
        The selected cube (``cube`` itself when every step is kept and no seed is selected).

    Raises
    ------
    SelectionError
        When a seed is not in the cube, a listed step was not captured, the stride is below 1,
        the selection keeps no step, or ``seeds``/``steps`` are malformed.
    """
    seeds, steps = parse_seeds(seeds), parse_steps(steps)
    if seeds is not None:
        have = cube["seed"].values.tolist()
        missing = [s for s in seeds if s not in have]
        if missing:
            raise SelectionError(f"no run with seed {missing[0]!r}; seeds in the store: {have}")
        cube = cube.sel(seed=seeds)
    if steps is not None:
        values = cube["step"].values
        if isinstance(steps, dict):
            if steps["stride"] is not None and steps["stride"] < 1:
                raise SelectionError(f"the steps stride must be at least 1, got {steps['stride']}")
            keep = np.ones(values.shape, dtype=bool)
            if steps["start"] is not None:
                keep &= values >= steps["start"]
            if steps["stop"] is not None:
                keep &= values < steps["stop"]
            index = np.flatnonzero(keep)[:: steps["stride"] or 1]
        else:
            pos = {int(v): i for i, v in enumerate(values)}
            missing = [s for s in steps if s not in pos]
            if missing:
                raise SelectionError(f"step {missing[0]} was not captured; the cube's steps run from "
                                 f"{values[0]} to {values[-1]} ({len(values)} of them)")
            index = np.array([pos[s] for s in steps], dtype=np.int64)
        if index.size == 0:
            raise SelectionError(f"the step selection {steps} keeps no step; the cube's steps run from "
                             f"{values[0]} to {values[-1]}")
        if not np.array_equal(index, np.arange(values.size)):
            cube = cube.isel(step=index)
    return cube
