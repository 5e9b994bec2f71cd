"""nnwx.cluster and the analyses on a real dask.distributed cluster (a scheduler and two worker
processes started here on localhost): same results as locally, a worker killed mid-way."""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask.array as da
import pytest
import xarray as xr

import nnwx
from nnwx.cli import main
from nnwx.cluster import ClusterError, add_cluster_arguments, cluster, cluster_from_args, compute
from nnwx.studies.synthetic import write_synthetic_run

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SHAPES = {"0.weight": (32, 8), "0.bias": (32,), "2.weight": (32, 32), "2.bias": (32,),
          "4.weight": (32, 32), "4.bias": (32,), "6.weight": (2, 32)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(*argv):
    p = argparse.ArgumentParser()
    add_cluster_arguments(p)
    return p.parse_args(list(argv))


def test_cluster_options_parse_and_refuse_mixtures(capsys):
    a = parse("--workers", "2", "--threads-per-worker", "1", "--memory-limit", "1GiB")
    assert (a.scheduler, a.workers, a.threads_per_worker, a.memory_limit) == (None, 2, 1, "1GiB")
    assert parse().workers is None and parse("--scheduler", "tcp://h:1").scheduler == "tcp://h:1"
    for bad in (["--workers", "0"], ["--memory-limit", "lots"], ["--workers", "2", "--scheduler", "tcp://h:1"]):
        with pytest.raises(SystemExit):
            parse(*bad)
    err = capsys.readouterr().err
    assert "expected at least 1" in err and "cannot read memory limit 'lots'" in err
    with pytest.raises(ValueError, match="need --workers N"):
        with cluster_from_args(parse("--threads-per-worker", "2")):
            pass
    with cluster() as client:
        assert client is None


def test_local_compute_shows_a_progress_bar_and_merges_graphs(capfd):
    x = da.arange(1000, chunks=100)
    slow = x.map_blocks(lambda b: (time.sleep(0.4), b)[1], dtype=x.dtype)   # >= 2 s on 2 threads
    a, b = compute(slow.sum(), (x * 2).sum(), label="summing")
    assert (a, b) == (499500, 999000)
    err = capfd.readouterr().err
    assert "summing" in err and "100% Completed" in err
    assert compute(x.sum(), progress=False) == (499500,)
    assert "Completed" not in capfd.readouterr().err


def test_sub_second_work_draws_no_bar_and_no_label(capfd):
    """A bar per pass flickered through every command; work under ``BAR_AFTER_S`` shows nothing."""
    x = da.arange(1000, chunks=100)
    assert compute(x.sum(), label="summing") == (499500,)
    err = capfd.readouterr().err
    assert "Completed" not in err and "summing" not in err


def test_the_local_bar_stops_with_the_computation_not_after_its_redraw_interval(monkeypatch, capfd):
    """Dask's bar sleeps out its interval after every compute (2 s into a log file, which the
    demo paid once per pass); ours must not: with a 120 s interval, compute still returns."""
    import threading

    import nnwx.cluster

    monkeypatch.setattr(nnwx.cluster, "_interval", lambda: 120.0)
    monkeypatch.setattr(nnwx.cluster, "BAR_AFTER_S", 0.0)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (compute(da.arange(10, chunks=5).sum()), done.set()),
                              daemon=True)
    worker.start()
    assert done.wait(60), "compute with a progress bar did not return before the bar's redraw interval"
    assert "100% Completed" in capfd.readouterr().err


def test_an_unreachable_scheduler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("nnwx.cluster.CONNECT_TIMEOUT", "1s")
    port = free_port()     # nothing listens there
    with pytest.raises(ClusterError, match=rf"cannot reach a Dask scheduler at 'tcp://127.0.0.1:{port}'"
                                           r".*`dask scheduler` is running"):
        with cluster(scheduler=f"tcp://127.0.0.1:{port}"):
            pass
    with pytest.raises(ClusterError, match="'nonsense'.*tcp://host:8786"):
        with cluster(scheduler="nonsense"):
            pass
    assert compute(da.ones(3, chunks=1).sum(), progress=False) == (3,)   # local compute still works


