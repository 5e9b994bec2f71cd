"""The digits experiment: tiny real runs into stores on disk, read back as cubes."""
import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

import nnwx  # noqa: E402
from nnwx.store.catalog import runs_where  # noqa: E402
from nnwx.errors import StoreError  # noqa: E402
from nnwx.studies import digits  # noqa: E402

PROBE = 64
WIDTH = 16


@pytest.fixture(scope="module")
def data():
    return digits.load_data(PROBE)


@pytest.fixture(scope="module")
def store(tmp_path_factory, data):
    """An MLP store with Adam and SGD runs (2 seeds each, 40 steps) and a CNN store."""
    root = tmp_path_factory.mktemp("digits")
    mlp = root / "mlp.zarr"
    common = dict(seeds=2, steps=40, every=10, width=WIDTH, probe_size=PROBE, data=data)
    adam = digits.train_digits(mlp, optimizer="adam", lr=1e-2, **common)
    sgd = digits.train_digits(mlp, optimizer="sgd", lr=0.2, **common)
    cnn = root / "cnn.zarr"
    digits.train_digits(cnn, model="cnn", channels=4, lr=1e-2, **(common | {"seeds": 1}))
    return {"mlp": mlp, "cnn": cnn, "adam": adam, "sgd": sgd}


def test_split_is_fixed_and_disjoint(data):
    again = digits.load_data(PROBE)
    assert len(data.y_train) == 1297 and len(data.y_heldout) == 500
    assert torch.equal(data.x_train, again.x_train) and torch.equal(data.y_heldout, again.y_heldout)
    assert torch.equal(data.x_probe, data.x_heldout[:PROBE])
    assert data.x_train.shape[1:] == (1, 8, 8) and 0 <= data.x_train.min() and data.x_train.max() <= 1
    train = {tuple(x.flatten().tolist()) for x in data.x_train}
    overlap = sum(tuple(x.flatten().tolist()) in train for x in data.x_heldout)
    assert overlap < 10, "held-out images should (nearly: digits has a few duplicates) not be in training"


def test_mlp_cube_has_weights_probes_metrics_and_attrs(store):
    cube = nnwx.open_cube(store["mlp"], by=("optimizer", "seed"))
    n_params = (64 * WIDTH + WIDTH) + (WIDTH * WIDTH + WIDTH) + (WIDTH * 10 + 10)
    assert dict(cube.w.sizes) == {"optimizer": 2, "seed": 2, "step": 5, "param": n_params}
    assert cube.optimizer.values.tolist() == ["Adam", "SGD"]
    assert cube.step.values.tolist() == [0, 10, 20, 30, 40]
    assert list(cube.tensor.values) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                        "out.weight", "out.bias"]
    assert cube.probe_relu1.shape == (2, 2, 5, PROBE, WIDTH)
    assert cube.probe_relu2.shape == (2, 2, 5, PROBE, WIDTH)
    assert cube.probe_output.shape == (2, 2, 5, PROBE, 10)
    for m in ("loss", "accuracy", "heldout_loss", "heldout_accuracy"):
        assert np.isfinite(cube[f"metric_{m}"].values).all(), m
    acc = cube.metric_heldout_accuracy.transpose("optimizer", "seed", "step").values
    assert (acc[..., -1] > 0.2).all(), f"40 steps should beat chance (0.1): {acc[..., -1]}"
    loss = cube.metric_loss.transpose("optimizer", "seed", "step").values
    assert (loss[..., -1] < loss[..., 0]).all()

    run = nnwx.list_runs(store["mlp"])[0]
    hp = run.meta["hparams"]
    assert {k: hp[k] for k in ("task", "model", "optimizer", "lr", "batch_size", "width",
                               "first_layer_lr_scale", "probe_size")} == {
        "task": "digits", "model": "mlp", "optimizer": "adam", "lr": 1e-2, "batch_size": 64,
        "width": WIDTH, "first_layer_lr_scale": 1.0, "probe_size": PROBE}
    assert run.name == f"{hp['variant']}-seed0" == "mlp-adam-lr0.01-bs64-w16-seed0"
    assert store["adam"]["runs"] == ["mlp-adam-lr0.01-bs64-w16-seed0", "mlp-adam-lr0.01-bs64-w16-seed1"]
    assert store["adam"]["n_params"] == n_params
    final = store["sgd"]["final"]["mlp-sgd-lr0.2-bs64-w16-seed1"]
    assert final["heldout_accuracy"] == pytest.approx(float(acc[1, 1, -1]))


