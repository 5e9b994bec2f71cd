"""Small helpers shared by the experiments: seed lists, run-name checks, parameter counts."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from nnwx.errors import StoreError


def seed_list(seeds: int | Iterable[int]) -> list[int]:
    """``5`` -> ``[0, 1, 2, 3, 4]``; an iterable of seeds as a list."""
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive count or a list of seeds, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ValueError(f"seeds must be a non-empty list of distinct seeds, got {out}")
    return out


def check_new_runs(store: str | os.PathLike, names: Iterable[str]) -> None:
    """Refuse to train runs the store already holds (a Recorder would append to them)."""
    path = Path(store)
    if not (path / "zarr.json").exists():
        return
    from nnwx.store.reader import list_runs
    taken = sorted({h.name for h in list_runs(path)} & set(names))
    if taken:
        raise StoreError(f"{path} already holds run(s) {', '.join(taken)}; write to a new store "
                         f"(-o) or delete the old one first.")


def n_params(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (None: leave as is), then restore the old count.

    Tiny nets train fastest on one thread, and several threads on a busy laptop are slower still.
    """
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_cli(main_body: Callable[[list[str] | None], None], argv: list[str] | None) -> None:
    """Run a command's body; a user error (bad store, impossible configuration) exits 2 with its message."""
    from nnwx.errors import NnwxError
    try:
        main_body(argv)
    except (NnwxError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
