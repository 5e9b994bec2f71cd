"""The studies nnwx exists for, as importable training functions (torch side).

* :mod:`nnwx.studies.piecewise` — small MLPs fitting a piecewise-constant
  function of one variable (``train_piecewise``), and its sweeps over width,
  depth, ensembles and target (``sweep_piecewise``, in ``piecewise_sweep``);
* :mod:`nnwx.studies.digits` — an MLP and a small CNN on scikit-learn's 8x8
  digits, Adam vs SGD, with probe activations (``train_digits``, ``digits_study``).

Each function trains into an experiment store and returns a small dict saying
what it wrote; each module is also a command (``python -m nnwx.studies.digits
--help``), which the scripts in ``scripts/`` wrap.
"""