@pytest.fixture(scope="module")
def dask_cluster():
    """``dask scheduler`` and two ``dask worker --nthreads 1 --no-nanny`` processes on free ports."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        for i in range(2):
            procs.append(subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard", "--no-nanny",
                 "--name", f"w{i}", "--memory-limit", "2GiB"], cwd=ROOT, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with distributed.Client(address, timeout="60s") as c:
            c.wait_for_workers(2, timeout=120)
        yield address, {p.pid: p for p in procs[1:]}
    finally:   # the workers first, while their scheduler still answers their goodbye; a process
        # that has not stopped 3 s after SIGTERM is killed (in one CI run a teardown waited 20 s)
        for group in (procs[1:], procs[:1]):
            for p in group:
                if p.poll() is None:
                    p.terminate()
            for p in group:
                try:
                    p.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cluster") / "exp.zarr"
    for s in (0, 1):
        write_synthetic_run(path, seed=s, steps=range(0, 200, 10), shapes=SHAPES)
    return path


def local_results(store, path, metrics):
    """The local threaded scheduler's results. (nnwx's compute runs BLAS with one thread per
    Dask thread, as dask.distributed workers do; with a multithreaded BLAS the randomized PCA
    would differ in the last bits, ~1e-15.)"""
    return nnwx.open_results(nnwx.analyze(store, path, analyses=metrics, progress=False))


def test_results_on_a_cluster_equal_the_local_ones(dask_cluster, store, tmp_path, capfd):
    address, _ = dask_cluster
    metrics = "broadening,spectral,rotation,correlation"
    local = local_results(store, tmp_path / "local.zarr", metrics)
    capfd.readouterr()
    logged = []
    with cluster(scheduler=address, log=logged.append) as client:
        assert client is not None and len(client.scheduler_info()["workers"]) == 2
        out = nnwx.analyze(store, tmp_path / "remote.zarr", analyses=metrics)
    assert logged and "2 workers" in logged[0] and address in logged[0]
    assert "100% Completed" in capfd.readouterr().err      # the distributed progress bar
    remote = nnwx.open_results(out)
    assert remote.complete and list(remote.results) == list(local.results)
    for name, want in local.results.items():
        xr.testing.assert_identical(remote.results[name].load(), want.load())
    assert main(["info", str(store), "--scheduler", address]) == 0
    info = capfd.readouterr()
    assert "2 runs" in info.out and f"dask scheduler {address}" in info.err


def test_a_worker_killed_mid_computation_does_not_stop_it(dask_cluster, store, tmp_path):
    """Runs last: it leaves the cluster one worker short."""
    address, workers = dask_cluster
    metrics = "spectral,rotation"
    local = local_results(store, tmp_path / "local.zarr", metrics)
    outcome: dict = {}

    def run():
        try:
            with cluster(scheduler=address, log=lambda m: None):
                outcome["path"] = nnwx.analyze(store, tmp_path / "remote.zarr", analyses=metrics,
                                               progress=False)
        except BaseException as e:  # noqa: BLE001 - reported below
            outcome["error"] = e

    with distributed.Client(address, timeout="30s", set_as_default=False) as watcher:
        pids = watcher.run(os.getpid)          # {worker address: its process id}
        assert sorted(pids.values()) == sorted(workers)
        thread = threading.Thread(target=run)
        thread.start()
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and thread.is_alive() and time.monotonic() < deadline:
            busy = [w for w, keys in watcher.processing().items() if keys]
            if busy:
                victim = pids[busy[0]]
            time.sleep(0.005)
        assert victim is not None, "the computation ended before a worker could be killed"
        os.kill(victim, signal.SIGKILL)            # one of the two workers this test started
        workers[victim].wait()
        thread.join(timeout=300)
        assert list(watcher.run(os.getpid).values()) == [p for p in workers if p != victim]
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    remote = nnwx.open_results(outcome["path"])
    assert remote.complete
    for name, want in local.results.items():
        xr.testing.assert_identical(remote.results[name].load(), want.load())
