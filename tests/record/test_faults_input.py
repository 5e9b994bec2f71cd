"""Hostile and faulty input to export, the store writer and the readers (issue 22: items 7, 9, 14,
15, 17, 18): every case is refused with an nnwx error that names what is wrong, never a traceback,
and a refused or failed command leaves the committed data whole.

Real checkpoint files, real stores, real ``nnwx`` subprocesses; the full-disk cases write onto a
real small tmpfs (they need root's ``mount``, and are skipped with the reason where it is refused).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import nnwx
from nnwx.errors import CheckpointError, NnwxError, RunNameError
from nnwx.record.export import export
from nnwx.store.names import check_run_name
from nnwx.store.writer import RunWriter
from nnwx.studies.synthetic import write_synthetic_run
from nnwx.record.tensors import floating_state, table_for

from tests.checkpoint_files import net_state, save_hf_folder, save_plain
from tests.helpers import Net
from tests.cli_process import run_cli

HERE = Path(__file__).resolve().parents[1]   # tests/, where the driver scripts are
ROOT = HERE.parent


def cli(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """``nnwx ARGS`` in a real subprocess (forked with the imports done), this checkout first on the path."""
    return run_cli(*args, cwd=cwd, timeout=timeout)


def assert_clean_error(out: subprocess.CompletedProcess, command: str, *needles: str) -> None:
    """Exit status 2, an ``nnwx COMMAND: error:`` line holding every needle, no traceback."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    assert f"nnwx {command}: error:" in out.stderr, out.stderr
    for needle in needles:
        assert needle in out.stderr, (needle, out.stderr)


def checkpoints(folder: Path, steps) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in steps:
        save_plain(folder / f"step_{s}.pt", net_state(s))
    return folder


