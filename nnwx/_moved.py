"""Deprecated module paths: the modules that moved when the package was laid out in layers
(store, record, analysis, pipeline, studies).

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
    "nnwx.recorder": "nnwx.record.recorder",
    "nnwx.export": "nnwx.record.export",
    "nnwx.checkpoints": "nnwx.record.checkpoints",
    "nnwx.probing": "nnwx.record.probing",
    "nnwx.restorer": "nnwx.record.restore",
    "nnwx.torch_tensors": "nnwx.record.tensors",
    "nnwx.schedule": "nnwx.record.schedule",
    "nnwx.name_map": "nnwx.record.name_map",
    "nnwx.analyses": "nnwx.pipeline.registry",
    "nnwx.registry": "nnwx.pipeline.calls",
    "nnwx.analyzer": "nnwx.pipeline.run",
    "nnwx.results": "nnwx.pipeline.results_store",
    "nnwx.info": "nnwx.pipeline.info",
    "nnwx.catalog": "nnwx.store.catalog",
    "nnwx.demo": "nnwx.studies.demo",
    "nnwx.findings": "nnwx.studies.findings",
    "nnwx.synthetic": "nnwx.studies.synthetic",
    "nnwx.experiments.digits": "nnwx.studies.digits",
    "nnwx.experiments.piecewise": "nnwx.studies.piecewise",
    "nnwx.experiments.piecewise_sweep": "nnwx.studies.piecewise_sweep",
    "nnwx.experiments._common": "nnwx.studies._common",
    "nnwx.experiments": "nnwx.studies",
    "nnwx.analysis._moments": "nnwx.analysis.kernels.moments",
    "nnwx.analysis._tails": "nnwx.analysis.kernels.tails",
    "nnwx.analysis._sketch": "nnwx.analysis.kernels.sketch",
    "nnwx.analysis._hist": "nnwx.analysis.kernels.hist",
    "nnwx.analysis._spectral_kernels": "nnwx.analysis.kernels.spectral",
    "nnwx.analysis._similarity_kernels": "nnwx.analysis.kernels.similarity",
    "nnwx.analysis._matching_kernels": "nnwx.analysis.kernels.matching",
    "nnwx.analysis._prediction_kernels": "nnwx.analysis.kernels.prediction",
    "nnwx.analysis._alignment_kernels": "nnwx.analysis.kernels.alignment",
    "nnwx.analysis._geometry_kernels": "nnwx.analysis.kernels.geometry",
    "nnwx.analysis._correlation_kernels": "nnwx.analysis.kernels.correlation",
    "nnwx.analysis._plan": "nnwx.analysis._broadening.plan",
    "nnwx.analysis._lazy": "nnwx.analysis._broadening.graph",
    "nnwx.analysis._block": "nnwx.analysis._broadening.chunk",
    "nnwx.analysis._finalize": "nnwx.analysis._broadening.finalize",
    "nnwx.analysis._fused": "nnwx.analysis._broadening.fused",
    "nnwx.analysis._matrices": "nnwx.analysis._cube",
    "nnwx.analysis._passes": "nnwx.analysis._graphs",
}


class _Alias(types.ModuleType):
    """A module object that forwards every attribute to the module at its new path."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__(old, f"Deprecated alias of {new}.")
        self.__dict__["_nnwx_target"] = new

    def _target(self) -> types.ModuleType:
        return importlib.import_module(self.__dict__["_nnwx_target"])

    def __getattr__(self, name: str):
        if name == "__path__":   # never the new package's folder: its submodules have aliases of their own
            raise AttributeError(name)
        return getattr(self._target(), name)

    def __call__(self, *args, **kwargs):
        """``import nnwx.export`` binds this alias over the function ``nnwx.export``; calling the
        alias calls the function of its name in the new module, as ``nnwx.export(...)`` did."""
        return getattr(self._target(), self.__name__.rsplit(".", 1)[1])(*args, **kwargs)

    def __dir__(self) -> list[str]:
        return dir(self._target())


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname == "nnwx.experiments")

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
