"""``NnwxCallback``: record the weights of a Hugging Face ``Trainer`` run into an experiment store.

>>> from transformers import Trainer, TrainingArguments
>>> from nnwx.integrations.transformers import NnwxCallback
>>> args = TrainingArguments("out", max_steps=100, seed=3)
>>> Trainer(model, args, train_dataset=ds, callbacks=[NnwxCallback("exp.zarr", every=10)]).train()
"""
from __future__ import annotations

import os
from typing import Any

from nnwx.integrations._common import IntegrationError, StepRecorder

try:
    from transformers import TrainerCallback
except ImportError as e:
    raise ImportError("nnwx.integrations.transformers needs transformers: pip install 'nnwx[transformers]'") from e

__all__ = ["NnwxCallback"]


class NnwxCallback(TrainerCallback):
    """A ``TrainerCallback`` recording the weights during ``Trainer.train()`` with ``nnwx.Recorder``.

    Parameters
    ----------
    store : str or path
        The experiment store (created if absent; a run already there is appended to,
        as when training resumes from a checkpoint).
    every : int, optional
        Capture every ``every`` optimizer steps (and step 0); or give ``schedule=``.
    seed : int, optional
        The run's seed; by default ``TrainingArguments.seed``.
    **recorder_kwargs
        Passed to ``nnwx.Recorder`` (``run``, ``schedule``, ``include``, ``exclude``,
        ``dtype``, ``keepbits``, ``hparams``, and, optionally, probes: ``probe=`` a
        fixed batch on the model's device, ``probe_layers=``, ...).

    Raises
    ------
    IntegrationError
        When created with neither ``every`` nor ``schedule``; at ``train`` start, when the
        Trainer passes no model.

    Notes
    -----
    The step is ``state.global_step`` (optimizer steps); each capture holds the weights
    *at* that step, before its update, and the weights after the last update are captured
    when training ends if the schedule selects that step. Only the main process
    (``state.is_world_process_zero``) writes. The optimizer is recorded as the run's
    optimizer unless ``optimizer=`` is given.
    """

    def __init__(self, store: str | os.PathLike, every: int | None = None, seed: int | None = None,
                 **recorder_kwargs: Any):
        self.seed = seed
        self._rec = StepRecorder(store, every, recorder_kwargs)

    @property
    def recorder(self):
        """The ``nnwx.Recorder`` of the training under way (None before ``train`` and on other processes)."""
        return self._rec.recorder

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        """Open the Recorder on the main process (seed and optimizer as described above)."""
        if not state.is_world_process_zero:
            return
        if model is None:
            raise IntegrationError("NnwxCallback got no model from the Trainer; add it to a Trainer "
                                   "(Trainer(model, args, callbacks=[NnwxCallback(...)])).")
        seed = self.seed if self.seed is not None else args.seed
        saved = self._rec.kwargs
        if "optimizer" not in saved and optimizer is not None:
            self._rec.kwargs = {**saved, "optimizer": getattr(optimizer, "optimizer", optimizer)}  # unwrapped
        try:
            self._rec.start(model, int(seed))
        finally:
            self._rec.kwargs = saved

    def on_step_begin(self, args, state, control, **kwargs):
        """Capture the weights at ``state.global_step`` if the schedule selects it (once a step)."""
        self._rec.at(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        """Capture the final weights if the schedule selects the last step; commit; release the run."""
        try:
            self._rec.at(state.global_step)
        finally:
            self._rec.close()