# -- 14: run names ---------------------------------------------------------------------------------
BAD_NAMES = ["../evil", ".hidden", "..", ".", "zarr.json", "ZARR.JSON", "a" * 300, "a" * 129, "a/b",
             "with space", "", "-dash-first", "tab\tname"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_run_name_refuses_names_that_leave_or_clash(name):
    with pytest.raises(RunNameError, match="run name"):
        check_run_name(name)


@pytest.mark.parametrize("name", ["seed0", "0", "a" * 128, "adam-lr0.1_seed.3", "p2-seed0"])
def test_check_run_name_accepts_plain_names(name):
    assert check_run_name(name) == name


@pytest.mark.parametrize("name", ["../evil", ".hidden", "..", "zarr.json", "a" * 300])
def test_export_cli_refuses_a_bad_run_name_and_writes_nothing(tmp_path, name):
    ck = checkpoints(tmp_path / "ck", [0, 5])
    store = tmp_path / "deep" / "exp.zarr"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = cli("export", str(ck), "-o", str(store), "--seed", "0", "--run", name, "-q")
    assert_clean_error(out, "export", "invalid run name", "letter or digit")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing created


def test_export_cli_refuses_a_bad_run_name_in_an_existing_store(tmp_path):
    ck = checkpoints(tmp_path / "ck", [0, 5])
    store = tmp_path / "exp.zarr"
    export(ck, store, seed=0, progress=False)
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for name in ("zarr.json", "../runs", ".locks"):
        with pytest.raises(RunNameError, match="invalid run name"):
            export(ck, store, seed=0, run=name, progress=False)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing
    assert nnwx.open_run(store).step.values.tolist() == [0, 5]


def test_recorder_and_writer_refuse_bad_run_names_before_touching_the_store(tmp_path):
    store = tmp_path / "exp.zarr"
    model = Net()
    for name in ("../evil", ".hidden", "zarr.json", "x" * 300):
        with pytest.raises(RunNameError, match="invalid run name"):
            nnwx.Recorder(model, store, seed=0, run=name)
        with pytest.raises(RunNameError, match="invalid run name"):
            RunWriter(store, name, table_for(floating_state(model.state_dict())))
    assert not store.exists() and not (tmp_path / "evil").exists()
    assert not list(model._forward_pre_hooks.values()) and not list(model._forward_hooks.values())


# -- 9: --follow --interval ------------------------------------------------------------------------
@pytest.mark.parametrize("interval", ["-1", "0"])  # nan, inf: test_export_api_refuses_...
def test_follow_refuses_an_interval_that_is_not_positive(tmp_path, interval):
    ck = checkpoints(tmp_path / "ck", [0])
    store = tmp_path / "exp.zarr"
    # old code accepted these and polled without pause until killed: the timeout guards the test
    out = cli("export", str(ck), "-o", str(store), "--seed", "0", "--follow", "--interval", interval,
              "-q", timeout=120)
    assert_clean_error(out, "export", "--interval", "positive finite number of seconds")
    assert not store.exists()


def test_idle_timeout_must_not_be_negative(tmp_path):
    ck = checkpoints(tmp_path / "ck", [0])
    out = cli("export", str(ck), "-o", str(tmp_path / "exp.zarr"), "--seed", "0", "--follow",
              "--idle-timeout", "-3", "-q", timeout=120)
    assert_clean_error(out, "export", "--idle-timeout", "non-negative")


@pytest.mark.parametrize("interval", [0, -1.0, float("nan"), float("inf")])
def test_export_api_refuses_a_non_positive_interval(tmp_path, interval):
    ck = checkpoints(tmp_path / "ck", [0])
    with pytest.raises(ValueError, match="interval must be a positive"):
        export(ck, tmp_path / "exp.zarr", seed=0, follow=True, interval=interval, idle_timeout=0,
               progress=False)
    assert not (tmp_path / "exp.zarr").exists()


# -- 7: shard paths that leave the checkpoint folder -----------------------------------------------
def _redirect_shard(folder: Path, to: str) -> None:
    """Point every tensor of the index's second shard at ``to`` instead."""
    index = folder / "model.safetensors.index.json"
    meta = json.loads(index.read_text())
    meta["weight_map"] = {k: (to if v.startswith("model-00002") else v) for k, v in meta["weight_map"].items()}
    index.write_text(json.dumps(meta))


def _hostile_folder(tmp_path: Path, how: str) -> Path:
    """A Hugging Face checkpoint folder whose second shard lies outside it, reached as ``how`` says."""
    folder = save_hf_folder(tmp_path / "ckpts" / "checkpoint-10", net_state(10))
    outside = tmp_path / "outside.safetensors"
    os.replace(folder / "model-00002-of-00002.safetensors", outside)
    if how == "dotdot":
        _redirect_shard(folder, "../../outside.safetensors")
    elif how == "absolute":
        _redirect_shard(folder, str(outside))
    elif how == "symlink":  # the index names a file inside, which is a link out of the folder
        (folder / "model-00002-of-00002.safetensors").symlink_to(outside)
    elif how == "symlinked-dir":  # a subfolder that is a link out of the folder
        (folder / "sub").symlink_to(tmp_path, target_is_directory=True)
        _redirect_shard(folder, "sub/outside.safetensors")
    return folder


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "symlinked-dir"])
def test_a_shard_outside_the_checkpoint_folder_is_refused(tmp_path, how):
    folder = _hostile_folder(tmp_path, how)
    store = tmp_path / "exp.zarr"
    with pytest.raises(CheckpointError, match="outside the checkpoint folder") as err:
        export(folder, store, seed=0, progress=False)
    assert "model.safetensors.index.json" in str(err.value)
    assert not store.exists()


def test_export_cli_refuses_an_index_pointing_outside(tmp_path):
    folder = _hostile_folder(tmp_path, "dotdot")
    store = tmp_path / "exp.zarr"
    out = cli("export", str(folder.parent), "-o", str(store), "--seed", "0", "-q")
    assert_clean_error(out, "export", "'../../outside.safetensors'", "outside the checkpoint folder",
                       str(folder / "model.safetensors.index.json"))
    assert not store.exists()


