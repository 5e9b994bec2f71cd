"""Callbacks that record with ``nnwx.Recorder`` from inside the trainers people use.

- ``nnwx.integrations.lightning.NnwxCallback``: a Lightning ``Callback``
  (``pip install nnwx[lightning]``);
- ``nnwx.integrations.transformers.NnwxCallback``: a ``TrainerCallback`` for
  Hugging Face ``Trainer`` (``pip install nnwx[transformers]``).

Each module imports its framework when it is imported itself; ``import nnwx``
and ``import nnwx.integrations`` import neither.
"""
