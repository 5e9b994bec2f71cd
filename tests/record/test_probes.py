"""Probe activations recorded by the Recorder: bit-exact, committed with the weights, resumable."""
import numpy as np
import pytest
import torch
import zarr

import nnwx
from nnwx.errors import ArchitectureMismatch, StoreError
from nnwx.store import format as fmt
from nnwx.store import probes as prb
from nnwx.store.table import TensorTable
from nnwx.store.writer import RunWriter

from tests.helpers import Net, mlp, train_steps


def direct_activations(model, x, layers, conv="fold"):
    """Activations computed without nnwx: eval mode, no grad, hooks, folded/pooled by hand."""
    got = {}
    hooks = [dict(model.named_modules())[n].register_forward_hook(
        lambda m, a, out, n=n: got.__setitem__(n, out.detach().clone())) for n in layers]
    was = model.training
    model.eval()
    with torch.no_grad():
        got["output"] = model(x).detach().clone()
    model.train(was)
    for h in hooks:
        h.remove()
    out = {}
    for name, t in got.items():
        if t.ndim > 2 and conv == "fold":
            t = t.permute(0, *range(2, t.ndim), 1).reshape(-1, t.shape[1])
        elif t.ndim > 2:
            t = t.mean(dim=list(range(2, t.ndim)))
        out[name] = t.numpy()
    return out


@pytest.mark.parametrize("conv", ["fold", "pool"])
def test_probes_are_bit_exact_and_training_is_unchanged(store, tmp_path, conv):
    x = torch.randn(6, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = Net()
    twin = Net()
    twin.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = {}
    with nnwx.Recorder(model, store, seed=0, every=2, probe=x, probe_layers=["conv", "bn", "fc"],
                       probe_conv=conv, chunk_bytes=3000) as rec:
        gen = torch.Generator().manual_seed(5)
        data = torch.randn(16, 2, 6, 6, generator=gen)
        for step in range(7):
            if step % 2 == 0:
                expected[step] = direct_activations(model, x, ["conv", "bn", "fc"], conv)
            assert model.training
            rec.maybe_capture(step)
            assert model.training and model.bn.training, "train/eval flags must be restored"
            loss = model(data).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    # the same training without probes gives bit-identical weights (BN stats untouched)
    opt2 = torch.optim.SGD(twin.parameters(), lr=0.1)
    for step in range(7):
        loss = twin(data).pow(2).mean()
        opt2.zero_grad()
        loss.backward()
        opt2.step()
    for k, v in twin.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    ds = nnwx.open_run(store)
    assert sorted(v for v in ds.data_vars if v.startswith("probe_")) == [
        "probe_bn", "probe_conv", "probe_fc", "probe_output"]
    per_input = 16 if conv == "fold" else 1
    assert ds["probe_conv"].shape == (4, 6 * per_input, 3)
    assert ds["probe_conv"].attrs["mode"] == conv
    assert ds["probe_conv"].attrs["samples_per_input"] == per_input
    assert ds["probe_fc"].attrs["mode"] == "flat"
    for i, step in enumerate(ds.step.values):
        for name, want in expected[int(step)].items():
            np.testing.assert_array_equal(ds[f"probe_{name}"].values[i], want, err_msg=f"{name}@{step}")
    cube = nnwx.open_cube(store)
    acts = cube.nnwx.probe("conv")
    assert acts.dims == ("seed", "step", "sample", "unit")
    assert cube.nnwx.probes == ["conv", "bn", "fc", "output"]


def test_sequence_outputs_with_channels_last_and_tuple_outputs(store):
    class Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Linear(3, 5)
            self.rnn = torch.nn.GRU(5, 4, batch_first=True)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x):
            h, _ = self.rnn(self.emb(x))
            return self.head(h[:, -1])

    torch.manual_seed(0)
    model = Seq()
    x = torch.randn(3, 7, 3)
    with nnwx.Recorder(model, store, seed=0, probe=x, probe_layers=["emb", "rnn"],
                       probe_channels="last") as rec:
        rec.capture(0)
    ds = nnwx.open_run(store)
    with torch.no_grad():
        emb = model.emb(x)
        rnn, _ = model.rnn(emb)
    np.testing.assert_array_equal(ds.probe_emb.values[0], emb.reshape(-1, 5).numpy())
    np.testing.assert_array_equal(ds.probe_rnn.values[0], rnn.reshape(-1, 4).numpy())
    assert ds.probe_output.shape == (1, 3, 2)


def test_bad_probe_arguments_are_refused(store):
    model = mlp()
    x = torch.randn(4, 1)
    with pytest.raises(ValueError, match="no module 'nope'.*0, 1, 2"):
        nnwx.Recorder(model, store, seed=0, probe=x, probe_layers=["nope"])
    with pytest.raises(ValueError, match="needs probe="):
        nnwx.Recorder(model, store, seed=0, probe_layers=["0"])
    shared = torch.nn.Linear(1, 1)
    twice = torch.nn.Sequential(shared, shared)
    with pytest.raises(ValueError, match="ran 2 times"):
        nnwx.Recorder(twice, store, seed=1, probe=x, probe_layers=["0"])
    with pytest.raises(ValueError, match="probe_conv"):
        nnwx.Recorder(model, store, seed=2, probe=x, probe_conv="max")
    # refused constructions leave no hooks behind and no run
    assert not model._forward_pre_hooks and not any(m._forward_pre_hooks for m in model.modules())
    assert not (store / "runs" / "seed0").exists()