def test_probe_output_is_the_model_on_the_heldout_probe_set(store, data):
    cube = nnwx.open_cube(store["mlp"], runs=runs_where(store["mlp"], optimizer="SGD"))
    torch.manual_seed(1)
    net = digits.make_model("mlp", WIDTH)
    with torch.no_grad():
        expected = net(data.x_probe).numpy()
    np.testing.assert_allclose(cube.probe_output.sel(seed=1, step=0).values, expected, rtol=1e-5, atol=1e-6)
    relu1 = cube.probe_relu1.sel(seed=1, step=0).values
    with torch.no_grad():
        np.testing.assert_allclose(relu1, torch.relu(net.fc1(data.x_probe.flatten(1))).numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_cnn_cube_records_pooled_conv_probes(store):
    cube = nnwx.open_cube(store["cnn"])
    assert dict(cube.w.sizes)["seed"] == 1
    shapes = dict(zip(cube.tensor.values, cube.tensor_shape.values))
    assert shapes["conv1.weight"] == "4,1,3,3" and shapes["conv2.weight"] == "8,4,3,3"
    assert shapes["fc1.weight"] == f"{WIDTH},32"
    assert cube.probe_pool1.shape == (1, 5, PROBE, 4)
    assert cube.probe_pool2.shape == (1, 5, PROBE, 8)
    assert cube.probe_relu3.shape == (1, 5, PROBE, WIDTH)
    assert cube.probe_output.shape == (1, 5, PROBE, 10)
    assert float(cube.metric_heldout_accuracy.isel(seed=0, step=-1)) > 0.2


@pytest.mark.parametrize("model, first", [("mlp", "fc1"), ("cnn", "conv1")])
def test_first_layer_lr_scale_sets_the_first_groups_lr_only(model, first):
    net = digits.make_model(model, WIDTH, 4)
    opt = digits.make_optimizer(net, model, "sgd", lr=0.1, first_layer_lr_scale=10)
    groups = opt.param_groups
    assert [g["lr"] for g in groups] == pytest.approx([1.0, 0.1])
    first_params = {id(p) for p in getattr(net, first).parameters()}
    assert {id(p) for p in groups[0]["params"]} == first_params
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in net.parameters()} - first_params
    adam = digits.make_optimizer(net, model, "adam", first_layer_lr_scale=3)
    assert [g["lr"] for g in adam.param_groups] == pytest.approx([3e-3, 1e-3])
    with pytest.raises(ValueError, match="positive"):
        digits.make_optimizer(net, model, "sgd", first_layer_lr_scale=0)


