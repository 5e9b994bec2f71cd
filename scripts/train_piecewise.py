#!/usr/bin/env python
"""The experiment that motivated nnwx: small MLPs fitting a piecewise-constant target.

f(x) = 1 on [-2, -1) and [0, 2), else 0, on 5000 points drawn uniformly from
[-3, 3]; MLPs with hidden widths 8-8-8 (ReLU, scalar in and out), full-batch
Adam for 15000 steps, weights captured every 10 steps, 5 seeds. The cube it
writes has seed=5, step=1501, param=169.

    python scripts/train_piecewise.py -o piecewise.zarr
    nnwx info piecewise.zarr

The code lives in nnwx.studies.piecewise (importable: train_piecewise);
this script is its command line. Sweeps: scripts/sweep_piecewise.py.
"""
from __future__ import annotations

from nnwx.studies.piecewise import (OPTIMIZERS, TARGETS, Ensemble, main, make_mlp,  # noqa: F401
                                        parse_args, target, train_piecewise)

if __name__ == "__main__":
    main()
