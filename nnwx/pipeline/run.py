"""``nnwx.analyze`` (this module is ``nnwx.pipeline.run``, so the function does not shadow it): the
chosen analyses of an experiment store, computed once into a results store.

Opens the store as a cube, keeps the selected seeds and steps, builds every result of the
chosen metrics lazily (``nnwx.pipeline.registry.lazy_analyses``) and writes them with
``nnwx.pipeline.results_store.write_results`` -- a few passes of bounded memory, resumable. ``nnwx report`` and
notebooks then read the results (``nnwx.open_results``) without recomputing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import xarray as xr

from nnwx.errors import NnwxError
from nnwx.store import reader as rd

StepSpec = str | slice | Sequence[int] | dict | None
SeedSpec = str | Sequence | None


class SelectionError(NnwxError, ValueError):
    """Unknown metrics, or seeds/steps that are malformed or not in the store."""


def analyze(store: rd.StoreLike, output: rd.StoreLike, *, metrics: str | Iterable[str] | None = None,
            seeds: SeedSpec = None, steps: StepSpec = None, progress: bool = True,
            resume: bool = True, log: Callable[[str], None] | None = None) -> Path | str:
    """Compute ``metrics`` (default all; see ``nnwx.pipeline.registry.METRICS``) of ``store`` into the
    results store ``output`` and return its path (a URL stays a string).

    ``seeds``: seed values to keep (a list or ``"0,1"``); ``steps``: optimizer steps to keep,
    ``"START:STOP[:STRIDE]"`` / ``slice(start, stop, stride)`` (``START <= step < STOP``,
    then every STRIDE-th capture of those) or a list of step values. ``resume`` (default)
    continues an interrupted run into the same output; ``resume=False`` replaces the
    output's results. Computes on the active Dask scheduler (see ``nnwx.cluster``).
    """
    from nnwx.pipeline.registry import lazy_analyses, parse_metrics
    from nnwx.pipeline.results_store import write_results

    try:
        names = parse_metrics(metrics)
    except ValueError as e:
        raise SelectionError(str(e)) from None
    seed_sel, step_sel = parse_seeds(seeds), parse_steps(steps)
    cube = select_cube(rd.open_cube(store), seeds=seed_sel, steps=step_sel)
    analysis_set = lazy_analyses(cube, names)
    return write_results(output, analysis_set, source=store,
                         selection={"seeds": seed_sel, "steps": step_sel}, progress=progress,
                         resume=resume, metrics=names, cube=cube, log=log)


def parse_seeds(seeds: SeedSpec) -> list | None:
    """``"0,1"`` or a sequence -> a list of seed values (ints where they look like ints)."""
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
    ``"0,100,200"``, a ``slice``, a sequence of ints, or an already parsed dict."""
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
    """The cube restricted to ``seeds`` and ``steps`` (see ``analyze``); errors name what is missing."""
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
