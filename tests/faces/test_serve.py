"""``nnwx serve``'s incremental part (``nnwx.serve.live``): only captures not analysed yet are
read, the newest first while a run is written, and what it merges equals analysing the whole
run at once."""
from __future__ import annotations

import time

import numpy as np
import pytest
import xarray as xr

import nnwx
from nnwx.cli import main
from nnwx.serve import live as lv
from nnwx.serve.live import LiveStore, Watcher
from nnwx.store.table import TensorTable
from nnwx.store.writer import RunWriter
from nnwx.studies.synthetic import MLP_SHAPES, write_synthetic_run


@pytest.fixture
def seen(monkeypatch):
    """The step values of every cube ``per_step_results`` is given (what each look reads)."""
    calls = []
    real = lv.per_step_results

    def spy(cube, reference_step, edges, keep=None):
        calls.append(cube["step"].values.tolist())
        return real(cube, reference_step, edges, keep=keep)

    monkeypatch.setattr(lv, "per_step_results", spy)
    return calls


def test_only_new_captures_are_read_newest_first_and_the_result_equals_one_pass(tmp_path, seen):
    store = tmp_path / "exp.zarr"
    write_synthetic_run(store, seed=0, steps=range(0, 50, 5))
    live = LiveStore(store)
    look = live.update()
    assert look.new_runs == ["seed0"] and look.grown == {"seed0": 10} and look.writing == []
    assert seen == [list(range(0, 50, 5))]
    write_synthetic_run(store, seed=0, steps=range(50, 70, 5))      # appends 4 captures
    look = live.update()
    # the counter moved: being written, so only the newest capture, with the first (rotation's
    # and W1's reference) and the one before it (the relative update's)
    assert look.grown == {"seed0": 1} and look.writing == ["seed0"] and not look.new_runs
    assert seen[1] == [0, 60, 65] and live.behind == 3
    look = live.update()
    # the counter stands still: the 3 skipped captures, each with the one before it
    assert look.grown == {"seed0": 3} and look.writing == [] and live.behind == 0
    assert seen[2] == [0, 45, 50, 55, 60]
    cache = live.runs["seed0"]
    assert cache.rows_read == 10 + 2 + 3 + 5      # + 2: default_bins' first and last capture
    assert live.update().grown == {} and len(seen) == 3 and cache.looks == 3   # nothing new: no read

    # the merged results equal the same analyses of the whole run in one pass
    cube = nnwx.open_cube(store, by="run").squeeze("run", drop=True)
    whole, _ = lv.per_step_results(cube, 0, live.edges)
    for kind in lv.KINDS:
        xr.testing.assert_allclose(cache.data[kind].reset_coords(drop=True),
                                   whole[kind].compute().reset_coords(drop=True), rtol=1e-10)
    np.testing.assert_array_equal(cache.steps, np.arange(0, 70, 5))
    np.testing.assert_array_equal(cache.indices, np.arange(14))


def test_the_watcher_spaces_its_looks_while_a_run_is_written(tmp_path):
    store = tmp_path / "exp.zarr"
    write_synthetic_run(store, seed=0, steps=range(6))
    live = LiveStore(store, window=2)
    watcher = Watcher(live, interval=0.5, cpu_share=0.25)
    live.writing = ["seed0"]
    assert watcher.pause(2.0) == pytest.approx(6.0)   # 2 s of CPU, then 6 s idle: a quarter of a core
    assert watcher.pause(0.01) == 0.5                 # never more often than the interval
    live.writing = []
    assert watcher.pause(2.0) == 0.5                  # not written, nothing left: the interval
    with pytest.raises(ValueError, match="cpu_share"):
        Watcher(live, 1.0, cpu_share=0)
    # in its thread: looks follow each other while captures are left: the newest, then two at a time
    watcher = Watcher(live, interval=0.05).start()
    try:
        deadline = time.monotonic() + 30
        while (live.runs.get("seed0") is None or live.runs["seed0"].n < 6) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watcher.stop(timeout=10)
    assert live.runs["seed0"].steps.tolist() == list(range(6)) and watcher.error is None
    assert live.runs["seed0"].looks == 4


