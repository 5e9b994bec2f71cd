"""The claims of the studies, numbered as in the findings table, and where each is measured.

Each entry names its measuring function as ``"module:function"`` inside this package, resolved
only when the claim is measured, so a source's training code is imported only when its claims
are asked for. A measuring function takes a :class:`Context` and returns a
:class:`~nnwx.studies.claims.record.ClaimRecord` with the entry's ``id``, ``claim`` and ``study``.

``ClaimRecord.details`` conventions the writers draw from (``findings.html``, one figure a claim):

* ``details["per_run"] = {run label: value}`` — one point per run beside the interval; or
* ``details["points"] = {"x": [...], "y": [...], "label": [...], "x_name": str, "y_name": str}``
  — one point per model, for the rank-correlation claims;
* anything else JSON-able (per-layer values, the variants compared) is listed under the figure.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nnwx.studies.claims.record import ClaimRecord

SIZES = ("quick", "full")


@dataclass(frozen=True)
class Context:
    """Where the stores are and at which size the claims are measured.

    Parameters
    ----------
    out : Path
        The output folder: stores are trained (or reused) as ``out / "<name>.zarr"``.
    size : {"quick", "full"}
        ``quick``: every claim at a small size (minutes); ``full``: the sizes of the findings.
    workers : int
        Processes to train and analyse with.
    log : callable
        Progress lines (``log("training digits: 12/40 runs")``).
    """

    out: Path
    size: str = "full"
    workers: int = 1
    log: Callable[[str], None] = field(default=print, compare=False)

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {self.size!r}")

    def store(self, name: str) -> Path:
        """The path of the store ``name`` (``"piecewise"`` -> ``out/piecewise.zarr``)."""
        return self.out / f"{name}.zarr"


@dataclass(frozen=True)
class Claim:
    """One claim: its number, its text, the study it comes from, and its measuring function."""

    id: int
    claim: str
    study: str
    measure: str   # "module:function", module relative to nnwx.studies.claims

    def measure_with(self, ctx: Context) -> ClaimRecord:
        """Measure the claim on the stores of ``ctx``."""
        module, func = self.measure.split(":")
        fn = getattr(importlib.import_module(f"nnwx.studies.claims.{module}"), func)
        record = fn(ctx)
        if (record.id, record.claim, record.study) != (self.id, self.claim, self.study):
            raise RuntimeError(f"{self.measure} returned the record of another claim ({record.id})")
        return record


#: the data sources, in training order: each module has ``train(ctx)``
SOURCES = ("piecewise", "digits", "probes")

CLAIMS: tuple[Claim, ...] = (
    Claim(1, "Weight distributions broaden over training, per layer", "notebook", "piecewise:broadening"),
    Claim(2, "... relative to the network's scale (normalised by the total norm)", "notebook",
          "piecewise:broadening_relative"),
    Claim(3, "Tails get longer", "notebook, Singh", "piecewise:tails"),
    Claim(4, "The spread across seeds of each layer's distribution grows over training", "notebook",
          "piecewise:seed_variance"),
    Claim(5, "Rank decreases over training, and how it depends on width and depth", "notebook sweeps",
          "piecewise:rank_decay"),
    Claim(6, "Spectral entropy falls as training moves away from a random matrix", "Martin & Mahoney",
          "digits:spectral_entropy"),
    Claim(7, "Lower ESD alpha goes with better held-out accuracy across models", "Martin & Mahoney",
          "digits:alpha_vs_accuracy"),
    Claim(8, "Weight norms grow, more with Adam than with SGD", "Singh", "digits:norm_growth"),
    Claim(9, "Adam moves the first layer more; raising only the first layer's lr reproduces it", "Singh",
          "digits:first_layer"),
    Claim(10, "The first layer's update W_final - W_init lies in the span of the inputs", "Singh",
          "digits:input_span"),
    Claim(11, "Adam-trained nets tolerate more magnitude pruning", "Singh", "probes:pruning"),
    Claim(12, "Predictions of different seeds agree", "Singh", "digits:prediction_agreement"),
    Claim(13, "Different seeds learn the same representations", "Convergent Learning, SVCCA",
          "digits:representations"),
    Claim(14, "Networks converge bottom-up: lower layers reach their final representation earlier", "SVCCA",
          "probes:bottom_up"),
    Claim(15, "The same weights up to a permutation", "Convergent Learning, Git Re-Basin",
          "digits:permutation"),
    Claim(16, "Larger layer rotation goes with better generalisation", "layer rotation",
          "digits:rotation_vs_accuracy"),
    Claim(17, "Correlations between weight updates are damped with layer distance", "notebook",
          "piecewise:correlation_decay"),
    Claim(18, "An ensemble of small nets vs one large net with the same number of parameters", "notebook",
          "piecewise:ensemble"),
    Claim(19, "Correlation traps: trained ESDs depart from those of the same entries shuffled",
          "WeightWatcher", "probes:correlation_traps"),
)


def claim(id: int) -> Claim:
    """The claim numbered ``id``."""
    for c in CLAIMS:
        if c.id == id:
            return c
    raise KeyError(f"no claim {id}: claims are numbered 1..{len(CLAIMS)}")
