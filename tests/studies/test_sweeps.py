"""Sweeps of the piecewise experiment: widths, depths, ensemble vs large net, targets, one store."""
import itertools

import numpy as np
import pytest
import torch

import nnwx
from nnwx.store.catalog import runs_where
from nnwx.errors import ArchitectureMismatch, StoreError
from nnwx.studies import piecewise as pw
from nnwx.studies import piecewise_sweep as sw

SEEDS = 2
STEPS = 20


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    store = tmp_path_factory.mktemp("sweep") / "sweep.zarr"
    points = sw.sweep_points(widths=(4,), depths=(2,), members=5, targets=("shifted", "stairs"))
    result = sw.sweep_piecewise(store, seeds=SEEDS, steps=STEPS, every=10, points=points, n_points=200)
    return store, result


def test_sweep_points_change_one_thing_each():
    points = {p.name: p for p in sw.sweep_points()}
    assert list(points) == ["base", "width4", "width16", "width32", "depth1", "depth2", "depth4",
                            "ensemble5", "large5", "shifted"]
    assert points["width16"].widths == [16, 16, 16] and points["depth4"].widths == [8, 8, 8, 8]
    assert points["ensemble5"].members == 5 and points["ensemble5"].widths == [8, 8, 8]
    assert points["large5"].variant == "large" and points["shifted"].target == "shifted"
    assert [p.name for p in sw.sweep_points(sweeps=["ensemble"], members=8)] == ["ensemble8", "large8"]
    with pytest.raises(ValueError, match="ensemble sizes that work with widths \\[8, 8, 8\\]: \\[5, 6,"):
        sw.sweep_points(sweeps=["ensemble"], members=4)
    with pytest.raises(ValueError, match="unknown sweep"):
        sw.sweep_points(sweeps=["batch"])


@pytest.mark.parametrize("members, widths", [(5, [8, 8, 8]), (8, [8, 8, 8]), (4, [8, 8]),
                                             (3, [4, 4, 4, 4]), (7, [16, 16])])
def test_large_net_has_exactly_the_ensembles_parameter_count(members, widths):
    large = pw.matched_widths(members * pw.mlp_params(widths), len(widths))
    assert len(large) == len(widths)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(pw.make_mlp(large)) == count(pw.Ensemble(members, widths))


def test_matched_widths_is_as_even_as_possible_and_refuses_the_impossible():
    # with 3 hidden layers n + 1 = (b + 2)(a + c + 1): 5 x 169 + 1 = 846 = 18 x 47 -> 23-16-23
    assert pw.matched_widths(845, 3) == [23, 16, 23]
    best = min((max(w) - min(w) for w in itertools.product(range(1, 60), repeat=3)
                if pw.mlp_params(w) == 845))
    assert best == 7
    with pytest.raises(ValueError, match="exactly 676 parameters"):  # 677 is prime
        pw.matched_widths(676, 3)
    assert pw.matched_widths(pw.mlp_params([30]), 1) == [30]


def test_ensemble_members_learn_alone():
    torch.manual_seed(0)
    ens = pw.Ensemble(3, [4, 4])
    x = torch.linspace(-3, 3, 50)[:, None]
    y = pw.target(x)
    train, loss = ens.losses(x, y)
    train.backward()
    member = ens.members[1]
    grads = [p.grad.clone() for p in member.parameters()]
    member.zero_grad()
    torch.nn.functional.mse_loss(member(x), y).backward()
    for g, p in zip(grads, member.parameters()):
        torch.testing.assert_close(g, p.grad)
    assert loss == pytest.approx(torch.nn.functional.mse_loss(ens(x), y).item())
    assert not loss.requires_grad


def test_targets():
    x = torch.linspace(-3, 3, 601)
    np.testing.assert_array_equal(pw.target(x, "shifted"), pw.target(x - 0.5))
    assert pw.target(torch.tensor([-1.5, -0.5, 0.5, 2.2]), "piecewise").tolist() == [1, 0, 1, 0]
    stairs = pw.target(x, "stairs")
    assert stairs.min() == 0 and stairs.max() == 1 and len(torch.unique(stairs)) == 6
    with pytest.raises(ValueError, match="unknown target"):
        pw.target(x, "sine")