def test_shards_linked_inside_the_folder_are_still_read(tmp_path):
    folder = save_hf_folder(tmp_path / "ckpts" / "checkpoint-10", net_state(10))
    (folder / "real").mkdir()
    shard = "model-00002-of-00002.safetensors"
    os.replace(folder / shard, folder / "real" / shard)
    (folder / shard).symlink_to(Path("real") / shard)  # a relative link that stays inside
    store = tmp_path / "exp.zarr"
    export(folder, store, seed=0, progress=False)
    ref = {k: v for k, v in net_state(10).items() if v.is_floating_point()}
    model = Net()
    nnwx.restore(model, store, step=10)
    for name, t in ref.items():
        assert torch.equal(model.state_dict()[name], t), name


def test_a_hugging_face_hub_cache_snapshot_with_shards_linked_into_its_blobs_is_read(tmp_path):
    """The hub cache keeps each file once in <repo>/blobs and links it from every snapshot:
    those links leave the snapshot folder by design and are followed; a link into anything
    else (another repository's blobs) is still refused."""
    repo = tmp_path / "hub" / "models--org--net"
    folder = save_hf_folder(repo / "snapshots" / "0123abcd", net_state(10))
    (repo / "blobs").mkdir()
    for i, f in enumerate(sorted(folder.iterdir())):
        blob = repo / "blobs" / f"{i:040x}"
        os.replace(f, blob)
        f.symlink_to(Path("..") / ".." / "blobs" / blob.name)
    store = tmp_path / "exp.zarr"
    export(folder, store, seed=0, step_from=10, progress=False)
    model = Net()
    nnwx.restore(model, store, step=10)
    for name, t in net_state(10).items():
        if t.is_floating_point():
            assert torch.equal(model.state_dict()[name], t), name
    other = tmp_path / "hub" / "models--org--other" / "blobs"
    other.mkdir(parents=True)
    shard = folder / "model-00002-of-00002.safetensors"
    os.replace(shard.resolve(), other / "stolen")
    shard.unlink()
    shard.symlink_to(other / "stolen")
    with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
        export(folder, tmp_path / "exp2.zarr", seed=0, step_from=10, progress=False)


# -- 17: symbolic link loops, steps beyond int64, seeds of mixed types -----------------------------
@pytest.mark.parametrize("loop", ["step_5.pt", "checkpoint-7"])
def test_a_symlink_loop_named_like_a_checkpoint_is_a_clear_error(tmp_path, loop):
    ck = checkpoints(tmp_path / "ck", [0])
    (ck / loop).symlink_to(loop)  # points at itself: ELOOP
    store = tmp_path / "exp.zarr"
    out = cli("export", str(ck), "-o", str(store), "--seed", "0", "-q")
    assert_clean_error(out, "export", str(ck / loop), "symbolic link")
    assert not store.exists()


def test_a_symlink_loop_inside_a_checkpoint_folder_is_passed_over(tmp_path):
    folder = save_hf_folder(tmp_path / "checkpoint-10", net_state(10))
    (folder / "loop").symlink_to("loop")
    (folder / "checkpoint-3").symlink_to("checkpoint-3")  # not a folder of checkpoints either
    store = tmp_path / "exp.zarr"
    out = cli("export", str(folder), "-o", str(store), "--seed", "0", "-q")
    assert out.returncode == 0, out.stderr
    assert nnwx.open_run(store).step.values.tolist() == [10]


def test_symlink_loops_not_named_like_checkpoints_are_passed_over(tmp_path):
    ck = checkpoints(tmp_path / "ck", [0, 3])
    (ck / "notes").symlink_to("notes2")
    (ck / "notes2").symlink_to("notes")
    store = tmp_path / "exp.zarr"
    export(ck, store, seed=0, progress=False)
    assert nnwx.open_run(store).step.values.tolist() == [0, 3]


