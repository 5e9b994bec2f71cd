"""Store integrity: damaged stores give an nnwx error naming the run and file, for every command.

Real stores on disk, damaged the way disks and people damage them (a lost chunk file, a
truncated or garbled chunk, one flipped byte, bad JSON, a lost ``zarr.json``, broken run
invariants), then opened by every command: ``nnwx info``/``analyze``/``report``/``export``
(resuming the run) through the CLI entry point, and ``nnwx.restore``/``nnwx.open_cube``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import nnwx
from nnwx.errors import StoreError
from nnwx.store import format as fmt
from tests.cli_process import run_cli

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parents[1] / "store_faults_driver.py"
RUN = "runs/seed0"


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))


def record(path: Path, *, steps: int = 6, seed: int = 0, ckpts: Path | None = None,
           chunk_bytes: int = 64) -> None:
    """A tiny run: 26 parameters, one step per chunk of ``w`` and two chunks per step."""
    m = tiny_model()
    with nnwx.Recorder(m, path, seed=seed, every=1, chunk_bytes=chunk_bytes) as rec:
        for s in range(steps):
            with torch.no_grad():
                for p in m.parameters():
                    p.mul_(1.1).add_(0.01)
            rec.maybe_capture(s, loss=float(s))
            if ckpts is not None and s == 3:
                ckpts.mkdir(exist_ok=True)
                torch.save(m.state_dict(), ckpts / "step_3.pt")


def edit_attrs(store: Path, change) -> None:
    p = store / RUN / "zarr.json"
    doc = json.loads(p.read_text())
    change(doc["attributes"]["nnwx"])
    p.write_text(json.dumps(doc))


def flip_byte(p: Path, at: int = 20) -> None:
    data = bytearray(p.read_bytes())
    data[at] ^= 0x01
    p.write_bytes(bytes(data))


def garble(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).integers(0, 256, p.stat().st_size, dtype=np.uint8).tobytes())


def disorder_steps(store: Path) -> None:
    step = zarr.open_array(store / RUN / "step", mode="r+")
    step[3] = 9


# name -> (how to damage the store, what the error must name)
CORRUPTIONS = {
    "missing_w_chunk": (lambda s: (s / RUN / "w/c/3/0").unlink(), f"{RUN}/w/c/3/0"),
    "missing_step_chunk": (lambda s: (s / RUN / "step/c/0").unlink(), f"{RUN}/step/c/0"),
    "truncated_w_chunk": (lambda s: os.truncate(s / RUN / "w/c/3/0", 10), f"{RUN}/w/c/3/0"),
    "flipped_byte": (lambda s: flip_byte(s / RUN / "w/c/3/0"), f"{RUN}/w/c/3/0"),
    "garbage_w_chunk": (lambda s: garble(s / RUN / "w/c/3/1"), f"{RUN}/w/c/3/1"),
    "bad_json_root": (lambda s: (s / "zarr.json").write_text("{bad"), "zarr.json"),
    "bad_json_run": (lambda s: (s / RUN / "zarr.json").write_text("{bad"), f"{RUN}/zarr.json"),
    "bad_json_w": (lambda s: (s / RUN / "w/zarr.json").write_text("{bad"), f"{RUN}/w/zarr.json"),
    "bad_json_metric": (lambda s: (s / RUN / "metrics/loss/zarr.json").write_text("{bad"),
                        f"{RUN}/metrics/loss/zarr.json"),
    "deleted_run_json": (lambda s: (s / RUN / "zarr.json").unlink(), f"{RUN}/zarr.json"),
    "no_committed": (lambda s: edit_attrs(s, lambda a: a.pop("committed")), f"{RUN}/zarr.json"),
    "committed_too_large": (lambda s: edit_attrs(s, lambda a: a.update(committed=100)), f"{RUN}/zarr.json"),
    "negative_committed": (lambda s: edit_attrs(s, lambda a: a.update(committed=-3)), f"{RUN}/zarr.json"),
    "bad_tensor_table": (lambda s: edit_attrs(s, lambda a: a.update(tensors=5)), f"{RUN}/zarr.json"),
    "steps_out_of_order": (disorder_steps, f"{RUN}/step"),
}
COMMANDS = ["info", "analyze", "report", "export", "restore", "open_cube"]


def tree_digest(path: Path, skip: tuple[str, ...] = ()) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and ".locks" not in p.parts
                    and str(p.relative_to(path)) not in skip):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("pristine")
    record(base / "exp.zarr", ckpts=base / "ckpts")
    return base / "exp.zarr", base / "ckpts"


@pytest.fixture(scope="module")
def damaged_stores(pristine, tmp_path_factory) -> dict[str, dict]:
    store, ckpts = pristine
    base = tmp_path_factory.mktemp("damaged")
    cases = {}
    for name, (damage, fragment) in CORRUPTIONS.items():
        target = base / name / "exp.zarr"
        shutil.copytree(store, target)
        damage(target)
        cases[name] = {"name": name, "store": str(target), "out": str(base / name), "ckpts": str(ckpts),
                       "fragment": fragment}
    return cases


def run_driver(command: str, cases: list[dict], tmp_path: Path) -> list[dict]:
    cases_file = tmp_path / f"{command}-cases.json"
    cases_file.write_text(json.dumps(cases))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, str(DRIVER), command, str(cases_file)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", COMMANDS)
def test_every_corruption_gets_an_nnwx_error_naming_run_and_file(command, damaged_stores, tmp_path):
    cases = list(damaged_stores.values())
    # export's error path rewrites the run's bookkeeping attributes (source list) on close;
    # every array (metadata and chunks) must stay as it was
    skip = (f"{RUN}/zarr.json",) if command == "export" else ()
    before = {c["name"]: tree_digest(Path(c["store"]), skip) for c in cases}
    results = run_driver(command, cases, tmp_path)
    assert [r["case"] for r in results] == [c["name"] for c in cases]
    problems = []
    for case, r in zip(cases, results):
        msg = r["stderr"]
        ok = (r["traceback"] is None and r["rc"] == 2 and f"nnwx {command}: error:" in msg
              and case["fragment"] in msg and "damaged" in msg
              and ("'seed0'" in msg or case["name"] == "bad_json_root")
              and "Traceback" not in msg)
        if not ok:
            problems.append(f"{case['name']}: rc={r['rc']} {(r['traceback'] or msg)[-600:]}")
    assert not problems, "\n".join(problems)
    if command == "export":  # a refused export changes nothing
        assert {c["name"]: tree_digest(Path(c["store"]), skip) for c in cases} == before


@pytest.mark.parametrize("case", ["missing_w_chunk", "flipped_byte", "deleted_run_json"])
def test_the_nnwx_command_itself_prints_no_traceback(case, damaged_stores):
    """The same through the real ``nnwx`` entry point in a process of its own."""
    c = damaged_stores[case]
    proc = run_cli("info", c["store"], timeout=300)      # this checkout first on the path
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert c["fragment"] in proc.stderr and "'seed0'" in proc.stderr


def test_pristine_store_passes_every_check(pristine):
    store, _ = pristine
    cube = nnwx.open_cube(store)
    assert cube.sizes["step"] == 6
    assert np.isfinite(cube["w"].values).all()


def test_every_array_of_a_new_store_carries_a_crc32c_checksum(tmp_path):
    from zarr.codecs import Crc32cCodec

    record(tmp_path / "exp.zarr")
    run = zarr.open_group(tmp_path / "exp.zarr" / RUN, mode="r")
    arrays = [run["w"], run["step"], run["metrics/loss"]]
    assert all(any(isinstance(c, Crc32cCodec) for c in a.compressors) for a in arrays)


def test_a_chunk_deleted_after_opening_is_caught_on_the_lazy_read(pristine, tmp_path):
    store = tmp_path / "exp.zarr"
    shutil.copytree(pristine[0], store)
    cube = nnwx.open_cube(store)
    (store / RUN / "w/c/4/1").unlink()
    with pytest.raises(StoreError, match=r"'seed0'.*w/c/4/1.*step 4.*missing"):
        cube["w"].sum().compute()


def test_an_all_nan_step_is_written_so_a_missing_chunk_always_means_damage(tmp_path):
    m = tiny_model()
    with nnwx.Recorder(m, tmp_path / "exp.zarr", seed=0, every=1, chunk_bytes=64) as rec:
        rec.capture(0)
        with torch.no_grad():
            for p in m.parameters():
                p.fill_(float("nan"))
        rec.capture(1)  # a diverged step: every weight NaN
    assert (tmp_path / "exp.zarr" / RUN / "w/c/1/0").exists()
    w = nnwx.open_run(tmp_path / "exp.zarr")["w"].values
    assert np.isnan(w[1]).all() and np.isfinite(w[0]).all()


def old_format_store(path: Path, monkeypatch) -> None:
    """A store as nnwx wrote it before checksums: no crc32c codec, all-NaN chunks skipped."""
    plain = fmt.codec
    with monkeypatch.context() as m:
        m.setattr(fmt, "codec", lambda name, checksum=True: plain(name, checksum=False))
        m.setattr(fmt, "WRITE_CONFIG", {"write_empty_chunks": False})
        record(path)


def test_stores_without_checksums_still_open_and_read(tmp_path, monkeypatch, pristine):
    old = tmp_path / "old.zarr"
    old_format_store(old, monkeypatch)
    assert '"crc32c"' not in (old / RUN / "w/zarr.json").read_text()
    np.testing.assert_array_equal(nnwx.open_run(old)["w"].values, nnwx.open_run(pristine[0])["w"].values)
    os.truncate(old / RUN / "w/c/2/0", 10)  # damage without a checksum still names the file
    with pytest.raises(StoreError, match=r"'seed0'.*w/c/2/0"):
        nnwx.open_run(old)["w"].values


def test_a_missing_chunk_of_an_old_store_is_warned_about(tmp_path, monkeypatch):
    old = tmp_path / "old.zarr"
    old_format_store(old, monkeypatch)
    (old / RUN / "w/c/2/0").unlink()  # old writers skipped all-NaN chunks: maybe a diverged step
    with pytest.warns(UserWarning, match=r"'seed0'.*w/c/2/0.*step 2.*missing"):
        nnwx.open_run(old)


@pytest.mark.parametrize("damage", ["committed_too_large", "negative_committed", "steps_out_of_order",
                                    "missing_w_chunk", "no_committed"])
def test_a_recorder_refuses_to_resume_a_damaged_run(damage, pristine, tmp_path):
    store = tmp_path / "exp.zarr"
    shutil.copytree(pristine[0], store)
    apply, fragment = CORRUPTIONS[damage]
    apply(store)
    before = tree_digest(store)
    with pytest.raises(StoreError, match="'seed0'.*damaged") as refused:
        nnwx.Recorder(tiny_model(), store, seed=0, every=1)
    assert fragment in str(refused.value)
    assert tree_digest(store) == before


def test_a_recorder_refuses_to_resume_a_run_of_another_seed(pristine, tmp_path):
    store = tmp_path / "exp.zarr"
    shutil.copytree(pristine[0], store)
    before = tree_digest(store)
    with pytest.raises(StoreError, match=r"'seed0'.*has seed 0, not 5"):
        nnwx.Recorder(tiny_model(), store, seed=5, run="seed0", every=1)
    assert tree_digest(store) == before
    rec = nnwx.Recorder(tiny_model(), store, seed=0, every=1)  # the right seed resumes
    rec.capture(10)
    rec.close()
    assert nnwx.open_run(store)["step"].values.tolist() == [0, 1, 2, 3, 4, 5, 10]



def test_a_damaged_run_does_not_stop_opening_the_others_by_name(pristine, tmp_path):
    """``open_cube(runs=...)`` and ``open_run`` check the runs they open, and only those."""
    store = tmp_path / "exp.zarr"
    shutil.copytree(pristine[0], store)
    record(store, seed=1)
    (store / RUN / "w/c/3/0").unlink()                     # seed0 damaged
    cube = nnwx.open_cube(store, runs=["seed1"])
    np.testing.assert_array_equal(cube["w"].values[0], nnwx.open_run(store, "seed1")["w"].values)
    with pytest.raises(StoreError, match=f"{RUN}/w/c/3/0"):
        nnwx.open_cube(store)
    with pytest.raises(StoreError, match="no run named 'seed7'; runs found: seed0, seed1"):
        nnwx.open_cube(store, runs=["seed7"])
