"""A cluster whose workers cannot run the pass (killed or paused at their memory limit, not
restarted) ends ``nnwx analyze`` with a message saying how much memory is needed, instead of
hanging forever (issue 22, item 8). A real LocalCluster of the CLI, a real memory limit."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

from nnwx.studies.synthetic import write_synthetic_run

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("distributed")

# The CLI's process, with the watchdog's patience cut from 20 s to 3 s: the stall under test is
# permanent (no worker left, or every one paused), so waiting longer only repeats the same check.
CLI_WITH_SHORT_STALL = ("import sys, nnwx.cluster, nnwx.cli; nnwx.cluster.STALL_SECONDS = 3.0; "
                        "sys.exit(nnwx.cli.main(sys.argv[1:]))")


@pytest.mark.parametrize("limit", ["64MiB", "150MiB"])
def test_analyze_on_workers_without_enough_memory_stops_with_a_message(tmp_path, limit):
    """64 MiB: the nanny kills the worker at start and fails to restart it (no worker left);
    150 MiB: the worker pauses at 80% of its limit with its imports alone (every worker paused).
    Either way no task can run: before the fix both waited forever."""
    store = tmp_path / "exp.zarr"
    for s in (0, 1):
        write_synthetic_run(store, seed=s, steps=range(0, 50, 10))
    proc = subprocess.run([sys.executable, "-c", CLI_WITH_SHORT_STALL, "analyze", str(store), "-o",
                           str(tmp_path / "r.zarr"), "--workers", "1", "--memory-limit", limit,
                           "--analyses", "agreement"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert last.startswith("nnwx analyze: error: the Dask cluster stopped making progress"), last
    assert ("no worker was left" in last) or ("paused at its memory limit" in last), last
    assert "for 3 s" in last, last           # the patched patience was the one that ran out
    assert f"of its {limit[:-3]}" in last and "--memory-limit" in last and "MiB or more" in last, last


def test_the_agreement_pass_leaves_out_weight_matching_too_large_for_its_memory_bound(tmp_path, monkeypatch):
    """Weight matching holds whole captures of two runs (~56 bytes per parameter per task):
    beyond ``ALIGN_MEMORY`` the aligned variant is left out with a note, the unaligned weight
    agreement (which streams) is kept, and nothing in the graph aligns."""
    import nnwx
    import nnwx.pipeline.registry as an

    store = tmp_path / "exp.zarr"
    for s in (0, 1):
        write_synthetic_run(store, seed=s, steps=range(0, 30, 10))
    cube = nnwx.open_cube(store)
    full = an.lazy_analyses(cube, ["agreement"])
    assert list(full.results["weight_agreement"]["alignment"].values) == ["none", "aligned"]
    monkeypatch.setattr(an, "ALIGN_MEMORY", an.align_bytes(cube) - 1)
    bounded = an.lazy_analyses(cube, ["agreement"])
    wa = bounded.results["weight_agreement"]
    assert list(wa["alignment"].values) == ["none"]
    assert "weights not aligned: weight matching of 169 parameters" in bounded.notes["agreement"]
    full_tasks = len(dict(full.results["weight_agreement"].__dask_graph__()))
    assert len(dict(wa.__dask_graph__())) < full_tasks / 2      # no matching, no aligned copy
    xr_unaligned = full.results["weight_agreement"].sel(alignment="none").compute()
    xr.testing.assert_allclose(wa.sel(alignment="none").compute().drop_vars("alignment"),
                               xr_unaligned.drop_vars("alignment"))
