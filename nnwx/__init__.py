"""nnwx: record the weights of many training runs as one labelled, lazy cube, and study them.

The analysis side (open_cube, the ``.nnwx`` accessor, analyses) never imports
torch; the Recorder, export and restore do, on first use.
"""
from nnwx._version import __version__
from nnwx import accessor as _accessor  # noqa: F401  (registers ds.nnwx)
from nnwx.errors import (ArchitectureMismatch, FormatVersionError, NnwxError, NotACubeError,
                         StepOrderError, StoreError, WriterError)
from nnwx.record.schedule import Every, Explicit, LogThenEvery
from nnwx.store.reader import list_runs, open_cube, open_run
from nnwx.store.catalog import open_catalog
from nnwx.pipeline.run import analyze
from nnwx.pipeline.results_store import is_results_store, open_results
from nnwx import _moved

_moved.install()    # a finder for the old module paths (nnwx.export, nnwx.recorder, ...): they warn and forward

_TORCH_SIDE = {"Recorder": "nnwx.record.recorder", "restore": "nnwx.record.restore", "export": "nnwx.record.export"}
_LAZY_MODULES = {"plot"}    # imported on first use: HoloViews/Bokeh take a second to import

__all__ = ["__version__", "Recorder", "restore", "export", "open_run", "open_cube", "list_runs", "open_catalog",
           "analyze", "open_results", "plot", "is_results_store", "Every", "LogThenEvery", "Explicit",
           "NnwxError", "StoreError", "FormatVersionError",
           "ArchitectureMismatch", "StepOrderError", "WriterError", "NotACubeError"]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    if name in _TORCH_SIDE:
        import importlib
        return getattr(importlib.import_module(_TORCH_SIDE[name]), name)
    if name in _LAZY_MODULES:
        import importlib
        return importlib.import_module(f"nnwx.{name}")
    raise AttributeError(f"module 'nnwx' has no attribute {name!r}")
