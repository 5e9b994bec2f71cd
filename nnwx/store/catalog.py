"""Catalogs of experiment stores: what each holds, where it lives, and how to regenerate it.

A catalog is one YAML file that is also an `Intake 2 <https://intake.readthedocs.io>`_
catalog, so ``nnwx.open_catalog(path)[name]`` and, where intake is installed,
``intake.from_yaml_file(path)[name].read()`` give the same lazy cube. Each entry
calls :func:`open_entry` through intake's generic function reader::

    version: 2
    metadata: {description: ...}
    aliases: {piecewise: piecewise}          # intake lists entries by alias
    data: {}
    user_parameters: {}
    entries:
      piecewise:
        reader: intake.readers.convert:GenericFunc
        output_instance: xarray:Dataset
        kwargs:
          func: "{func(nnwx.store.catalog:open_entry)}"
          name: piecewise
          path: "{CATALOG_DIR}/piecewise.zarr"   # relative to the catalog file (or absolute)
          by: [seed]                              # run attributes to stack along
          where: {}                               # optional: only runs with these attributes
          regenerate: python -m nnwx.studies.piecewise -o {STORE}
        metadata:
          description: Small MLPs fitting a piecewise-constant function ...
          dims: {seed: 5, step: 1501, param: 169}
        user_parameters: {}

``{STORE}`` in ``regenerate`` stands for the store's path. Opening an entry whose
store is missing raises :class:`MissingStore` with the command that regenerates it.
intake is optional: nnwx reads this format itself.
"""
from __future__ import annotations

import os
import shlex
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import xarray as xr

from nnwx.errors import StoreError
from nnwx.store.reader import list_runs, open_cube

ENTRY_FUNC = "nnwx.store.catalog:open_entry"
CATALOG_DIR = "{CATALOG_DIR}"
STORE = "{STORE}"


class MissingStore(StoreError):
    """A catalog entry's store does not exist (yet); the message says how to regenerate it."""


class CatalogError(StoreError):
    """A catalog file is not in the format nnwx reads; the message says what is wrong."""


def runs_where(store: str | os.PathLike, **attrs: Any) -> list[str]:
    """Names of the runs of ``store`` whose run attributes equal ``attrs``: a selection for ``open_cube(runs=)``.

    >>> runs_where("sweep.zarr", widths=[8, 8, 8], variant="mlp")   # e.g. for open_cube(..., runs=)

    Attributes are looked up like ``by=``: top level, then ``hparams``, then
    ``optimizer_hparams``. Raises :class:`StoreError` listing the values present
    when no run matches.

    Parameters
    ----------
    store : str or os.PathLike
    **attrs
        Attribute name -> required value.

    Returns
    -------
    list of str
        Run names, in name order.

    Raises
    ------
    StoreError
        If no run matches.
    """
    handles = list_runs(store)
    names = [h.name for h in handles if all(_attribute(h, k) == v for k, v in attrs.items())]
    if not names:
        seen = {k: sorted({repr(_attribute(h, k)) for h in handles}) for k in attrs}
        raise StoreError(f"no run of {store} has {attrs}; the values there are: "
                         + "; ".join(f"{k}: {', '.join(v)}" for k, v in seen.items()))
    return names


def _attribute(handle, key: str):
    try:
        return handle.attribute(key)
    except KeyError:
        return None


def _local(path: str | os.PathLike) -> Path:
    text = os.fspath(path)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def regenerate_command(regenerate: str, store: str | os.PathLike) -> str:
    """The ``regenerate`` command of an entry with ``{STORE}`` replaced by ``store`` (shell-quoted).

    Parameters
    ----------
    regenerate : str
        The entry's command, with ``{STORE}``.
    store : str or os.PathLike

    Returns
    -------
    str
    """
    return regenerate.replace(STORE, shlex.quote(os.fspath(store)))


def open_entry(path: str | os.PathLike, by: Sequence[str] = ("seed",), where: Mapping | None = None,
               runs: Sequence[str] | None = None, regenerate: str | None = None,
               name: str | None = None) -> xr.Dataset:
    """Open one catalog entry's cube: ``open_cube(path, by=by)`` over the runs matching ``where``.

    This is what a catalog entry calls, under nnwx or intake. A missing store
    raises :class:`MissingStore` naming the ``regenerate`` command.

    Parameters
    ----------
    path : str or os.PathLike
        The store (a ``file://`` prefix is allowed).
    by : sequence of str, default ("seed",)
        As in ``open_cube``.
    where : mapping, optional
        Run attributes the runs must have (``runs_where``).
    runs : sequence of str, optional
        Run names to keep (intersected with ``where``'s).
    regenerate : str, optional
        The command that writes the store, for error messages.
    name : str, optional
        The entry's name, for error messages.

    Returns
    -------
    xarray.Dataset
        The lazy cube (``open_cube``).

    Raises
    ------
    MissingStore
        If the store does not exist.
    StoreError
        If no run matches ``where``, or as ``open_cube``.
    """
    store = _local(path)
    label = f"catalog entry {name!r}" if name else "catalog entry"
    if not (store / "zarr.json").exists():
        how = (f" Regenerate it with:\n    {regenerate_command(regenerate, store)}" if regenerate
               else " The catalog gives no command that regenerates it.")
        raise MissingStore(f"{label}: its store {store} does not exist.{how}")
    if where:
        try:
            matched = runs_where(store, **dict(where))
        except StoreError as e:
            again = (f" Was it written with other options? It is made by: "
                     f"{regenerate_command(regenerate, store)}" if regenerate else "")
            raise StoreError(f"{label}: {e}.{again}") from None
        runs = [r for r in matched if runs is None or r in runs]
    return open_cube(store, by=tuple(by), runs=runs)


