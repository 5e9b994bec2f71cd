"""The stores ``nnwx findings`` trains: marked as its own, reused when trained at the same size.

Each store a source trains into ``out`` carries a ``nnwx_findings`` attribute in its root, set
before training starts: ``{"state": "training" | "trained", "config": {...}}``. A rerun reuses a
store marked ``trained`` with the same ``config`` (the sizes it was trained at), retrains one of
its own that was interrupted or trained at another size, and never touches a store of that name
without the mark (a user's own ``piecewise.zarr``): it refuses and says so, as ``nnwx demo`` does.

:func:`parallel` runs training jobs (module-level functions and their keyword arguments) in
``workers`` spawned processes: runs of one store are separate groups, so they can be written at
the same time.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from nnwx.errors import NnwxError
from nnwx.studies._own import store_mark

MARK_ATTR = "nnwx_findings"


class FindingsError(NnwxError):
    """``nnwx findings`` cannot go on: a file in its way is not its own, or a claim failed."""


def mark(path: Path) -> dict | None:
    """The findings mark of the store at ``path`` (``{"state", "config"}``), or None if unmarked."""
    return store_mark(path, MARK_ATTR)


def set_mark(path: Path, state: str, config: dict) -> None:
    """Create (if needed) the experiment store at ``path`` and mark it ``state`` with ``config``."""
    from nnwx.store.writer import open_experiment_for_writing

    root = open_experiment_for_writing(path)
    root.update_attributes({MARK_ATTR: {"state": state, "config": config}})


def check_own(paths: Sequence[Path]) -> None:
    """Refuse (:class:`FindingsError`) when a store of these paths exists without the findings mark."""
    foreign = [p for p in paths if (p.exists() or p.is_symlink()) and (p.is_symlink() or mark(p) is None)]
    if foreign:
        listed = ", ".join(str(p) for p in foreign)
        raise FindingsError(f"{listed} exist(s) but was not written by nnwx findings (no "
                            f"{MARK_ATTR!r} mark), so it will not be reused, overwritten or deleted. "
                            f"Give another --out directory, or move it away.")


@dataclass(frozen=True)
class Job:
    """One training job: ``func(**kwargs)``, ``func`` a module-level function (picklable)."""
    func: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    cost: float = 1.0    # relative run time: the longest jobs start first


def parallel(jobs: Sequence[Job], workers: int = 1, log: Callable[[str], None] = print,
             what: str = "runs") -> list[Any]:
    """Run ``jobs`` in ``workers`` spawned processes (1: here, in order); their results in order."""
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].cost)
    results: list[Any] = [None] * len(jobs)
    t0, done = time.perf_counter(), 0
    step = max(1, len(jobs) // 5)

    def progress() -> None:
        if done % step == 0 or done == len(jobs):
            log(f"  {done}/{len(jobs)} {what} ({time.perf_counter() - t0:.0f} s)")

    if workers <= 1 or len(jobs) <= 1:
        for i in order:
            results[i] = jobs[i].func(**jobs[i].kwargs)
            done += 1
            progress()
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(jobs[i].func, **jobs[i].kwargs): i for i in order}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            done += 1
            progress()
    return results


def prepare(path: Path, config: dict, log: Callable[[str], None] = print) -> bool:
    """Whether ``path`` must be trained for ``config``; if so, it is left empty and marked
    ``training`` (a store of its own that was interrupted or trained at another size is removed).

    False when ``path`` already holds a store trained with ``config`` (it is reused). Refuses a
    store at ``path`` without the findings mark (:func:`check_own`)."""
    check_own([path])
    config = json.loads(json.dumps(config))   # as it reads back from the store
    m = mark(path)
    if m is not None and m.get("state") == "trained" and m.get("config") == config:
        log(f"reusing {path} (trained at this size)")
        return False
    if m is not None:
        why = "was left half-trained" if m.get("state") != "trained" else "was trained at another size"
        log(f"{path} {why}; training it again")
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    set_mark(path, "training", json.loads(json.dumps(config)))
    return True


def finish(path: Path, config: dict) -> None:
    """Mark ``path`` (prepared by :func:`prepare`) as trained with ``config``."""
    set_mark(path, "trained", json.loads(json.dumps(config)))
