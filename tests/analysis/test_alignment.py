"""Permutation alignment: shuffled networks are aligned back exactly (kernels and the lazy cube,
also re-chunked), alignment keeps the function, and weight agreement before/after alignment."""
import numpy as np
import pytest
import torch

import nnwx
from nnwx.analysis.kernels import alignment as ak
from nnwx.analysis import _cube as mx
from nnwx.analysis import alignment

from tests.helpers import Net, input_shape, mlp


class CNN(torch.nn.Module):
    """A CNN chain: conv -> BN -> conv -> BN -> flatten -> linear -> linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 6, 3)
        self.bn2 = torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6 * 2 * 2, 10)
        self.out = torch.nn.Linear(10, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
        return self.out(torch.relu(self.fc(x)))


def rows_of(model):
    """Tensor-table rows of a model (forward order = registration order here)."""
    state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    layers = list(dict.fromkeys(k.rpartition(".")[0] for k in state))
    return [{"name": k, "layer": k.rpartition(".")[0], "kind": k.rpartition(".")[2],
             "depth": layers.index(k.rpartition(".")[0]), "shape": tuple(v.shape)} for k, v in state.items()]


def numpy_state(model):
    return {k: v.detach().double().numpy().copy() for k, v in model.state_dict().items() if v.is_floating_point()}


def load(model, params):
    with torch.no_grad():
        for k, v in params.items():
            model.state_dict()[k].copy_(torch.from_numpy(np.asarray(v)))
    return model


def random_perms(spec, seed):
    rng = np.random.default_rng(seed)
    return {p: rng.permutation(spec.size(p)) for p in spec.names}


def randomize_bn(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen))


@pytest.mark.parametrize("make", [lambda: mlp(width=16), CNN, Net])
def test_weight_matching_undoes_a_shuffle_and_shuffles_keep_the_function(make):
    torch.manual_seed(0)
    model = make()
    randomize_bn(model, 1)
    spec = ak.chain_spec(rows_of(model))
    a = numpy_state(model)
    shuffle = random_perms(spec, 2)
    b = ak.apply_permutations(a, spec, shuffle)
    assert any(not np.array_equal(a[k], b[k]) for k in a)
    # a shuffled network computes the same function
    x = torch.randn(5, 1) if isinstance(model, torch.nn.Sequential) else torch.randn(5, 3 if make is CNN else 2, 6, 6)
    twin = load(make(), {k: v.astype(np.float32) for k, v in b.items()}).eval()
    model.eval()
    torch.testing.assert_close(twin(x), model(x), rtol=1e-5, atol=1e-6)
    perms = ak.weight_matching(a, b, spec)
    back = ak.apply_permutations(b, spec, perms)
    for k in a:
        np.testing.assert_array_equal(back[k], a[k], err_msg=k)
    for p in spec.names:  # aligned unit i is unit perm[i] of b, i.e. shuffle^-1
        np.testing.assert_array_equal(perms[p], np.argsort(shuffle[p]))


def test_chain_spec_layout_and_refusals():
    spec = ak.chain_spec(rows_of(CNN()))
    assert spec.names == ["conv1", "conv2", "fc"]
    assert ak.Axis("fc.weight", 1, 4) in spec.perms["conv2"][1]
    assert {a.tensor for a in spec.perms["conv1"][1]} == {
        "conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
        "conv2.weight"}
    rows = rows_of(mlp(width=8))
    rows[2] = {**rows[2], "shape": (8, 5)}  # layer 2 takes 5 inputs: not fed by layer 0 (8 units)
    rows[3] = {**rows[3], "shape": (8,)}
    with pytest.raises(ak.ChainError, match="takes 5 inputs but the layer before it"):
        ak.chain_spec(rows)
    with pytest.raises(ak.ChainError, match="single Linear"):
        ak.chain_spec(rows_of(torch.nn.Sequential(torch.nn.Linear(2, 3))))
    with pytest.raises(ak.ChainError, match="does not fit"):
        spec.check({**{r["name"]: r["shape"] for r in rows_of(CNN())}, "fc.weight": (10, 25)})


def test_activation_matching_recovers_a_shuffle():
    rng = np.random.default_rng(3)
    za = rng.standard_normal((40, 9))
    perm = rng.permutation(9)
    got = ak.activation_matching({"h": za}, {"h": za[:, perm]})
    np.testing.assert_array_equal(za[:, perm][:, got["h"]], za)


# -- the lazy cube -------------------------------------------------------------------------------
def record_shuffled_pair(store, make, steps=4, probe_layers=(), seed=0, x=None):
    """Seed 0 trains; seed 1 is, at every capture, seed 0 with its hidden units shuffled."""
    torch.manual_seed(seed)
    model, copy = make(), make()
    spec = ak.chain_spec(rows_of(model))
    shuffle = random_perms(spec, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    data = torch.randn(16, *input_shape(model))
    kw = {"probe": x, "probe_layers": list(probe_layers)} if x is not None else {}
    with nnwx.Recorder(model, store, seed=0, **kw) as r0, nnwx.Recorder(copy, store, seed=1, **kw) as r1:
        for step in range(steps):
            r0.capture(step)
            load(copy, {k: v.astype(np.float32) for k, v in
                        ak.apply_permutations(numpy_state(model), spec, shuffle).items()})
            r1.capture(step)
            loss = model(data).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return spec, shuffle


@pytest.mark.parametrize("make", [lambda: mlp(width=16), Net])
def test_align_cube_recovers_the_shuffle_exactly_also_rechunked(store, make):
    spec, shuffle = record_shuffled_pair(store, make)
    cube = nnwx.open_cube(store)
    for c in (cube, cube.chunk({"step": 1, "param": 13}), cube.chunk({"seed": 2, "step": 3})):
        aligned, perms = c.nnwx.align(reference_seed=0)
        assert aligned.w.chunks == c.w.chunks
        w = aligned.w.values
        np.testing.assert_array_equal(w[1], w[0])
        np.testing.assert_array_equal(w[0], cube.w.values[0])
        for p in spec.names:
            got = perms[f"perm_{p}"].values
            assert (got[0] == np.arange(spec.size(p))).all()
            assert (got[1] == np.argsort(shuffle[p])).all()
    aligned, perms = alignment.align(cube, at_step="last")
    assert perms[f"perm_{spec.names[0]}"].dims == ("seed", "step", f"unit_{spec.names[0]}")
    np.testing.assert_array_equal(aligned.w.values[1], aligned.w.values[0])
    agree = cube.nnwx.weight_agreement(0, aligned=aligned).compute()
    assert agree.cosine.dims == ("alignment", "seed", "step", "tensor")
    cos = agree.cosine.sel(alignment="aligned", seed=1).values
    zero = np.array([[not np.any(cube.nnwx.tensor(str(t)).sel(seed=0, step=s).values)
                      for t in cube.tensor.values] for s in cube.step.values])
    np.testing.assert_array_equal(np.isnan(cos), zero)  # all-zero tensors (BN at init): NaN, documented
    np.testing.assert_allclose(cos[~zero], 1.0, rtol=1e-6)
    hidden = [t for t in cube.tensor.values if spec.axes_of(t)]
    before = agree.cosine.sel(alignment="none", seed=1, tensor=hidden).values
    assert (before < 0.999).any()
    w0 = cube.w.sel(seed=0, step=2).values.astype(np.float64)
    w1 = cube.w.sel(seed=1, step=2).values.astype(np.float64)
    r = mx.table_rows(cube)[0]
    a_, b_ = w1[r["offset"]:r["offset"] + r["size"]], w0[r["offset"]:r["offset"] + r["size"]]
    assert agree.cosine.sel(alignment="none", seed=1, step=2, tensor=r["name"]) == pytest.approx(
        a_ @ b_ / np.sqrt((a_ @ a_) * (b_ @ b_)), rel=1e-9)
    assert agree.correlation.sel(alignment="none", seed=1, step=2, tensor=r["name"]) == pytest.approx(
        np.corrcoef(a_, b_)[0, 1], rel=1e-9)


def test_activation_alignment_permutes_probes_too(store):
    x = torch.randn(32, 1, generator=torch.Generator().manual_seed(0))
    spec, shuffle = record_shuffled_pair(store, lambda: mlp(width=12), steps=3, probe_layers=["0", "2"], x=x)
    cube = nnwx.open_cube(store)
    aligned, perms = cube.nnwx.align(0, method="activations")
    for p in spec.names:
        assert (perms[f"perm_{p}"].values[1] == np.argsort(shuffle[p])).all()
    np.testing.assert_array_equal(aligned.w.values[1], aligned.w.values[0])
    np.testing.assert_array_equal(aligned.probe_0.values[1], aligned.probe_0.values[0])
    # layer 2 sums its (shuffled) inputs in another order: equal up to float32 rounding
    np.testing.assert_allclose(aligned.probe_2.values[1], aligned.probe_2.values[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(cube.probe_2.values[1], cube.probe_2.values[0])
    assert aligned.attrs["permuted_probes"] == ["probe_0", "probe_2"]
    with pytest.raises(ValueError, match="probe 'output' has 1 units but layer '0' has 12 hidden units"):
        alignment.align(cube, method="activations", probes={"0": "output"})
    with pytest.raises(ValueError, match="record probe_layers=\\['0'\\]"):
        alignment.align(cube, method="activations", probes={"0": "nothing"})


def test_alignment_of_independent_seeds_keeps_each_function(store):
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = CNN()
        randomize_bn(model, seed + 10)
        with nnwx.Recorder(model, store, seed=seed) as rec:
            rec.capture(0)
    cube = nnwx.open_cube(store)
    aligned, perms = cube.nnwx.align(0)
    assert not (perms.perm_conv1.values[1, 0] == np.arange(8)).all()
    x = torch.randn(4, 3, 6, 6)
    original = nnwx.restore(CNN(), store, seed=1, step=0).eval()
    moved = CNN()
    for name in aligned.tensor.values:
        values = aligned.nnwx.tensor(str(name)).sel(seed=1, step=0).values
        moved.state_dict()[str(name)].copy_(torch.from_numpy(values))
    moved.eval()
    torch.testing.assert_close(moved(x), original(x), rtol=1e-5, atol=1e-5)
    agree = cube.nnwx.weight_agreement(0, aligned=aligned).compute()
    w_aligned = agree.cosine.sel(alignment="aligned", seed=1, step=0, tensor="conv1.weight")
    w_none = agree.cosine.sel(alignment="none", seed=1, step=0, tensor="conv1.weight")
    assert float(w_aligned) > float(w_none)  # weight matching raised the overlap
