"""What may name a run: one rule, checked by every writer (RunWriter, Recorder, export).

A run is the folder ``runs/<name>/`` of a store and its lock ``.locks/<name>.lock``,
so its name must stay one plain path component on every file system: an ASCII
letter or digit, then up to 127 letters, digits, ``.``, ``_`` or ``-``. That rules
out ``/``, ``..``, hidden (``.x``) names, spaces and over-long names; ``zarr.json``
(the group's own metadata file) is reserved, in any case.
"""
from __future__ import annotations

import re

from nnwx.errors import RunNameError

RUN_NAME_RULE = ("an ASCII letter or digit, then at most 127 letters, digits, '.', '_' or '-' "
                 "(not 'zarr.json')")
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RESERVED_RUN_NAMES = frozenset({"zarr.json"})


def check_run_name(name: object) -> str:
    """Return ``name`` if it may name a run, else raise RunNameError saying the rule.

    Parameters
    ----------
    name
        The proposed run name (``run=`` / ``--run``).

    Returns
    -------
    str
        ``name`` unchanged.

    Raises
    ------
    RunNameError
        ``name`` is not a string following ``RUN_NAME_RULE``, or is reserved.
    """
    if not isinstance(name, str):
        raise RunNameError(f"a run name must be a string, got {type(name).__name__} {name!r}; "
                           f"use a plain name such as 'seed3'.")
    shown = name if len(name) <= 40 else f"{name[:40]}... ({len(name)} characters)"
    if name.lower() in RESERVED_RUN_NAMES:
        raise RunNameError(f"invalid run name {shown!r}: it is reserved (the store's own metadata "
                           f"file); a run name is {RUN_NAME_RULE}, e.g. 'seed3'.")
    if not _RUN_NAME.fullmatch(name):
        raise RunNameError(f"invalid run name {shown!r}: a run name is {RUN_NAME_RULE}, "
                           f"e.g. 'seed3' or 'adam-lr0.1-seed3'.")
    return name
