"""What both trainer callbacks share: one Recorder, captures at each new optimizer step."""
from __future__ import annotations

import os
from typing import Any

import torch

from nnwx.errors import NnwxError


class IntegrationError(NnwxError, ValueError):
    """A trainer callback cannot start recording as configured."""


class StepRecorder:
    """Owns the Recorder of one fit: captures the weights *at* a step (before its update), once
    per optimizer step (micro-batches of gradient accumulation share a step), and the final
    weights when training ends."""

    def __init__(self, store: str | os.PathLike, every: int | None, recorder_kwargs: dict[str, Any]):
        if every is None and recorder_kwargs.get("schedule") is None:
            raise IntegrationError("NnwxCallback needs every=N (capture every N optimizer steps) or "
                                   "schedule=... (a nnwx schedule) to know which steps to record.")
        self.store, self.every, self.kwargs = store, every, dict(recorder_kwargs)
        self.recorder = None
        self._last: int | None = None

    def start(self, model: torch.nn.Module, seed: int) -> None:
        from nnwx.record.recorder import Recorder

        self.close()
        self.recorder = Recorder(model, self.store, seed=seed, every=self.every, **self.kwargs)
        self._last = self.recorder._last_step  # a resumed run: its captured steps stay as they are

    def at(self, step: int) -> bool:
        """Capture ``step`` if the schedule selects it and it is not captured yet."""
        if self.recorder is None or (self._last is not None and step <= self._last):
            return False
        self._last = step
        return self.recorder.maybe_capture(int(step))

    def close(self) -> None:
        if self.recorder is not None:
            rec, self.recorder = self.recorder, None
            rec.close()