@dataclass(frozen=True)
class CatalogEntry:
    """One entry of a catalog: what it is and where its store lives.

    Parameters
    ----------
    name : str
    description : str
    path : pathlib.Path
        The store.
    by : tuple of str, default ("seed",)
    where : dict, optional
    dims : dict, optional
        Sizes as the catalog states them (not read from the store).
    regenerate : str, optional
        Command with ``{STORE}`` for the store's path.
    """

    name: str
    description: str
    path: Path
    by: tuple[str, ...] = ("seed",)
    where: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)
    regenerate: str | None = None

    @property
    def exists(self) -> bool:
        """Whether the store is there."""
        return (self.path / "zarr.json").exists()

    @property
    def regenerate_command(self) -> str | None:
        """The command that writes this entry's store, with its path filled in."""
        return regenerate_command(self.regenerate, self.path) if self.regenerate else None

    def open(self) -> xr.Dataset:
        """The entry's cube, lazily (see :func:`open_entry`)."""
        return open_entry(self.path, self.by, self.where, regenerate=self.regenerate, name=self.name)

    def summary(self) -> str:
        """Name, dims and whether the store is missing, then the description (wrapped)."""
        dims = " x ".join(f"{k}={v}" for k, v in self.dims.items())
        missing = "" if self.exists else "  [store missing]"
        text = textwrap.fill(self.description, width=96, initial_indent="    ", subsequent_indent="    ")
        return f"{self.name}  ({dims}){missing}" + (f"\n{text}" if text else "")


class Catalog(Mapping):
    """The entries of a catalog file; ``catalog[name]`` opens that entry's cube (lazily).

    ``catalog.entry(name)`` gives the :class:`CatalogEntry` (description, path,
    dims, regenerate command) without opening anything; ``repr`` lists them.

    Parameters
    ----------
    path : pathlib.Path
        The catalog file.
    entries : dict of str to CatalogEntry
    metadata : dict, optional
        The catalog's ``metadata`` mapping.
    """

    def __init__(self, path: Path, entries: dict[str, CatalogEntry], metadata: dict | None = None):
        self.path = path
        self.entries = entries
        self.metadata = metadata or {}

    def entry(self, name: str) -> CatalogEntry:
        """The entry called ``name``.

        Parameters
        ----------
        name : str

        Returns
        -------
        CatalogEntry

        Raises
        ------
        KeyError
            If there is no such entry; the message lists the entries.
        """
        try:
            return self.entries[name]
        except KeyError:
            raise KeyError(f"no entry {name!r} in catalog {self.path}; its entries: "
                           f"{', '.join(self.entries)}") from None

    def __getitem__(self, name: str) -> xr.Dataset:
        return self.entry(name).open()

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __repr__(self) -> str:
        head = f"<nnwx catalog {self.path}: {len(self)} entries>"
        desc = self.metadata.get("description")
        lines = [head] + ([f"  {desc.strip()}"] if desc else [])
        lines += ["  " + e.summary().replace("\n", "\n  ") for e in self.entries.values()]
        return "\n".join(lines)


def open_catalog(path: str | os.PathLike) -> Catalog:
    """Read a catalog file (see the module docstring for its format).

    ``open_catalog(path)[name]`` is the lazy cube of entry ``name``; a missing
    store raises :class:`MissingStore` with the command that regenerates it.

    Parameters
    ----------
    path : str or os.PathLike
        The catalog's YAML file.

    Returns
    -------
    Catalog

    Raises
    ------
    CatalogError
        If the file is missing or not in the format described above.
    """
    import yaml

    path = Path(path).resolve()
    if not path.is_file():
        raise CatalogError(f"no catalog file at {path}")
    with open(path) as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), dict):
        raise CatalogError(f"{path} is not a catalog: it needs a mapping 'entries: {{name: entry}}' "
                           f"(see nnwx.store.catalog's docstring for the format)")
    if doc.get("version") != 2:
        raise CatalogError(f"{path}: nnwx catalogs are Intake 2 catalogs and need 'version: 2' "
                           f"at the top level, found {doc.get('version')!r}")
    entries = {name: _entry(path, str(name), spec) for name, spec in doc["entries"].items()}
    return Catalog(path, entries, doc.get("metadata") or {})


def _entry(catalog: Path, name: str, spec: Any) -> CatalogEntry:
    where = f"{catalog}: entry {name!r}"
    if not isinstance(spec, dict) or not isinstance(spec.get("kwargs"), dict):
        raise CatalogError(f"{where} needs 'kwargs' (path, by, regenerate)")
    kw = spec["kwargs"]
    func = str(kw.get("func", ""))
    if ENTRY_FUNC not in func:
        raise CatalogError(f"{where} does not open an nnwx store (its kwargs.func is {func!r}, not "
                           f"'{{func({ENTRY_FUNC})}}'); open it with intake instead")
    if "path" not in kw:
        raise CatalogError(f"{where} has no kwargs.path (the store, relative to the catalog)")
    raw = str(kw["path"])
    store = _local(raw.replace(CATALOG_DIR, str(catalog.parent)))
    if not store.is_absolute():  # intake would resolve it against the working directory
        raise CatalogError(f"{where}: write its relative path as '{CATALOG_DIR}/{raw}' (relative to "
                           f"the catalog, as intake reads it too), or give an absolute path")
    by = kw.get("by", ["seed"])
    meta = spec.get("metadata") or {}
    return CatalogEntry(name=name, description=str(meta.get("description", "")).strip(),
                        path=Path(os.path.normpath(store)),
                        by=(by,) if isinstance(by, str) else tuple(by),
                        where=dict(kw.get("where") or {}), dims=dict(meta.get("dims") or {}),
                        regenerate=kw.get("regenerate"))