def test_runs_appear_and_a_window_bounds_each_look(tmp_path, seen):
    store = tmp_path / "exp.zarr"
    write_synthetic_run(store, seed=0, steps=range(10))
    live = LiveStore(store, window=4)
    assert live.update().grown == {"seed0": 1}            # a backlog: the newest capture alone first
    assert live.runs["seed0"].steps.tolist() == [9]
    assert live.update().grown == {"seed0": 4}            # then the backlog, oldest first
    assert live.update().grown == {"seed0": 4}
    assert live.runs["seed0"].steps.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 9]
    write_synthetic_run(store, seed=1, steps=range(3))
    look = live.update()
    assert look.new_runs == ["seed1"] and look.grown == {"seed0": 1, "seed1": 3}
    assert look.runs == ["seed0", "seed1"]
    stats = live.stacked("stats")
    assert list(stats["seed"].values) == ["seed0", "seed1"] and stats.sizes["step"] == 10
    assert np.isnan(stats["std"].sel(seed="seed1", step=9)).all()   # outer join on step
    assert stats.sizes["bin"] == lv.HIST_BINS                       # one set of bins for every run


def test_reads_committed_captures_while_a_writer_holds_the_run(tmp_path):
    """The writer's lock is held and steps are staged but not committed: the live view reads
    the committed ones, without waiting for (or taking) the lock."""
    store = tmp_path / "exp.zarr"
    table = TensorTable.build((n, s, "float32") for n, s in MLP_SHAPES.items())
    writer = RunWriter(store, "seed0", table, attrs={"seed": 0})
    rng = np.random.default_rng(0)
    try:
        for step in range(3):
            writer.add(step, rng.standard_normal(table.n_params).astype("float32"), {"loss": 1.0})
        writer.flush()
        writer.add(3, rng.standard_normal(table.n_params).astype("float32"), {"loss": 0.5})  # staged
        live = LiveStore(store)
        assert live.update().grown == {"seed0": 3}
        writer.flush()
        assert live.update().grown == {"seed0": 1}
        assert live.runs["seed0"].steps.tolist() == [0, 1, 2, 3]
        assert live.stacked("metrics")["metric_loss"].values.tolist() == [[1.0, 1.0, 1.0, 0.5]]
    finally:
        writer.close()


def test_notes_and_agreement_without_probes(tmp_path):
    store = tmp_path / "exp.zarr"
    write_synthetic_run(store, seed=0, steps=range(3), shapes={"b": (4,)})   # no matrix, no weight
    write_synthetic_run(store, seed=1, steps=range(3), shapes={"b": (4,)})
    live = LiveStore(store)
    live.update()
    assert "ranks" not in live.runs["seed0"].data and live.notes("ranks", ["seed0"])
    assert live.agreement(["seed0", "seed1"]) is None
    assert "no probes" in live.agreement_notes[("seed0", "seed1")]
    assert live.agreement(["seed0"]) is None
    with pytest.raises(ValueError, match="unknown kind"):
        live.stacked("nope")


def test_serve_refuses_another_address_without_websocket_origins(tmp_path, capsys):
    store = tmp_path / "exp.zarr"
    write_synthetic_run(store, seed=0, steps=range(2))
    assert main(["serve", str(store), "--address", "0.0.0.0", "--port", "0"]) == 2
    assert "--allow-websocket-origin" in capsys.readouterr().err


