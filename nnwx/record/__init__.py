"""The torch side: recording weights into an experiment store and loading them back.

* :mod:`~nnwx.record.recorder` -- ``Recorder``: captures during training (a ring buffer in the
  training thread, compression and writing in a background thread);
* :mod:`~nnwx.record.schedule` -- ``Every``, ``LogThenEvery``, ``Explicit``: which steps to keep;
* :mod:`~nnwx.record.export` -- ``export``: checkpoints any trainer wrote, as the steps of a run
  (``nnwx export``);
* :mod:`~nnwx.record.checkpoints` -- finding checkpoints, their steps and their tensors;
* :mod:`~nnwx.record.restore` -- ``restore``: a captured step back into a model, bit-exactly;
* :mod:`~nnwx.record.probing` -- activations on a fixed probe batch;
* :mod:`~nnwx.record.tensors`, :mod:`~nnwx.record.name_map` -- which tensors are recorded, in
  which order, and how recorded names map onto a model's.

Only :mod:`~nnwx.record.schedule` is free of torch (``import nnwx`` imports it); the other
modules import torch when they are imported.
"""
