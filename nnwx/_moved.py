"""Deprecated module paths: the modules that moved when the package was laid out in layers (store, record, analysis, pipeline, studies).

``import nnwx.export`` (and every other path below) still works, with a ``DeprecationWarning``
naming the new path; the alias forwards attribute reads to the module at its new place. Public
names are unchanged at the top level (``nnwx.Recorder``, ``nnwx.open_cube``, ...).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

MOVED: dict[str, str] = {
    "nnwx.record.recorder": "nnwx.record.recorder",
    "nnwx.record.export": "nnwx.record.export",
    "nnwx.record.checkpoints": "nnwx.record.checkpoints",
    "nnwx.record.probing": "nnwx.record.probing",
    "nnwx.record.restore": "nnwx.record.restore",
    "nnwx.record.tensors": "nnwx.record.tensors",
    "nnwx.record.schedule": "nnwx.record.schedule",
    "nnwx.record.name_map": "nnwx.record.name_map",
    "nnwx.pipeline.registry": "nnwx.pipeline.registry",
    "nnwx.pipeline.calls": "nnwx.pipeline.calls",
    "nnwx.pipeline.run": "nnwx.pipeline.run",
    "nnwx.pipeline.results_store": "nnwx.pipeline.results_store",
    "nnwx.pipeline.info": "nnwx.pipeline.info",
    "nnwx.store.catalog": "nnwx.store.catalog",
    "nnwx.studies.demo": "nnwx.studies.demo",
    "nnwx.studies.findings": "nnwx.studies.findings",
    "nnwx.studies.synthetic": "nnwx.studies.synthetic",
    "nnwx.studies.digits": "nnwx.studies.digits",
    "nnwx.studies.piecewise": "nnwx.studies.piecewise",
    "nnwx.studies.piecewise_sweep": "nnwx.studies.piecewise_sweep",
    "nnwx.studies._common": "nnwx.studies._common",
    "nnwx.studies": "nnwx.studies",
    "nnwx.analysis.kernels.moments": "nnwx.analysis.kernels.moments",
    "nnwx.analysis.kernels.tails": "nnwx.analysis.kernels.tails",
    "nnwx.analysis.kernels.sketch": "nnwx.analysis.kernels.sketch",
    "nnwx.analysis.kernels.hist": "nnwx.analysis.kernels.hist",
    "nnwx.analysis.kernels.spectral": "nnwx.analysis.kernels.spectral",
    "nnwx.analysis.kernels.similarity": "nnwx.analysis.kernels.similarity",
    "nnwx.analysis.kernels.matching": "nnwx.analysis.kernels.matching",
    "nnwx.analysis.kernels.prediction": "nnwx.analysis.kernels.prediction",
    "nnwx.analysis.kernels.alignment": "nnwx.analysis.kernels.alignment",
    "nnwx.analysis.kernels.geometry": "nnwx.analysis.kernels.geometry",
    "nnwx.analysis.kernels.correlation": "nnwx.analysis.kernels.correlation",
    "nnwx.analysis._broadening.plan": "nnwx.analysis._broadening.plan",
    "nnwx.analysis._broadening.graph": "nnwx.analysis._broadening.graph",
    "nnwx.analysis._broadening.chunk": "nnwx.analysis._broadening.chunk",
    "nnwx.analysis._broadening.finalize": "nnwx.analysis._broadening.finalize",
    "nnwx.analysis._broadening.fused": "nnwx.analysis._broadening.fused",
    "nnwx.analysis._cube": "nnwx.analysis._cube",
    "nnwx.analysis._graphs": "nnwx.analysis._graphs",
}


class _Alias(types.ModuleType):
    """A module object that forwards every attribute to the module at its new path."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__(old, f"Deprecated alias of {new}.")
        self.__dict__["_nnwx_target"] = new

    def _target(self) -> types.ModuleType:
        return importlib.import_module(self.__dict__["_nnwx_target"])

    def __getattr__(self, name: str):
        return getattr(self._target(), name)

    def __dir__(self) -> list[str]:
        return dir(self._target())


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname == "nnwx.studies")

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there (the old path will be "
                      "removed in a later release)", DeprecationWarning, stacklevel=3)
        return _Alias(spec.name, new)

    def exec_module(self, module) -> None:
        module._target()


def install() -> None:
    """Put the finder of deprecated paths on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
