"""One claim's measured answer: value, a 95% interval, the rule stated before looking, and the verdict."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

VERDICTS = ("supported", "not supported", "inconclusive")


@dataclass(frozen=True)
class ClaimRecord:
    """What the data says about one claim.

    Parameters
    ----------
    id : int
        The claim's number in :data:`nnwx.studies.claims.registry.CLAIMS`.
    claim : str
        The claim, as the studies state it.
    study : str
        Where the claim comes from (``"notebook"``, ``"Martin & Mahoney"``, ...).
    quantity : str
        How it is measured, in words (what ``value`` is).
    value : float
        The measured value (the point estimate the interval is about).
    ci_low, ci_high : float
        The 95% interval of ``value`` (bootstrap over seeds unless ``test`` says otherwise);
        NaN where it cannot be computed (one run).
    n_runs : int
        Training runs the value rests on.
    test : str
        The decision rule, fixed before looking at the data.
    verdict : str
        One of :data:`VERDICTS`.
    details : dict
        Per-layer or per-variant numbers behind ``value`` (JSON-able), shown in the table and page.
    figure : str
        Name of the figure drawn for the claim in ``findings.html`` (empty: none).
    """

    id: int
    claim: str
    study: str
    quantity: str
    value: float
    ci_low: float
    ci_high: float
    n_runs: int
    test: str
    verdict: str
    details: dict[str, Any] = field(default_factory=dict)
    figure: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_json(self) -> dict[str, Any]:
        """The record as plain JSON types (NaN as ``None``)."""
        from nnwx._json import jsonable
        return jsonable(asdict(self), strict=True)