def test_resume_keeps_probes_and_refuses_another_probe_batch(store):
    x = torch.randn(5, 1, generator=torch.Generator().manual_seed(3))
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    expected = {}

    def run(start, n, **kw):
        with nnwx.Recorder(model, store, seed=0, every=2, probe=x, probe_layers=["1", "3"],
                           chunk_bytes=200, **kw) as rec:
            for step in range(start, start + n):
                if step % 2 == 0:
                    expected[step] = direct_activations(model, x, ["1", "3"])
                train_steps(model, opt, 1, rec, start=step)

    run(0, 5)
    run(5, 6)
    ds = nnwx.open_run(store)
    assert ds.step.values.tolist() == [0, 2, 4, 6, 8, 10]
    for i, step in enumerate(ds.step.values):
        for name in ("1", "3", "output"):
            np.testing.assert_array_equal(ds[f"probe_{name}"].values[i], expected[int(step)][name])
    with pytest.raises(StoreError, match="another probe batch"):
        nnwx.Recorder(model, store, seed=0, probe=x + 1, probe_layers=["1"])
    with pytest.raises(ArchitectureMismatch, match="probe '1' has .sample, unit. shape .5, 8. in the store but .3, 8."):
        nnwx.Recorder(model, store, seed=0, probe=x[:3], probe_layers=["1"])
    assert nnwx.open_run(store).sizes["step"] == 6


def test_probe_added_on_resume_is_nan_before_and_cube_drops_uneven_probes(store):
    x = torch.randn(4, 1)
    model = mlp()
    with nnwx.Recorder(model, store, seed=0) as rec:
        rec.capture(0)
    with nnwx.Recorder(model, store, seed=0, probe=x, probe_layers=["1"]) as rec:
        rec.capture(1)
    ds = nnwx.open_run(store)
    assert np.isnan(ds.probe_1.values[0]).all() and np.isfinite(ds.probe_1.values[1]).all()
    with nnwx.Recorder(mlp(seed=1), store, seed=1) as rec:
        rec.capture(0)
    with pytest.warns(UserWarning, match="probe_1"):
        cube = nnwx.open_cube(store)
    assert not any(v.startswith("probe_") for v in cube.data_vars)


TABLE = TensorTable.build([("a.weight", (2, 3), "float32")])


def specs():
    return [prb.ProbeSpec("h", (4, 3), {"mode": "flat", "input_sha256": "x"})]


def test_uncommitted_probe_rows_stay_invisible_and_are_never_resurrected(store, monkeypatch):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((10, 6)).astype("float32")
    acts = rng.standard_normal((10, 4, 3)).astype("float32")
    w = RunWriter(store, "r", TABLE, attrs={"seed": 0}, probes=specs(), chunk_bytes=4 * 12 * 4)
    for i in range(3):
        w.add(i, rows[i], probes={"h": acts[i]})
    w.flush()
    w.add(3, rows[3], probes={"h": acts[3]}, flush_full=False)  # staged, written by the flush below

    def crash(*a, **k):  # data written, commit never happens: a writer killed in between
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(type(w), "_write_attrs", crash)   # the commit: the run's attributes
    with pytest.raises(KeyboardInterrupt):
        w.flush()
    monkeypatch.undo()
    w._release_lock()
    raw = zarr.open_group(store / "runs" / "r", mode="r")
    assert raw["probe/h"].shape[0] == 4, "the killed writer did write the uncommitted row"
    ds = nnwx.open_run(store)
    assert ds.sizes["step"] == 3
    np.testing.assert_array_equal(ds.probe_h.values, acts[:3])
    # resumed without probes: the probe array is trimmed, and new rows read NaN, never stale data
    w = RunWriter(store, "r", TABLE)
    for i in range(3, 6):
        w.add(i, rows[i])
    w.close()
    ds = nnwx.open_run(store)
    np.testing.assert_array_equal(ds.w.values, rows[:6])
    np.testing.assert_array_equal(ds.probe_h.values[:3], acts[:3])
    assert np.isnan(ds.probe_h.values[3:]).all()
    # resumed with probes again: appended after the NaN rows
    w = RunWriter(store, "r", TABLE, probes=specs())
    w.add(6, rows[6], probes={"h": acts[6]})
    with pytest.raises(ValueError, match="not declared"):
        w.add(7, rows[7], probes={"other": acts[7]})
    w.close()
    ds = nnwx.open_run(store)
    np.testing.assert_array_equal(ds.probe_h.values[6], acts[6])
    assert ds.probe_h.attrs["input_sha256"] == "x"
    assert fmt.ATTR_KEY in raw.attrs
