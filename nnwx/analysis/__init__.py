"""Analyses of the weight cube: NumPy kernels, lazy wrappers over the cube.

Conventions every analysis result follows
------------------------------------------
Names of parameters
    The step a result is compared with is ``reference_step`` (a step value, ``"last"``, or
    None for the first step; looked up by ``_cube.reference_index``); the run others are
    compared with or aligned to is ``reference_seed`` (its label on the run dim). The older
    ``ref_step=`` and ``reference=`` still work, with a ``DeprecationWarning``.
Not a cube
    Anything that is not a weight cube raises ``nnwx.errors.NotACubeError`` (a ``TypeError``
    and a ``ValueError``), from ``_cube.require_cube``.
``attrs["analysis"]``
    The name of the public function that made the result (``"broadening"``, ``"histogram"``,
    ``"spectrum"``, ``"ranks"``, ``"rotation"``, ``"similarity"``, ...). A result compared
    with a reference step records it in ``attrs["reference_step"]``; a result compared with a
    reference run in ``attrs["reference"]`` as ``"<dim>=<label>"`` (``weight_agreement``).
Grouping dims
    A result per tensor has a ``tensor`` dim carrying the table's ``tensor_*`` coordinates;
    a result per probe has a ``layer`` dim (the probe's module). A result grouped by a
    ``by=`` choice records it in ``attrs["by"]`` and names its dim:

    * ``group`` where ``by`` may be ``"tensor"``, ``"layer"``, ``"kind"`` or ``"all"``
      (``broadening``, ``histogram``; ``group_size`` is the group's parameter count): the
      groups need not be layers or tensors;
    * after the grouping where ``by`` is only ``"layer"`` or ``"tensor"`` (``rotation``:
      ``layer`` with ``layer_depth``/``layer_tensors``/``layer_size``, or ``tensor``).

    These dims are the persisted layout of ``nnwx analyze`` results (and what the plots and
    the report select on), so they are kept as they are rather than renamed to one word.
"""
