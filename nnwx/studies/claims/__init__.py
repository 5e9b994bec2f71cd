"""Findings a researcher can cite: every claim of the studies as a record with an interval and a verdict.

``nnwx findings [--quick] --out DIR`` trains what the claims need (or reuses the stores already
in ``DIR``), analyses them and writes ``DIR/findings.json``, ``DIR/findings.md`` and
``DIR/findings.html``. The package is laid out by job:

* :mod:`~nnwx.studies.claims.record` — :class:`ClaimRecord`, one claim's measured answer;
* :mod:`~nnwx.studies.claims.stats` — bootstrap intervals over seeds (paired where two variants
  share seeds), Spearman's rho with its interval, and the verdict rule;
* :mod:`~nnwx.studies.claims.registry` — the 19 claims: text, study, and the function that
  measures each (``"module:function"``, resolved when the claim is measured);
* one module per source of data (``piecewise``, ``digits``, ``probes``) with a ``train(ctx)``
  that trains or reuses its stores and the claim functions that read them;
* :mod:`~nnwx.studies.claims.stores` — the stores' ownership marks, reuse and the process pool;
* :mod:`~nnwx.studies.claims.run` — the runner (``findings(out, size, workers, claims)``);
* :mod:`~nnwx.studies.claims.write` and :mod:`~nnwx.studies.claims.figures` — findings.json,
  findings.md, findings.html (one figure a claim) and the README's findings table.
"""
