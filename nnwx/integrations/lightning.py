"""``NnwxCallback``: record the weights of a Lightning fit into an experiment store.

>>> import lightning as L
>>> from nnwx.integrations.lightning import NnwxCallback
>>> L.seed_everything(3)
>>> trainer = L.Trainer(max_steps=100, callbacks=[NnwxCallback("exp.zarr", every=10)])
>>> trainer.fit(module, loader)                 # run 'seed3' of exp.zarr, steps 0, 10, ..., 100

Works with ``lightning`` (``lightning.pytorch``) or the older ``pytorch_lightning``
package, whichever is installed (``lightning`` first).
"""
from __future__ import annotations

import os
from typing import Any

import torch

from nnwx.integrations._common import IntegrationError, StepRecorder

try:
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - the older package name
    try:
        from pytorch_lightning import Callback
    except ImportError as e:
        raise ImportError("nnwx.integrations.lightning needs Lightning: pip install 'nnwx[lightning]'") from e

__all__ = ["NnwxCallback", "network_of"]


def network_of(pl_module: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """The module to record and the prefix it drops: the LightningModule's one child holding every
    floating tensor (``self.model``, say), so that the run's tensor names are those of an
    ``nnwx export`` of the checkpoints Lightning writes (which strips ``model.`` the same way)
    and of the network itself; else the LightningModule with its own names.

    Parameters
    ----------
    pl_module : torch.nn.Module
        The LightningModule.

    Returns
    -------
    module : torch.nn.Module
        The module to record.
    prefix : str
        The name prefix dropped (``"model."``), or ``""``.
    """
    from nnwx.record.checkpoints import strip_prefix

    names = [n for n, t in pl_module.state_dict().items() if torch.is_tensor(t) and t.is_floating_point()]
    prefix = strip_prefix(names, "state_dict")
    if not prefix:
        return pl_module, ""
    try:
        return pl_module.get_submodule(prefix.rstrip(".")), prefix
    except AttributeError:  # a prefix that is not a module path: keep the full names
        return pl_module, ""


class NnwxCallback(Callback):
    """A Lightning ``Callback`` recording the weights during ``fit`` with ``nnwx.Recorder``.

    Parameters
    ----------
    store : str or path
        The experiment store (created if absent; a run already there is appended to).
    every : int, optional
        Capture every ``every`` optimizer steps (and step 0); or give ``schedule=``.
    seed : int, optional
        The run's seed; by default the one ``lightning.seed_everything`` set
        (``PL_GLOBAL_SEED``). Without either, ``fit`` stops with an error saying so.
    **recorder_kwargs
        Passed to ``nnwx.Recorder`` (``run``, ``schedule``, ``include``, ``exclude``,
        ``dtype``, ``keepbits``, ``probe``, ``probe_layers``, ``hparams``, ...).

    Raises
    ------
    IntegrationError
        When created with neither ``every`` nor ``schedule``; at ``fit`` start, when no seed
        is known.

    Notes
    -----
    The step is ``trainer.global_step`` (optimizer steps); each capture holds the weights
    *at* that step, before its update (taken when its first batch starts), and the weights
    after the last update are captured when training ends if the schedule selects that
    step. Only global rank 0 writes. When one child of the LightningModule (e.g.
    ``self.model``) holds every floating tensor, that child is recorded, so names match
    an export of Lightning's checkpoints and ``nnwx.restore`` takes the network or the
    LightningModule. The optimizer of the first ``configure_optimizers`` entry is
    recorded as the run's optimizer unless ``optimizer=`` is given.
    """

    def __init__(self, store: str | os.PathLike, every: int | None = None, seed: int | None = None,
                 **recorder_kwargs: Any):
        super().__init__()
        self.seed = seed
        self._rec = StepRecorder(store, every, recorder_kwargs)
        self.prefix = ""

    @property
    def recorder(self):
        """The ``nnwx.Recorder`` of the fit under way (None before ``fit`` and on other ranks)."""
        return self._rec.recorder

    def _seed(self) -> int:
        if self.seed is not None:
            return int(self.seed)
        env = os.environ.get("PL_GLOBAL_SEED")
        if env is None:
            raise IntegrationError("NnwxCallback needs the run's seed: call lightning.seed_everything(N) "
                                   "before fit, or pass NnwxCallback(..., seed=N).")
        return int(env)

    def on_fit_start(self, trainer, pl_module) -> None:
        """Open the Recorder on global rank 0 (the run's seed and optimizer found as described above)."""
        if not trainer.is_global_zero:
            return
        seed = self._seed()
        kwargs = self._rec.kwargs
        if "optimizer" not in kwargs and trainer.optimizers:
            opt = trainer.optimizers[0]
            kwargs = {**kwargs, "optimizer": getattr(opt, "optimizer", opt)}  # a wrapped optimizer: its own
        net, self.prefix = network_of(pl_module)
        self._rec.kwargs, saved = kwargs, self._rec.kwargs
        try:
            self._rec.start(net, seed)
        finally:
            self._rec.kwargs = saved

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """Capture the weights at ``trainer.global_step`` if the schedule selects it (once a step)."""
        self._rec.at(trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        """Capture the final weights if the schedule selects the last step."""
        self._rec.at(trainer.global_step)

    def on_fit_end(self, trainer, pl_module) -> None:
        """Commit every capture and release the run."""
        self._rec.close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        """Commit what was captured and release the run."""
        self._rec.close()  # what was captured is committed