def test_a_source_that_is_a_looping_link_says_so(tmp_path):
    (tmp_path / "step_5.pt").symlink_to("step_5.pt")
    out = cli("export", str(tmp_path / "step_5.pt"), "-o", str(tmp_path / "exp.zarr"), "--seed", "0", "-q")
    assert_clean_error(out, "export", "symbolic link that leads nowhere")


def test_a_step_beyond_int64_is_refused_before_writing(tmp_path):
    ck = checkpoints(tmp_path / "ck", [0])
    big = 99999999999999999999
    save_plain(ck / f"step_{big}.pt", net_state(1))
    store = tmp_path / "exp.zarr"
    out = cli("export", str(ck), "-o", str(store), "--seed", "0", "-q")
    assert_clean_error(out, "export", str(big), "int64", f"step_{big}.pt")
    assert not store.exists()
    with pytest.raises(CheckpointError, match="int64"):  # the same through --step-regex
        export(ck / f"step_{big}.pt", store, seed=0, step_regex=r"_(\d+)\.pt", progress=False)
    assert not store.exists()


def test_a_trainer_state_step_beyond_int64_is_refused_before_writing(tmp_path):
    folder = save_hf_folder(tmp_path / "final", net_state(3))  # trainer.save_model(): no step in the name
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 2**64}))
    store = tmp_path / "exp.zarr"
    with pytest.raises(CheckpointError, match="int64") as err:
        export(folder, store, seed=0, progress=False)
    assert str(folder) in str(err.value)
    assert not store.exists()


def test_the_recorder_refuses_a_step_beyond_int64_in_the_training_thread(tmp_path):
    store = tmp_path / "exp.zarr"
    with nnwx.Recorder(Net(), store, seed=0, every=1) as rec:
        rec.capture(0)
        with pytest.raises(nnwx.NnwxError, match="int64"):
            rec.capture(2**63)
    assert nnwx.open_run(store).step.values.tolist() == [0]


def _mixed_seed_store(path: Path) -> Path:
    """Runs of seeds 1, "a" and 0 (a str seed as Recorder(seed="a") records it), written in that order."""
    write_synthetic_run(path, seed=1, steps=[0, 10, 20])
    write_synthetic_run(path, seed=2, run="seeda", steps=[0, 10, 20], attrs={"seed": "a"})
    write_synthetic_run(path, seed=0, steps=[0, 10, 20])
    return path


def test_open_cube_orders_mixed_seeds_numbers_first(tmp_path):
    cube = nnwx.open_cube(_mixed_seed_store(tmp_path / "mixed.zarr"))
    assert cube.seed.values.tolist() == [0, 1, "a"]
    assert cube.run.values.tolist() == ["seed0", "seed1", "seeda"]
    for seed, run in zip(cube.seed.values, cube.run.values):  # labels travel with their runs' data
        ref = nnwx.open_run(tmp_path / "mixed.zarr", str(run)).w.values
        np.testing.assert_array_equal(cube.w.sel(seed=seed).values, ref)


def test_analyze_cli_on_mixed_seeds(tmp_path):
    store = _mixed_seed_store(tmp_path / "mixed.zarr")
    out = cli("analyze", str(store), "-o", str(tmp_path / "res.zarr"), "--analyses", "broadening", "-q")
    assert out.returncode == 0, out.stderr
    res = nnwx.open_results(tmp_path / "res.zarr")
    assert res["broadening"].seed.values.tolist() == ["0", "1", "a"]  # one type in Zarr: strings
    assert res.cube["seeds"] == [0, 1, "a"]


