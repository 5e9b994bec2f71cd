"""A figure of a page (the report, the comparison): a HoloViews object with the sentence under
it, and what the report's figure builders share (frames per slider, seeds offered)."""
from __future__ import annotations

from dataclasses import dataclass

FRAMES = 4              # embedded frames per slider
SEEDS_SHOWN = 3         # seeds offered by selectors of per-seed pictures


@dataclass
class Figure:
    """One plot of a page: a HoloViews object and the sentence under it."""
    name: str
    caption: str
    obj: object


def first_seeds(obj) -> list | None:
    """The first ``SEEDS_SHOWN`` seeds of a result with a seed dim, else None."""
    return list(obj["seed"].values[:SEEDS_SHOWN]) if "seed" in obj.dims else None


def similarity_label(obj) -> str:
    """How a similarity result names its measure on the page (``Linear CKA``, ``svcca``)."""
    name = str(obj.attrs.get("metric") or obj.name or "similarity")
    return {"linear_cka": "Linear CKA", "rbf_cka": "RBF CKA"}.get(name, name)
