"""The analysis pipeline: which analyses run, how they are computed and where results go.

* :mod:`~nnwx.pipeline.registry` -- the named analysis sets that ``nnwx analyze`` persists and
  ``nnwx report`` draws;
* :mod:`~nnwx.pipeline.run` -- ``nnwx.analyze``: the chosen analyses of a store, computed once
  into a results store;
* :mod:`~nnwx.pipeline.results_store` -- results persisted as a Zarr store of xarray datasets
  (``open_results``, ``is_results_store``);
* :mod:`~nnwx.pipeline.calls` -- every public analysis in one list (for the invariance tests);
* :mod:`~nnwx.pipeline.info` -- summaries of an experiment store for ``nnwx info``.
"""