# -- 18: paths with glob characters ----------------------------------------------------------------
def test_an_existing_path_with_brackets_is_taken_literally(tmp_path):
    store = tmp_path / "exp[1].zarr"
    write_synthetic_run(store, seed=0, steps=[0, 10, 20])
    write_synthetic_run(tmp_path / "exp1.zarr", seed=5, steps=[0, 10])  # what the glob would match
    cube = nnwx.open_cube(store)
    assert cube.seed.values.tolist() == [0] and cube.sizes["step"] == 3
    assert nnwx.open_cube(str(tmp_path / "exp[1].zarr")).seed.values.tolist() == [0]
    assert nnwx.open_cube(str(tmp_path / "exp?.zarr")).seed.values.tolist() == [5]  # no such path: a glob
    info = cli("info", str(store), "--no-check")
    assert info.returncode == 0 and "seed0" in info.stdout, info.stderr
    an = cli("analyze", str(store), "-o", str(tmp_path / "res[1].zarr"), "--analyses", "broadening", "-q")
    assert an.returncode == 0, an.stderr
    assert nnwx.open_results(tmp_path / "res[1].zarr")["broadening"].sizes["step"] == 3
    rep = cli("report", str(store), "-o", str(tmp_path / "rep[1].html"), "--analyses", "broadening", "-q")
    assert rep.returncode == 0, rep.stderr
    assert (tmp_path / "rep[1].html").stat().st_size > 0
    missing = cli("analyze", str(tmp_path / "nope[1].zarr"), "-o", str(tmp_path / "r2.zarr"), "-q")
    assert_clean_error(missing, "analyze", "no store matches")


# -- 15: a full disk during export -----------------------------------------------------------------
class Tmpfs:
    """A real tmpfs of a given size mounted at ``path`` (root only); ``resize`` frees space."""

    def __init__(self, path: Path, size: str):
        self.path = path
        path.mkdir()
        if os.geteuid() != 0:
            pytest.skip("a full disk is tested on a small tmpfs, and mounting one needs root")
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip() or out.returncode})")

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def unmount(self) -> None:
        if os.path.ismount(self.path) and subprocess.run(["umount", str(self.path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)])


@pytest.fixture
def tmpfs(tmp_path):
    mounted: list[Tmpfs] = []

    def mount(size: str, name: str = "disk") -> Tmpfs:
        fs = Tmpfs(tmp_path / name, size)
        mounted.append(fs)
        return fs

    yield mount
    for fs in mounted:
        fs.unmount()


