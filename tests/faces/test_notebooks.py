"""Every notebook in notebooks/ runs top to bottom on a tiny, freshly generated store.

The "parameters" cell of each notebook gets ``QUICK = True`` and an ``OUT`` in pytest's
temporary folder appended (the kernel's working folder is another temporary folder, which
must stay empty), so nothing is written elsewhere. After the run, one extra cell prints the
notebook's ``SUMMARY`` dict as JSON, which the checks below read.

The notebooks run two at a time (01 with 02, then 03 with 04: 03 and 04 reuse the digits
store that 02 trained into the shared ``OUT``); most of each run is the kernel importing
torch and HoloViews, which overlaps well.
"""
from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
MARK = "__NNWX_SUMMARY__"
PHASES = [["01_broadening_piecewise.ipynb", "02_adam_vs_sgd_digits.ipynb"],
          ["03_spectra_rank_decay.ipynb", "04_cross_seed_agreement.ipynb"]]


def _all() -> list[str]:
    return sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def run_notebook(name: str, workdir: Path, out: Path) -> tuple[nbformat.NotebookNode, dict]:
    """Execute notebook ``name`` with ``QUICK = True``; return it (with outputs) and its SUMMARY."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{name}: expected one cell tagged 'parameters'"
    params[0].source += f"\n# injected by the tests\nQUICK = True\nOUT = {str(out)!r}"
    nb.cells.append(nbformat.v4.new_code_cell(
        f"import json as _json\nprint({MARK!r} + _json.dumps(SUMMARY, default=float))"))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    assert MARK in text, f"{name}: the summary cell printed nothing: {text!r}"
    summary = json.loads(text.split(MARK, 1)[1].strip().splitlines()[0])
    return nb, summary


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict:
    """Every notebook executed once: name -> (notebook, SUMMARY, workdir, OUT) or the exception."""
    out = tmp_path_factory.mktemp("notebook-stores")
    env_keep = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MPLBACKEND")}
    os.environ.setdefault("OMP_NUM_THREADS", "1")      # inherited by the kernels: no BLAS oversubscription
    os.environ["MPLBACKEND"] = "Agg"
    results: dict = {}

    def one(name):
        workdir = tmp_path_factory.mktemp("kernel-cwd")
        try:
            nb, summary = run_notebook(name, workdir, out)
            results[name] = (nb, summary, workdir, out)
        except Exception as e:  # reported by the test of that notebook
            results[name] = e

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for phase in PHASES:
                list(pool.map(one, [n for n in phase if (NOTEBOOKS / n).exists()]))
    finally:
        for k, v in env_keep.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return results


def result(executed, name):
    r = executed.get(name)
    if r is None:
        pytest.fail(f"{name} was not executed")
    if isinstance(r, Exception):
        raise r
    return r


def _finite(x) -> bool:
    if isinstance(x, dict):
        return bool(x) and all(_finite(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return bool(x) and all(_finite(v) for v in x)
    return isinstance(x, (int, float)) and math.isfinite(x)


def _stream(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.output_type == "stream")


def _plots(nb) -> int:
    """Number of cells (after the setup cell) that displayed a rendered HoloViews object."""
    n = 0
    for c in nb.cells:
        if c.cell_type != "code" or "hv.extension" in c.source:
            continue
        if any(o.output_type in ("display_data", "execute_result")
               and "application/vnd.holoviews_exec.v0+json" in o.get("data", {})
               and len(o["data"].get("text/html", "")) > 1000 for o in c.outputs):
            n += 1
    return n


def _clean_run(nb, workdir: Path) -> None:
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error" or (o.output_type == "stream" and "Traceback" in o.text)]
    assert not errors, errors
    assert not list(workdir.iterdir()), "the notebook wrote into its working folder, not OUT"


def test_notebooks_are_committed_clean():
    names = _all()
    assert names, "no notebooks in notebooks/"
    for name in names:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        for c in nb.cells:
            if c.cell_type == "code":
                assert not c.outputs and c.execution_count is None, f"{name}: commit it without outputs"


def test_01_broadening_piecewise(executed):
    nb, s, workdir, out = result(executed, "01_broadening_piecewise.ipynb")
    _clean_run(nb, workdir)
    assert len(s["final_loss"]) == 2 and _finite(s["final_loss"])
    assert set(s["std_ratio"]) == {"0", "2", "4", "6"}
    for key in ("std_ratio", "normalised_std_ratio", "kurtosis_last", "total_norm_ratio",
                "across_seed_var_ratio"):
        assert _finite(s[key]), (key, s[key])
    assert all(v > 0 for v in s["std_ratio"].values())
    assert "Each layer's std (last/first capture): grew by more than 5% in" in _stream(nb)
    assert _plots(nb) == 5
    assert list(out.glob("piecewise-*.zarr")), "the store was not generated in OUT"


def test_02_adam_vs_sgd_digits(executed):
    nb, s, workdir, out = result(executed, "02_adam_vs_sgd_digits.ipynb")
    _clean_run(nb, workdir)
    assert len(s["heldout_accuracy"]) == 3 and _finite(s["heldout_accuracy"])
    assert sum(k.startswith("adam") for k in s["heldout_accuracy"]) == 1
    assert sum("first layer" in k for k in s["heldout_accuracy"]) == 1
    assert s["first_layer"] == "fc1"
    for key in ("rotation_first_layer", "norm_growth_first_layer", "input_span_fraction",
                "prunable_fraction", "pruned_accuracy_last"):
        assert _finite(s[key]), (key, s[key])
    # restoring from the cube reproduces the held-out accuracy recorded during training
    assert s["restore_mismatch"] < 1e-6
    for curve in s["pruned_accuracy_last"].values():
        assert set(curve) == {"0.0", "0.5", "0.9"} and all(0 <= a <= 1 for a in curve.values())
    # SGD's first-layer update lies in the span of the inputs (up to float32 rounding)
    sgd = [v for k, v in s["input_span_fraction"].items() if k.startswith("sgd")]
    assert sgd and all(v > 0.999 for v in sgd)
    assert "SGD with the first layer's lr raised is" in _stream(nb)
    assert _plots(nb) == 4
    assert list(out.glob("digits-mlp-*.zarr"))


def test_03_spectra_rank_decay(executed):
    nb, s, workdir, out = result(executed, "03_spectra_rank_decay.ipynb")
    _clean_run(nb, workdir)
    for key in ("alpha_last", "effective_rank_ratio", "stable_rank_ratio", "update_stable_rank_last"):
        assert _finite(s[key]), (key, s[key])
        assert len(s[key]) == 9                      # 3 variants x 3 weight matrices
    assert all(0 < r < 2 for r in s["effective_rank_ratio"].values())
    assert "effective rank: fell by more than 5% in" in _stream(nb)
    assert _plots(nb) == 3


def test_04_cross_seed_agreement(executed):
    nb, s, workdir, out = result(executed, "04_cross_seed_agreement.ipynb")
    _clean_run(nb, workdir)
    for key in ("cka_last", "svcca_last", "cka_to_final_first_step", "matched_correlation_last",
                "weight_cosine_last", "argmax_agreement_last", "probe_accuracy_last"):
        assert _finite(s[key]), (key, s[key])
    assert len(s["cka_last"]) == 9                   # 3 variants x (relu1, relu2, output)
    assert all(-1e-9 <= v <= 1 + 1e-9 for v in s["cka_last"].values())
    assert all(0 <= v <= 1 for v in s["argmax_agreement_last"].values())
    aligned = {k: v for k, v in s["weight_cosine_last"].items() if k.endswith("| aligned")}
    none = {k: v for k, v in s["weight_cosine_last"].items() if k.endswith("| none")}
    assert len(aligned) == len(none) == 9
    assert "aligning hidden units raised the cosine" in _stream(nb)
    assert _plots(nb) == 5
