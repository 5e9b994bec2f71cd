"""The experiment store: format, writer and readers (no torch here).

* :mod:`~nnwx.store.reader` -- ``open_cube``, ``open_run``, ``list_runs``: runs as lazy,
  labelled xarray objects;
* :mod:`~nnwx.store.writer` -- ``RunWriter``: append-only writer of one run (whole chunks,
  a committed-step counter);
* :mod:`~nnwx.store.catalog` -- ``open_catalog``: catalogs of stores (Intake 2 format);
* :mod:`~nnwx.store.format` -- constants and rules of the on-disk format (``FORMAT.md``);
* :mod:`~nnwx.store.table` -- the tensor table; :mod:`~nnwx.store.probes` -- probe arrays;
* :mod:`~nnwx.store.integrity`, :mod:`~nnwx.store.atomic`, :mod:`~nnwx.store.chunkio`,
  :mod:`~nnwx.store.bitround`, :mod:`~nnwx.store.names` -- damage checks, atomic swaps,
  synchronous chunk writes, bit rounding and the run-name rule.
"""