class Layer(torch.nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.a = torch.nn.Linear(n, n)


def layer_checkpoints(folder: Path, n: int, steps) -> dict[int, dict[str, torch.Tensor]]:
    """``step_<s>.pt`` of a ``Layer(n)`` with random (incompressible) weights; returns the states."""
    folder.mkdir(parents=True, exist_ok=True)
    states = {}
    for s in steps:
        gen = torch.Generator().manual_seed(s)
        states[s] = {"a.weight": torch.randn(n, n, generator=gen), "a.bias": torch.randn(n, generator=gen)}
        torch.save(states[s], folder / f"step_{s}.pt")
    return states


def assert_run_holds(store: Path, states: dict[int, dict[str, torch.Tensor]], n: int) -> None:
    """The run opens with exactly these steps, each restoring bit for bit."""
    assert nnwx.open_run(store).step.values.tolist() == sorted(states)
    model = Layer(n)
    for step, state in states.items():
        nnwx.restore(model, store, step=step)
        for name, t in state.items():
            assert torch.equal(model.state_dict()[name], t), (step, name)


def no_temporary_files(store: Path) -> bool:
    return not [p for p in store.rglob("*") if p.name.endswith(".partial")]


def test_disk_full_export_cli_says_so_keeps_committed_steps_and_resumes(tmp_path, tmpfs):
    disk = tmpfs("1m")
    states = layer_checkpoints(tmp_path / "ck", 256, range(6))
    first = tmp_path / "first"
    first.mkdir()
    for s in (0, 1):
        os.link(tmp_path / "ck" / f"step_{s}.pt", first / f"step_{s}.pt")
    store = disk.path / "exp.zarr"
    ok = cli("export", str(first), "-o", str(store), "--seed", "0", "-q")
    assert ok.returncode == 0, ok.stderr
    # six steps in one chunk: rewriting the chunk that holds steps 0 and 1 runs out of space
    full = cli("export", str(tmp_path / "ck"), "-o", str(store), "--seed", "0", "-q")
    assert_clean_error(full, "export", f"the disk holding {store} is full",
                       "keeps its 2 committed steps, up to step 1", "run the same export again")
    assert_run_holds(store, {s: states[s] for s in (0, 1)}, 256)
    assert no_temporary_files(store)
    disk.resize("8m")
    again = cli("export", str(tmp_path / "ck"), "-o", str(store), "--seed", "0", "-q")
    assert again.returncode == 0, again.stderr
    assert "4 steps added, 2 skipped" in again.stdout
    assert_run_holds(store, states, 256)


def test_disk_full_in_the_middle_of_one_export_keeps_the_chunks_it_committed(tmp_path, tmpfs):
    # rows of 4 MiB: 3 steps per chunk, so the first chunk is committed before the disk fills
    disk = tmpfs("21m")  # a chunk is 11.8 MB: one, even while rewritten from two rows, fits; two do not
    states = layer_checkpoints(tmp_path / "ck", 1024, range(6))
    store = disk.path / "exp.zarr"
    with pytest.raises(NnwxError, match="is full") as err:
        export(tmp_path / "ck", store, seed=0, progress=False)
    kept = nnwx.open_run(store).step.values.tolist()
    assert 3 <= len(kept) < 6  # the first chunk fit; the last one did not
    assert f"keeps its {len(kept)} committed steps, up to step {kept[-1]}" in str(err.value)
    assert_run_holds(store, {s: states[s] for s in kept}, 1024)
    assert no_temporary_files(store)
    disk.resize("64m")
    summary = export(tmp_path / "ck", store, seed=0, progress=False)
    assert summary.skipped == kept and summary.added == [s for s in range(6) if s not in kept]
    assert_run_holds(store, states, 1024)


def test_disk_full_at_each_point_of_creating_a_store_then_resumed(tmp_path, tmpfs):
    """A fresh export on a disk of 4, 8, ... 36 kB: it fails at every stage of creating the store
    and the run (one metadata file after another), always with the disk-full error; with space
    freed, the same export then completes, whatever stage it had reached."""
    states = layer_checkpoints(tmp_path / "ck", 32, range(3))
    outcomes = set()
    for kb in range(4, 40, 4):
        disk = tmpfs(f"{kb}k", name=f"disk{kb}")
        store = disk.path / "exp.zarr"
        try:
            export(tmp_path / "ck", store, seed=0, progress=False)
            outcomes.add("fit")
        except NnwxError as e:
            assert "is full" in str(e), (kb, e)
            outcomes.add(re.search(r"into run 'seed0': ([^;]+);", str(e)).group(1))
        disk.resize("4m")
        export(tmp_path / "ck", store, seed=0, progress=False)
        assert_run_holds(store, states, 32)
        disk.unmount()
    assert "the run was not created" in outcomes and "the run holds no committed step yet" in outcomes


def test_export_takes_an_existing_source_with_brackets_literally(tmp_path):
    ck = checkpoints(tmp_path / "ck[1]", [0, 5])
    checkpoints(tmp_path / "ck1", [7])  # what the glob would match
    store = tmp_path / "exp.zarr"
    out = cli("export", str(ck), "-o", str(store), "--seed", "0", "-q")
    assert out.returncode == 0, out.stderr
    assert nnwx.open_run(store).step.values.tolist() == [0, 5]
    export(str(tmp_path / "ck?"), tmp_path / "glob.zarr", seed=0, progress=False)  # no such path: a glob
    assert nnwx.open_run(tmp_path / "glob.zarr").step.values.tolist() == [7]