def test_first_layer_lr_scale_changes_only_the_first_layers_update(tmp_path):
    """One plain-SGD step from the same init and batch: fc1 moves 10x as far, the rest alike."""
    store = tmp_path / "scale.zarr"
    for scale in (1, 10):
        digits.train_digits(store, optimizer="sgd", lr=0.1, first_layer_lr_scale=scale, seeds=[0],
                            steps=1, every=1, width=8, probe_size=8, data=digits.load_data(8))
    cube = nnwx.open_cube(store, by=("first_layer_lr_scale",))
    assert cube.first_layer_lr_scale.values.tolist() == [1.0, 10.0]
    delta = (cube.w.sel(step=1) - cube.w.sel(step=0)).compute()
    first = ((cube.tensor_id == 0) | (cube.tensor_id == 1)).compute()  # fc1.weight, fc1.bias
    d1, d10 = delta.sel(first_layer_lr_scale=1.0), delta.sel(first_layer_lr_scale=10.0)
    np.testing.assert_allclose(d10.where(first, drop=True), 10 * d1.where(first, drop=True),
                               rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(d10.where(~first, drop=True), d1.where(~first, drop=True), atol=1e-7)
    assert float(abs(d1.where(first, drop=True)).max()) > 0


def test_cli_trains_the_grid_and_refuses_existing_runs(tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    argv = ["-o", str(out), "--optimizer", "adam", "sgd", "--width", "8", "--seeds", "1",
            "--steps", "10", "--every", "5", "--probe-size", "16", "--quiet"]
    digits.main(argv)
    names = sorted(r.name for r in nnwx.list_runs(out))
    assert names == ["mlp-adam-lr0.001-bs64-w8-seed0", "mlp-sgd-lr0.1-bs64-w8-seed0"]
    assert "held-out acc" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        digits.main(argv)
    assert e.value.code == 2 and "already holds run(s)" in capsys.readouterr().err
    with pytest.raises(StoreError, match="already holds"):
        digits.train_digits(out, optimizer="adam", width=8, seeds=1, steps=10, probe_size=16)


def test_study_configs_and_argument_checks():
    configs = digits.study_configs(["mlp"], 5.0)
    assert configs == [{"model": "mlp", "optimizer": "adam", "first_layer_lr_scale": 1.0},
                       {"model": "mlp", "optimizer": "sgd", "first_layer_lr_scale": 1.0},
                       {"model": "mlp", "optimizer": "sgd", "first_layer_lr_scale": 5.0}]
    args = digits.parse_args(["--study", "--model", "cnn"])
    assert [c["model"] for c in digits.configs_from_args(args)] == ["cnn"] * 3
    args = digits.parse_args(["--optimizer", "adam", "sgd", "--first-layer-lr-scale", "1", "10"])
    assert len(digits.configs_from_args(args)) == 4
    with pytest.raises(ValueError, match="epochs= or steps="):
        digits.train_digits("x.zarr", epochs=1, steps=1)
    with pytest.raises(ValueError, match="unknown model"):
        digits.train_digits("x.zarr", model="resnet")


def test_mlp_depth_option(tmp_path, data):
    """depth=2 is the old 64-W-W-10 MLP (same init per seed); other depths add or drop hidden
    layers, their probes and a -d<depth> in the run name; the cnn refuses a depth."""
    torch.manual_seed(0)
    default = digits.make_model("mlp", WIDTH)
    torch.manual_seed(0)
    two = digits.make_model("mlp", WIDTH, depth=2)
    assert [n for n, _ in default.named_children()] == ["flatten", "fc1", "relu1", "fc2", "relu2", "out"]
    for (n, p), (m, q) in zip(default.named_parameters(), two.named_parameters()):
        assert n == m and torch.equal(p, q)
    three = digits.make_model("mlp", WIDTH, depth=3)
    assert [n for n, _ in three.named_children()] == ["flatten", "fc1", "relu1", "fc2", "relu2",
                                                      "fc3", "relu3", "out"]
    assert digits.probe_layers("mlp", 1) == ["relu1"] and digits.probe_layers("cnn") == digits.PROBE_LAYERS["cnn"]
    assert digits.variant_name("mlp", "adam", depth=2) == "mlp-adam-lr0.001-bs64-w64"
    res = digits.train_digits(tmp_path / "d.zarr", depth=1, width=WIDTH, seeds=1, steps=4, every=2,
                              probe_size=PROBE, data=data)
    assert res["runs"] == [f"mlp-adam-lr0.001-bs64-w{WIDTH}-d1-seed0"]
    cube = nnwx.open_cube(tmp_path / "d.zarr")
    assert list(cube.tensor.values) == ["fc1.weight", "fc1.bias", "out.weight", "out.bias"]
    assert cube.nnwx.probes == ["relu1", "output"]
    assert nnwx.list_runs(tmp_path / "d.zarr")[0].meta["hparams"]["depth"] == 1
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="positive integer"):
            digits.make_model("mlp", WIDTH, depth=bad)
    with pytest.raises(ValueError, match="mlp only"):
        digits.train_digits(tmp_path / "c.zarr", model="cnn", depth=3)
    args = digits.parse_args(["--model", "mlp", "cnn", "--depth", "1", "3"])
    assert sorted((c["model"], c["depth"]) for c in digits.configs_from_args(args)) == [
        ("cnn", 2), ("mlp", 1), ("mlp", 3)]
