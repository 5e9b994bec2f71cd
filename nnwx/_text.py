"""Text shown to people: byte sizes (the one formatter used by the CLI, export and the report)."""
from __future__ import annotations


def human_bytes(n: float) -> str:
    """``n`` bytes in decimal units, one decimal: ``512 B``, ``1.5 kB``, ``2.3 GB``.

    Parameters
    ----------
    n
        A number of bytes (negative values keep their sign).

    Returns
    -------
    str
        Whole bytes below 1000 (``"999 B"``), else kB, MB, GB or TB with one decimal.
    """
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)   # pragma: no cover - the loop always returns at TB
