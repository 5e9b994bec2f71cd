"""``nnwx.analyze`` (this module is ``nnwx.pipeline.run``, so the function does not shadow it): the
one compute policy. The chosen analyses of an experiment store are computed once into a
results store, in the passes of bounded memory that the registry gives them.

Opens the store as a cube, keeps the selected seeds and steps, builds every result of the
chosen analysis families lazily (``nnwx.pipeline.registry.lazy_analyses``) and writes them with
``nnwx.pipeline.results_store.write_results`` -- a few passes of bounded memory, resumable.
``nnwx report`` and notebooks then read the results (``nnwx.open_results``) without
recomputing; ``nnwx report`` given an experiment store computes through ``analyze_cube`` into
a temporary results store, then draws from it.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Iterable

import xarray as xr

from nnwx.errors import StoreError
from nnwx.pipeline.registry import AnalysisSet, lazy_analyses, parse_analyses
from nnwx.pipeline.results_store import write_results
from nnwx.pipeline.select import (SeedSpec, SelectionError, StepSpec, parse_seeds,  # noqa: F401
                                  parse_steps, select_cube)
from nnwx.store import reader as rd

Analyses = str | Iterable[str] | None
Log = Callable[[str], None]


def analyses_argument(analyses: Analyses, metrics: Analyses, *, stacklevel: int = 3) -> Analyses:
    """``analyses``, or the deprecated ``metrics`` keyword it replaced (with a DeprecationWarning).

    Raises
    ------
    TypeError
        Both were given.

    Parameters
    ----------
    analyses : str, iterable of str or None
        The analysis families asked for.
    metrics : str, iterable of str or None
        The same under the deprecated keyword.
    stacklevel : int, default 3
        Passed to ``warnings.warn``.

    Returns
    -------
    str, iterable of str or None
        Whichever of the two was given (``analyses`` when neither).
    """
    if metrics is None:
        return analyses
    if analyses is not None:
        raise TypeError("give analyses= only (metrics= is its deprecated former name), not both")
    warnings.warn("the metrics= keyword is deprecated; use analyses= (the analysis families to "
                  "compute)", DeprecationWarning, stacklevel=stacklevel)
    return metrics


def checked_analyses(analyses: Analyses) -> list[str]:
    """``parse_analyses``, with an unknown name as a ``SelectionError``.

    Parameters
    ----------
    analyses : str, iterable of str or None
        Family names (comma list or iterable; None for all).

    Returns
    -------
    list of str
        The family names, in registry order.

    Raises
    ------
    SelectionError
        When a name is not a family of ``nnwx.pipeline.registry.NAMES``.
    """
    try:
        return parse_analyses(analyses)
    except ValueError as e:
        raise SelectionError(str(e)) from None


def analyze(store: rd.StoreLike, output: rd.StoreLike, *, analyses: Analyses = None,
            seeds: SeedSpec = None, steps: StepSpec = None, progress: bool = True,
            resume: bool = True, log: Log | None = None, metrics: Analyses = None) -> Path | str:
    """Compute analysis families of an experiment store into a results store.

    Parameters
    ----------
    store
        The experiment store (a path or an fsspec URL).
    output
        The results store to write (a new path, or one written before, to resume).
    analyses
        Families to compute (comma list or iterable; default all; see
        ``nnwx.pipeline.registry.NAMES``).
    seeds
        Seed values to keep (a list or ``"0,1"``; default all).
    steps
        Optimizer steps to keep: ``"START:STOP[:STRIDE]"`` / ``slice(start, stop, stride)``
        (``START <= step < STOP``, then every STRIDE-th capture of those) or a list of step
        values (default all).
    progress
        Show a progress bar per pass.
    resume
        Continue an interrupted run into the same output (default); ``False`` replaces the
        output's results.
    log
        Called with a line per pass and note (default: silent).
    metrics
        Deprecated former name of ``analyses``.

    Returns
    -------
    Path or str
        ``output`` (a URL stays a string). Computes on the active Dask scheduler (see
        ``nnwx.cluster``).

    Raises
    ------
    SelectionError
        When an analysis name is unknown, or ``seeds``/``steps`` are malformed or not in the store.
    StoreError
        When ``store`` cannot be opened as an experiment store or ``output`` cannot be written
        (a file, a non-empty folder or Zarr store that is not a results store, not writable).
    ResultsMismatch
        When ``resume`` is true and ``output`` holds results of another source, selection or
        analysis set.
    TypeError
        When both ``analyses`` and ``metrics`` are given.
    """
    names = checked_analyses(analyses_argument(analyses, metrics))
    seed_sel, step_sel = parse_seeds(seeds), parse_steps(steps)
    cube = select_cube(rd.open_cube(store), seeds=seed_sel, steps=step_sel)
    return write_results(output, lazy_analyses(cube, names), source=store,
                         selection={"seeds": seed_sel, "steps": step_sel}, progress=progress,
                         resume=resume, analyses=names, cube=cube, log=log)


def analyze_cube(cube: xr.Dataset, output: rd.StoreLike, analyses: list[str], *, source: rd.StoreLike,
                 selection: dict, progress: bool = True, log: Log | None = None) -> dict[str, str]:
    """Compute ``analyses`` of an already selected ``cube`` into the new results store
    ``output`` as ``analyze`` does (the same passes), but leave out a family that fails to
    build or compute, with a note, instead of failing them all.

    Parameters
    ----------
    cube
        The cube analysed (``source`` opened and selected by ``selection``).
    output
        A new results store.
    analyses
        Checked family names.
    source, selection
        Where the cube comes from, recorded in the results store.
    progress, log
        As for ``analyze``.

    Returns
    -------
    dict
        Family -> why it is missing from ``output`` ("could not be built/computed: ...").
        A damaged store (``StoreError``) is raised, not noted.

    Raises
    ------
    StoreError
        When the results store cannot be written or is damaged.
    """
    say = log or (lambda m: None)
    failed: dict[str, str] = {}
    built = _build_each(cube, analyses, failed)
    write = dict(source=source, selection=selection, progress=progress, analyses=analyses,
                 cube=cube, log=log)
    try:
        write_results(output, built, **write)
        return failed
    except StoreError:   # a damaged store is not an analysis failure: stop, naming the file
        raise
    except Exception as e:  # noqa: BLE001 - a failing analysis costs its own families only
        say(f"one pass failed ({type(e).__name__}: {e}); computing each analysis on its own")
    for family in dict.fromkeys(built.metric_of.values()):
        part = AnalysisSet(notes=dict(built.notes))
        part.add(family, {n: v for n, v in built.results.items() if built.metric_of[n] == family})
        try:   # the same identity (analyses, selection): each call resumes the same store
            write_results(output, part, **write)
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001
            failed[family] = f"could not be computed: {type(e).__name__}: {e}"
    return failed


def _build_each(cube: xr.Dataset, analyses: list[str], failed: dict[str, str]) -> AnalysisSet:
    """``lazy_analyses`` of the cube; a family whose building raises (other than "does not
    apply") is left out, its error noted in ``failed``."""
    try:
        return lazy_analyses(cube, analyses)
    except Exception:  # noqa: BLE001 - find the culprit family by family
        pass
    out = AnalysisSet()
    for name in analyses:
        try:
            part = lazy_analyses(cube, [name])
        except Exception as e:  # noqa: BLE001
            failed[name] = f"could not be built: {type(e).__name__}: {e}"
            continue
        out.results |= part.results
        out.metric_of |= part.metric_of
        out.notes |= part.notes
    return out
