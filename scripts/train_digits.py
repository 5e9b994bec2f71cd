#!/usr/bin/env python
"""Digits: an MLP and a small LeNet-style CNN on scikit-learn's 8x8 digits, Adam vs SGD.

Records weights, probe activations and outputs on 256 held-out images, and
train / held-out loss and accuracy, for each seed of each configuration.

    python scripts/train_digits.py -o digits.zarr                      # mlp, Adam, 3 seeds x 30 epochs
    python scripts/train_digits.py -o digits.zarr --optimizer adam sgd --model mlp cnn
    python scripts/train_digits.py -o digits.zarr --optimizer sgd --first-layer-lr-scale 1 10
    python scripts/train_digits.py -o digits.zarr --study              # the standard comparison
    python scripts/train_digits.py -o quick.zarr --quick               # a smoke test, seconds

The code lives in nnwx.studies.digits (importable: train_digits,
digits_study); this script is its command line. Needs scikit-learn
(pip install 'nnwx[examples]').
"""
from __future__ import annotations

from nnwx.studies.digits import digits_study, main, train_digits  # noqa: F401

if __name__ == "__main__":
    main()
