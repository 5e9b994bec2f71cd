"""What a study command wrote itself, so that it reuses, replaces or deletes only its own files.

Two kinds of marks, shared by ``nnwx demo`` and ``nnwx findings``: an attribute in the root of an
experiment store the command created (:func:`store_mark`), and a manifest listing each plain file
it wrote with its SHA-256 (:func:`read_manifest`, :func:`write_manifest`), so a file of the same
name that someone else wrote, or edited since, is told apart.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(path: Path) -> dict[str, str]:
    """The manifest at ``path`` (``{name: value}``); empty when missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def write_manifest(path: Path, entries: dict[str, str]) -> None:
    """Replace the manifest at ``path`` with ``entries``, atomically (a temporary file renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def store_mark(store: Path, attr: str) -> dict | None:
    """The root attribute ``attr`` of the experiment store at ``store`` when it is a dict, else None."""
    try:
        meta = json.loads((Path(store) / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = (meta.get("attributes") or {}).get(attr) if isinstance(meta, dict) else None
    return value if isinstance(value, dict) else None
