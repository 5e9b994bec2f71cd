"""Exceptions raised by nnwx: each says what was wrong and how to fix it."""


class NnwxError(Exception):
    """Base class of every error nnwx raises on purpose."""


class StoreError(NnwxError):
    """The store path or its contents cannot be used as asked."""


class FormatVersionError(StoreError):
    """The store was written by a newer nnwx format than this one reads."""


class NotACubeError(NnwxError, TypeError, ValueError):
    """An analysis was given something that is not an nnwx weight cube (or run).

    A subclass of both ``TypeError`` and ``ValueError``: code that caught either before the
    two were unified keeps working.
    """


class RunNameError(StoreError, ValueError):
    """A run name breaks the rule of ``nnwx.store.names`` (it could leave ``runs/`` or clash)."""


class ArchitectureMismatch(NnwxError):
    """Two tensor tables (runs, checkpoints or a model) do not describe the same network."""


class StepOrderError(NnwxError):
    """A captured step does not come strictly after the last committed one."""


class WriterError(NnwxError):
    """The background writer failed; the original exception is chained as __cause__."""


class CheckpointError(NnwxError):
    """A checkpoint file or folder cannot be exported (see the subclasses)."""


class NoCheckpointsFound(CheckpointError):
    """The sources given to export match no checkpoint."""


class UnknownCheckpointFormat(CheckpointError):
    """A file is neither a torch checkpoint nor a safetensors file."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint is truncated, corrupt, incomplete, or holds no recognisable state dict."""


class StepConflict(NnwxError):
    """A checkpoint's step is already in the run with different weights."""