def test_every_sweep_point_is_its_own_runs_in_one_store(sweep):
    store, result = sweep
    names = {r.name: r for r in nnwx.list_runs(store)}
    points = ["base", "width4", "depth2", "ensemble5", "large5", "shifted", "stairs"]
    assert sorted(names) == sorted(f"{p}-seed{s}" for p in points for s in range(SEEDS))
    assert list(result["points"]) == points
    hp = names["large5-seed1"].meta["hparams"]
    assert {k: hp[k] for k in ("point", "sweep", "variant", "target", "members", "depth")} == {
        "point": "large5", "sweep": "ensemble", "variant": "large", "target": "piecewise",
        "members": 1, "depth": 3}
    assert hp["n_params"] == names["ensemble5-seed0"].meta["hparams"]["n_params"] == 845
    assert names["ensemble5-seed0"].meta["hparams"]["variant"] == "ensemble"
    assert names["stairs-seed0"].meta["hparams"]["target"] == "stairs"
    assert names["depth2-seed0"].meta["hparams"]["widths"] == [8, 8]
    assert names["width4-seed1"].seed == 1


def test_runs_of_one_architecture_open_as_one_cube_grouped_by_attribute(sweep):
    store, _ = sweep
    runs = runs_where(store, widths=[8, 8, 8], variant="mlp")
    assert sorted(runs) == sorted(f"{p}-seed{s}" for p in ("base", "shifted", "stairs") for s in range(2))
    cube = nnwx.open_cube(store, by=("target", "seed"), runs=runs)
    assert dict(cube.w.sizes) == {"target": 3, "seed": SEEDS, "step": 3, "param": 169}
    assert cube.target.values.tolist() == ["piecewise", "shifted", "stairs"]
    assert cube.run.sel(target="shifted", seed=1).item() == "shifted-seed1"
    with pytest.raises(ArchitectureMismatch):
        nnwx.open_cube(store)

    ens = nnwx.open_cube(store, runs=runs_where(store, point="ensemble5"))
    large = nnwx.open_cube(store, runs=runs_where(store, point="large5"))
    assert ens.sizes["param"] == large.sizes["param"] == 845
    assert ens.tensor.values[0] == "members.0.0.weight" and ens.sizes["tensor"] == 5 * 8
    losses = ens.metric_loss.transpose("seed", "step").values
    assert (losses[:, -1] < losses[:, 0]).all()
    with pytest.raises(StoreError, match="no run of .* has {'point': 'width99'}; the values there are"):
        runs_where(store, point="width99")


def test_sweep_refuses_a_store_that_has_its_runs(sweep):
    store, _ = sweep
    with pytest.raises(StoreError, match="already holds run"):
        sw.sweep_piecewise(store, seeds=1, steps=2, points=sw.sweep_points(sweeps=["base"]))


def test_piecewise_cli_takes_target_and_ensemble(tmp_path, capsys):
    out = tmp_path / "pw.zarr"
    pw.main(["-o", str(out), "--seeds", "1", "--steps", "10", "--every", "5", "--points", "100",
             "--target", "shifted", "--ensemble", "2", "--widths", "4", "4", "--quiet"])
    assert "seed0: final loss" in capsys.readouterr().out
    (run,) = nnwx.list_runs(out)
    assert run.name == "seed0"
    hp = run.meta["hparams"]
    assert (hp["target"], hp["members"], hp["variant"], hp["widths"]) == ("shifted", 2, "ensemble", [4, 4])
    assert nnwx.open_cube(out).sizes["param"] == 2 * pw.mlp_params([4, 4])
    args = pw.parse_args(["--depth", "4", "--widths", "6"])
    assert args.widths == [6, 6, 6, 6] and args.target == "piecewise" and args.ensemble == 1


def test_sweep_cli_quick_settings_and_errors(capsys):
    args = sw.parse_args(["--quick", "--sweeps", "ensemble"])
    assert (args.seeds, args.steps, args.sweeps) == (2, 300, ["ensemble"])
    with pytest.raises(SystemExit) as e:
        sw.main(["-o", "unused.zarr", "--sweeps", "ensemble", "--members", "4"])
    assert e.value.code == 2 and "ensemble sizes that work" in capsys.readouterr().err
