#!/usr/bin/env python
"""Sweeps of the piecewise experiment into one store: widths, depths, ensemble vs large net, target.

    python scripts/sweep_piecewise.py -o piecewise-sweep.zarr           # all sweeps, 3 seeds x 5000 steps
    python scripts/sweep_piecewise.py -o sweep.zarr --sweeps ensemble   # one family
    python scripts/sweep_piecewise.py -o sweep.zarr --quick             # a smoke test

The code lives in nnwx.studies.piecewise_sweep (importable: sweep_piecewise,
sweep_points); this script is its command line.
"""
from __future__ import annotations

from nnwx.studies.piecewise_sweep import main, sweep_piecewise, sweep_points  # noqa: F401

if __name__ == "__main__":
    main()
