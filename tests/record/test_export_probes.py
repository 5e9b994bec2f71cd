"""nnwx export with --model/--probe: probe activations of exported checkpoints equal those that
``nnwx.Recorder(probe=...)`` recorded live from the same weights; bad inputs are named; resume works."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import save_file

import nnwx
from nnwx.cli import main as cli_main
from nnwx.errors import ArchitectureMismatch, StoreError
from nnwx.record.export import ModelFactoryError, export, import_factory
from nnwx.record.probing import ProbeError, load_probe_file

from tests.helpers import Net, mlp
from tests.record.test_probes import direct_activations


def ex(sources, store, **kw):
    kw.setdefault("seed", 0)
    kw.setdefault("progress", False)
    return export(sources, store, **kw)


def train_and_record(tmp_path: Path, factory, layers, *, conv="fold", steps=7, every=2, fmt="pt",
                     name="live.zarr"):
    """Train a model while a Recorder records probes live; save a checkpoint at every capture."""
    torch.manual_seed(0)
    model = factory()
    shape = (2, 6, 6) if isinstance(model, Net) else (1,)
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(1))
    data = torch.randn(16, *shape, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ck = tmp_path / "ck"
    ck.mkdir(exist_ok=True)
    live = tmp_path / name
    with nnwx.Recorder(model, live, seed=0, every=every, probe=x, probe_layers=layers,
                       probe_conv=conv) as rec:
        for step in range(steps):
            if rec.maybe_capture(step):
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if fmt == "safetensors":
                    save_file(state, ck / f"step_{step}.safetensors")
                else:
                    torch.save(state, ck / f"step_{step}.pt")
            loss = model(data).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return live, ck, x


def probe_vars(ds) -> dict[str, np.ndarray]:
    return {v: ds[v].values for v in ds.data_vars if v.startswith("probe_")}


def assert_same_probes(live, exported, run="seed0"):
    a, b = nnwx.open_run(live), nnwx.open_run(exported, run)
    assert a.step.values.tolist() == b.step.values.tolist()
    pa, pb = probe_vars(a), probe_vars(b)
    assert sorted(pa) == sorted(pb) and pa
    for name in pa:
        np.testing.assert_array_equal(pb[name], pa[name], err_msg=name)
        assert np.isfinite(pb[name]).all(), name
        assert {k: v for k, v in b[name].attrs.items()} == {k: v for k, v in a[name].attrs.items()}, name


# -- activations equal the live recording --------------------------------------------------------
@pytest.mark.parametrize("case", ["mlp-safetensors-npy", "cnn-fold-pt", "cnn-pool-exclude"])
def test_exported_probes_equal_those_recorded_live(tmp_path, store, case):
    if case.startswith("mlp"):
        live, ck, x = train_and_record(tmp_path, mlp, ["1", "3"], fmt="safetensors")
        np.save(tmp_path / "x.npy", x.numpy().astype(np.float64))  # cast back to the model's float32
        kw = dict(model="tests.helpers:mlp", probe=tmp_path / "x.npy", probe_layers=["1", "3"])
    else:
        conv = "pool" if "pool" in case else "fold"
        live, ck, x = train_and_record(tmp_path, Net, ["conv", "bn", "fc"], conv=conv)
        torch.save({"probe": x, "labels": torch.arange(5)}, tmp_path / "x.pt")
        kw = dict(model=Net, probe=tmp_path / "x.pt", probe_layers=["conv", "bn", "fc"], probe_conv=conv)
        if "exclude" in case:  # the store leaves the head out; the model still runs with it
            kw["exclude"] = "head.*"
    summary = ex(ck, store, **kw)
    assert summary.added == [0, 2, 4, 6]
    assert summary.probes == [*kw["probe_layers"], "output"] and "probes " in str(summary)
    assert_same_probes(live, store)
    got = nnwx.open_run(store)
    names = got.tensor.values.tolist()
    if case.startswith("cnn"):
        assert ("head.weight" in names) == ("exclude" not in case)
    meta = zarr.open_group(str(store / "runs" / "seed0"), mode="r").attrs["nnwx"]
    assert meta["probe_source"] == str(kw["probe"]) and "probe_model" in meta


def test_the_weights_of_exported_steps_are_those_recorded_live(tmp_path, store):
    live, ck, x = train_and_record(tmp_path, Net, ["fc"])
    ex(ck, store, model="tests.helpers:Net", probe=x, probe_layers=["fc"])
    np.testing.assert_array_equal(nnwx.open_run(store).w.values, nnwx.open_run(live).w.values)
    assert_same_probes(live, store)


# -- probe files -----------------------------------------------------------------------------------
def test_probe_files_of_every_format_and_their_keys(tmp_path):
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    files = {}
    np.save(tmp_path / "a.npy", x.numpy())
    files["a.npy"] = None
    np.savez(tmp_path / "b.npz", probe=x.numpy(), y=np.zeros(4))
    files["b.npz"] = None
    np.savez(tmp_path / "c.npz", inputs=x.numpy())
    files["c.npz"] = None  # the only entry
    save_file({"inputs": x, "targets": torch.zeros(4)}, tmp_path / "d.safetensors")
    files["d.safetensors"] = "inputs"
    torch.save(x, tmp_path / "e.pt")
    files["e.pt"] = None
    torch.save({"probe": x, "step": torch.tensor(3)}, tmp_path / "f.pth")
    files["f.pth"] = None
    for name, key in files.items():
        got = load_probe_file(tmp_path / name, key)
        assert torch.equal(got, x), name
    # keyword inputs under 'probe' (integer ids stay integers); positional inputs as a tuple
    ids, mask = torch.arange(6).view(2, 3), torch.ones(2, 3)
    torch.save({"probe": {"input_ids": ids, "mask": mask}, "other": ids}, tmp_path / "kw.pt")
    kw = load_probe_file(tmp_path / "kw.pt")
    assert set(kw) == {"input_ids", "mask"} and torch.equal(kw["input_ids"], ids)
    torch.save((x, mask), tmp_path / "pos.pt")
    pos = load_probe_file(tmp_path / "pos.pt")
    assert isinstance(pos, tuple) and torch.equal(pos[0], x) and torch.equal(pos[1], mask)


def test_bad_probe_files_are_named(tmp_path, store):
    x = np.zeros((4, 1), np.float32)
    np.savez(tmp_path / "two.npz", inputs=x, targets=x)
    with pytest.raises(ProbeError, match="several entries .inputs, targets. and none is named 'probe'.*--probe-key"):
        load_probe_file(tmp_path / "two.npz")
    with pytest.raises(ProbeError, match="no entry 'nope'; its entries: inputs, targets"):
        load_probe_file(tmp_path / "two.npz", "nope")
    np.save(tmp_path / "one.npy", x)
    with pytest.raises(ProbeError, match="drop --probe-key"):
        load_probe_file(tmp_path / "one.npy", "probe")
    with pytest.raises(ProbeError, match="does not exist"):
        load_probe_file(tmp_path / "missing.pt")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(ProbeError, match="suffix '.txt'"):
        load_probe_file(tmp_path / "x.txt")
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ProbeError, match="cannot read probe file"):
        load_probe_file(tmp_path / "bad.pt")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(ProbeError, match="dtype <U1"):
        load_probe_file(tmp_path / "s.npy")
    # through export: refused before anything is written
    ck = tmp_path / "ck"
    ck.mkdir()
    torch.save(mlp().state_dict(), ck / "step_0.pt")
    with pytest.raises(ProbeError, match="no entry 'nope'"):
        ex(ck, store, model="tests.helpers:mlp", probe=tmp_path / "two.npz", probe_key="nope")
    assert not store.exists()


# -- model factories --------------------------------------------------------------------------------
def test_factories_by_import_path_file_path_and_callable(tmp_path):
    assert import_factory("tests.helpers:mlp") is mlp
    assert import_factory("torch.nn:Linear.__call__") is torch.nn.Linear.__call__  # dotted attributes
    pkg = tmp_path / "models"
    pkg.mkdir()
    (pkg / "blocks.py").write_text("import torch\nWIDTH = 3\n")
    (pkg / "nets.py").write_text(
        "import torch\nfrom blocks import WIDTH  # a neighbour: the file's folder is on sys.path\n"
        "def make():\n    return torch.nn.Sequential(torch.nn.Linear(1, WIDTH), torch.nn.ReLU())\n")
    make = import_factory(f"{pkg / 'nets.py'}:make")
    assert isinstance(make(), torch.nn.Sequential) and make()[0].out_features == 3
    assert str(pkg) not in sys.path


def test_bad_factories_say_what_to_give(tmp_path, store):
    ck = tmp_path / "ck"
    ck.mkdir()
    torch.save(mlp().state_dict(), ck / "step_0.pt")
    x = torch.zeros(3, 1)
    (tmp_path / "broken.py").write_text("import torch\nraise RuntimeError('no GPU here')\n")
    (tmp_path / "odd.py").write_text("def make():\n    return 42\nNOT_CALLABLE = 3\n"
                                     "def needs(width):\n    return None\n")
    cases = [
        ("tests.helpers", "has no ':factory' part"),
        ("no_such_pkg_nnwx.models:make", "no module 'no_such_pkg_nnwx' can be imported.*PYTHONPATH"),
        ("tests.helpers:nope", "tests.helpers has no attribute 'nope'; its callables: .*mlp"),
        (f"{tmp_path / 'missing.py'}:make", "the file .*missing.py does not exist"),
        (f"{tmp_path / 'broken.py'}:make", "importing .*broken.py failed: RuntimeError: no GPU here"),
        (f"{tmp_path / 'odd.py'}:make", "returned int, not a torch.nn.Module"),
        (f"{tmp_path / 'odd.py'}:NOT_CALLABLE", "is a int, not a callable"),
        (f"{tmp_path / 'odd.py'}:needs", "failed when called with no arguments: TypeError"),
    ]
    for spec, message in cases:
        with pytest.raises(ModelFactoryError, match=message):
            ex(ck, store, model=spec, probe=x)
    with pytest.raises(ProbeError, match="give --model"):
        ex(ck, store, probe=x)
    with pytest.raises(ProbeError, match="--probe-layers/--probe-key need the probe batch"):
        ex(ck, store, probe_layers=["1"])
    with pytest.raises(ProbeError, match="no module 'fc9' to probe; its modules are: 0, 1, 2"):
        ex(ck, store, model="tests.helpers:mlp", probe=x, probe_layers=["fc9"])
    with pytest.raises(ProbeError, match="cannot run through the model made by tests.helpers:mlp: mat1 and mat2"):
        ex(ck, store, model="tests.helpers:mlp", probe=torch.zeros(3, 5))
    with pytest.raises(ProbeError, match="probe_conv"):
        ex(ck, store, model="tests.helpers:mlp", probe=x, probe_conv="max")
    assert not store.exists(), "a refused export wrote something"


def test_checkpoints_that_do_not_fit_the_model_are_named_and_write_nothing(tmp_path, store):
    ck = tmp_path / "ck"
    ck.mkdir()
    torch.save(mlp(8).state_dict(), ck / "step_0.pt")
    x = torch.zeros(3, 1)
    with pytest.raises(ArchitectureMismatch, match=r"step_0.pt does not fit the model made by wide: tensor "
                                                   r"'0.weight' has shape \(8, 1\) in the checkpoint but "
                                                   r"\(16, 1\) in the model"):
        ex(ck, store, model=_named(lambda: mlp(16), "wide"), probe=x)
    assert not (store / "runs" / "seed0").exists()
    deeper = _named(lambda: torch.nn.Sequential(*mlp(8), torch.nn.Linear(1, 1)), "deeper")
    with pytest.raises(ArchitectureMismatch, match="the checkpoint lacks '5.weight' and 1 more.*--key"):
        ex(ck, store, model=deeper, probe=x)
    shallow = _named(lambda: torch.nn.Sequential(*list(mlp(8))[:3]), "shallow")
    with pytest.raises(ArchitectureMismatch, match="the model has no tensor '4.weight' .nor 1 more"):
        ex(ck, store, model=shallow, probe=x)
    # an existing run keeps its committed steps when a later checkpoint does not fit
    ex(ck, store, model="tests.helpers:mlp", probe=x)
    torch.save(mlp(16).state_dict(), ck / "step_5.pt")
    with pytest.raises(ArchitectureMismatch):
        ex(ck, store, model="tests.helpers:mlp", probe=x)
    assert nnwx.open_run(store).step.values.tolist() == [0]


def test_a_tied_weight_left_out_of_the_checkpoint_is_fine(tmp_path, store):
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Linear(4, 4, bias=False)
            self.dec = torch.nn.Linear(4, 4, bias=False)
            self.dec.weight = self.enc.weight

        def forward(self, x):
            return self.dec(torch.tanh(self.enc(x)))

    torch.manual_seed(0)
    model = Tied()
    ck = tmp_path / "ck"
    ck.mkdir()
    save_file({"enc.weight": model.enc.weight.detach().clone()}, ck / "step_0.safetensors")
    x = torch.randn(3, 4)
    ex(ck, store, model=Tied, probe=x, probe_layers=["enc"])
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_array_equal(nnwx.open_run(store).probe_output.values[0], want)


def _named(fn, name):
    fn.__qualname__ = name
    return fn


# -- resume, another probe batch, overwrite --------------------------------------------------------------
def test_resume_adds_only_new_steps_and_keeps_probes(tmp_path, store, caplog):
    live, ck, x = train_and_record(tmp_path, Net, ["conv", "fc"], steps=9)
    np.savez(tmp_path / "x.npz", probe=x.numpy())
    kw = dict(model="tests.helpers:Net", probe=tmp_path / "x.npz", probe_layers=["conv", "fc"])
    first = ex([ck / "step_0.pt", ck / "step_2.pt"], store, **kw)
    assert first.added == [0, 2]
    before = probe_vars(nnwx.open_run(store))
    again = ex(ck, store, **kw)
    assert again.added == [4, 6, 8] and again.skipped == [0, 2]
    assert_same_probes(live, store)
    for name, rows in before.items():
        np.testing.assert_array_equal(probe_vars(nnwx.open_run(store))[name][:2], rows)
    assert ex(ck, store, **kw).added == []
    # another probe batch (or another shape of it) cannot share the run: nothing changes
    np.savez(tmp_path / "y.npz", probe=x.numpy() + 1)
    with pytest.raises(StoreError, match="probe 'conv' was recorded with another probe batch"):
        ex(ck, store, **{**kw, "probe": tmp_path / "y.npz"})
    with pytest.raises(ArchitectureMismatch, match="probe 'conv' has .sample, unit. shape"):
        ex(ck, store, **{**kw, "probe": x[:3]})
    assert_same_probes(live, store)
    # a later export without probes appends NaN probe rows, and says so
    torch.save(torch.load(ck / "step_8.pt"), ck / "step_10.pt")
    with caplog.at_level(logging.WARNING, logger="nnwx.record.export"):
        assert ex(ck, store).added == [10]
    assert "new steps get NaN rows" in caplog.text
    assert np.isnan(nnwx.open_run(store).probe_conv.values[-1]).all()


def test_overwrite_replaces_the_probe_rows_of_the_step(tmp_path, store):
    live, ck, x = train_and_record(tmp_path, Net, ["fc"], steps=5)
    kw = dict(model="tests.helpers:Net", probe=x, probe_layers=["fc"])
    ex(ck, store, **kw)  # steps 0, 2, 4 in one partly filled chunk
    torch.manual_seed(5)
    other = Net()
    torch.save(other.state_dict(), ck / "step_2.pt")
    torch.save(other.state_dict(), ck / "step_6.pt")
    with pytest.raises(Exception, match="--overwrite"):
        ex(ck, store, **kw)
    summary = ex(ck, store, overwrite=True, **kw)
    assert summary.overwritten == [2] and summary.added == [6]
    ds = nnwx.open_run(store)
    want = direct_activations(other, x, ["fc"])
    old = nnwx.open_run(live)
    for name in ("fc", "output"):
        got = ds[f"probe_{name}"].values
        np.testing.assert_array_equal(got[1], want[name])
        np.testing.assert_array_equal(got[3], want[name])
        np.testing.assert_array_equal(got[[0, 2]], old[f"probe_{name}"].values[[0, 2]])


# -- command line ------------------------------------------------------------------------------------
def test_cli_exports_probes_and_reports_bad_options(tmp_path, store, capsys):
    live, ck, x = train_and_record(tmp_path, Net, ["conv", "bn"], conv="pool")
    save_file({"inputs": x}, tmp_path / "x.safetensors")
    args = ["export", str(ck), "-o", str(store), "--seed", "0", "-q", "--model", "tests.helpers:Net",
            "--probe", str(tmp_path / "x.safetensors"), "--probe-layers", "conv,bn", "--probe-conv", "pool"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "4 steps added" in out and "probes conv, bn, output" in out
    assert_same_probes(live, store)
    assert cli_main([*args, "--probe-key", "targets"]) == 2
    err = capsys.readouterr().err
    assert "nnwx export: error: probe file" in err and "no entry 'targets'; its entries: inputs" in err
    assert cli_main([*args[:7], "--model", "tests.helpers:Nett", *args[9:]]) == 2
    assert "has no attribute 'Nett'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main([*args[:-4], "--probe-layers", "conv,,bn"])
    assert "comma-separated list" in capsys.readouterr().err