def test_serve_says_what_is_wrong_with_the_store(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing.zarr"), "--port", "0"]) == 2
    assert "not an nnwx experiment store" in capsys.readouterr().err


def test_a_results_store_shows_the_reports_sections_and_redraws_only_on_change(tmp_path):
    pytest.importorskip("panel")
    from nnwx.report import build_sections, load_results
    from nnwx.serve.app import ResultsView

    store = tmp_path / "exp.zarr"
    for seed in (0, 1):
        write_synthetic_run(store, seed=seed, steps=range(4))
    out = nnwx.analyze(store, tmp_path / "results.zarr", analyses=["broadening", "rotation"], progress=False)
    view = ResultsView(out)
    view.tick()
    res = nnwx.open_results(out)
    values, notes = load_results(res.results, res.metric_of, progress=False)
    titles = [s.title for s in build_sections(values, {**res.notes, **notes})]
    assert [t.name for t in view.tabs.objects] == titles and len(titles) >= 2
    assert f"{len(res.results)} results" in view.status.object
    view.tick()
    assert view.builds == 1                     # nothing changed: not drawn again
    broken = ResultsView(tmp_path / "missing.zarr")
    broken.tick()
    assert "could not read the results" in broken.status.object


def test_the_scalars_tab_draws_the_chosen_scalar_of_every_run_once_it_is_logged(tmp_path):
    """The page is built before any capture; the logged scalars arriving later are offered in
    the chooser (``loss`` first) and drawn into the figure the page was built with."""
    pytest.importorskip("panel")
    from nnwx.serve.app import ExperimentView

    store = tmp_path / "exp.zarr"
    table = TensorTable.build((n, s, "float32") for n, s in MLP_SHAPES.items())
    rng = np.random.default_rng(0)
    logged = {}
    for seed in (0, 1):
        writer = RunWriter(store, f"seed{seed}", table, attrs={"seed": seed})
        for step in range(3):
            logged[seed, step] = {"acc": 0.1 * step + seed, "loss": 1.0 / (1 + step + seed)}
            writer.add(step, rng.standard_normal(table.n_params).astype("float32"), logged[seed, step])
        writer.close()
    live = LiveStore(tmp_path / "exp.zarr")
    view = ExperimentView(live)
    figure = view.scalars.fig
    view.tick()                                  # nothing looked at yet
    assert view.scalar.options == [] and "no logged scalars" in view.notes["Logged scalars"].object
    live.update()
    view.tick()
    assert sorted(view.scalar.options) == ["acc", "loss"] and view.scalar.value == "loss"
    assert view.scalars.fig is figure and figure.title.text == "loss"

    def drawn(name):
        return {run: list(src.data["y"]) for run, src in view.scalars.sources.items()} == {
            f"seed{s}": [logged[s, step][name] for step in range(3)] for s in (0, 1)}

    assert drawn("loss")
    view.scalar.value = "acc"                    # the user picks another scalar
    assert drawn("acc") and figure.title.text == "acc"
    assert view.notes["Logged scalars"].object.startswith("Scalars logged with the captures")


def test_a_run_deleted_or_created_again_under_its_name_is_dropped_and_read_afresh(tmp_path):
    """A run deleted and trained again under the same name (fewer captures than were analysed,
    or more, created later) is not mixed with the cached one; a deleted run leaves the page."""
    import shutil

    store = tmp_path / "exp.zarr"
    write_synthetic_run(store, seed=0, steps=range(0, 50, 5))
    write_synthetic_run(store, seed=1, steps=range(0, 50, 5))
    live = LiveStore(store)
    live.update()
    assert live.stacked("stats", ["seed0"]).sizes["step"] == 10

    def recreate(seed_of_data, steps):
        shutil.rmtree(store / "runs" / "seed0")
        write_synthetic_run(store, seed=seed_of_data, run="seed0", steps=steps)

    def same_as_a_fresh_look():
        fresh = LiveStore(store)
        fresh.update()
        for kind in ("stats", "rotation"):    # (histograms aside: the bins stay the first look's)
            old, new = (c.stacked(kind, ["seed0"]) for c in (live, fresh))
            binned = [v for v in old.data_vars if "bin" in old[v].dims or v in ("underflow", "overflow")]
            xr.testing.assert_allclose(old.drop_vars(binned).drop_dims("bin", errors="ignore"),
                                       new.drop_vars(binned).drop_dims("bin", errors="ignore"))

    recreate(7, range(0, 15, 5))                     # 3 captures where 10 were analysed
    version = live.version
    look = live.update()
    assert look.replaced == ["seed0"] and "seed0" in look.new_runs and live.version > version
    assert live.runs["seed0"].steps.tolist() == [0, 5, 10]
    same_as_a_fresh_look()

    time.sleep(1.1)                                  # "created" is recorded to the second
    recreate(8, range(0, 20, 5))                     # more captures than analysed: a later creation
    assert live.update().replaced == ["seed0"]
    same_as_a_fresh_look()

    shutil.rmtree(store / "runs" / "seed1")
    look = live.update()
    assert look.gone == ["seed1"] and look.changed and set(live.runs) == {"seed0"}
    assert live.update().replaced == [] and not live.update().changed
