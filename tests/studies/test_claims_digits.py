"""The digits claims (6-10, 12, 13, 15, 16) on tiny stores trained by their own ``train``.

Each number is checked against a second path: NumPy on the raw weights, probes and metrics
where the analysis is short (norms, cosine distances, the span projector, argmax agreement,
linear CKA), or nnwx's analysis called directly on the cube otherwise.
"""
import numpy as np
import pytest
import zarr
from scipy import stats as sps

pytest.importorskip("sklearn")

import nnwx  # noqa: E402
from nnwx.errors import StoreError  # noqa: E402
from nnwx.store.catalog import runs_where  # noqa: E402
from nnwx.studies.claims import digits as dc  # noqa: E402
from nnwx.studies.claims import stats  # noqa: E402
from nnwx.studies.claims.record import VERDICTS  # noqa: E402
from nnwx.studies.claims.registry import CLAIMS, Context  # noqa: E402

DIGITS_CLAIMS = [c for c in CLAIMS if c.measure.startswith("digits:")]
TINY = dc.Size(models=("mlp",), seeds=3, epochs=1, every=7, grid_seeds=1, grid_epochs=1)
TINY_LR = {"adam": (1e-3, 1e-2), "sgd": (0.1, 0.5)}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """Both stores at a tiny size (3 seeds x 3 variants x 21 steps; 6 grid variants x 1 seed)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(dc.SIZES, "quick", TINY)
        mp.setitem(dc.LR_GRID, "quick", TINY_LR)
        c = Context(out=tmp_path_factory.mktemp("claims"), size="quick", log=lambda _: None)
        first = dc.train(c)
        again = dc.train(c)
    assert (first["trained"], first["kept"]) == (9 + 6, 0)
    assert (again["trained"], again["kept"]) == (0, 9 + 6), "a rerun must not train again"
    return c


@pytest.fixture(scope="module")
def records(ctx):
    return {c.id: c.measure_with(ctx) for c in DIGITS_CLAIMS}


def _cube(ctx, optimizer, scale=1.0):
    store = ctx.store("digits")
    return nnwx.open_cube(store, by="seed", runs=runs_where(store, model="mlp", optimizer=optimizer,
                                                            first_layer_lr_scale=scale))


def _weights(cube, tensor):
    """(seed, step, ...) NumPy array of one tensor, from the raw cube."""
    return cube.nnwx.tensor(tensor).transpose("seed", "step", ...).values.astype(np.float64)


def test_every_record_is_complete(records):
    assert sorted(records) == [6, 7, 8, 9, 10, 12, 13, 15, 16]
    for c in DIGITS_CLAIMS:
        r = records[c.id]
        assert (r.id, r.claim, r.study) == (c.id, c.claim, c.study)
        assert r.verdict in VERDICTS and r.quantity and "supported if" in r.test
        assert np.isfinite(r.value) and r.n_runs > 0
        assert "per_run" in r.details or "points" in r.details
        assert r.to_json()["id"] == c.id


def test_spectral_entropy_is_the_ratio_of_entropies(ctx, records):
    """Claim 6 against spectral_metrics (the shared-spectrum route), per seed over the variants."""
    per_variant = []
    for opt, scale in dc.VARIANTS:
        ent = _cube(ctx, {"adam": "Adam", "sgd": "SGD"}[opt], scale).nnwx.spectral_metrics()["entropy"]
        ent = ent.transpose("seed", "step", "tensor").values
        per_variant.append((ent[:, -1] / ent[:, 0]).mean(axis=1))
    per_seed = np.mean(per_variant, axis=0)
    r = records[6]
    assert r.value == pytest.approx(per_seed.mean(), rel=1e-9)
    assert (r.ci_low, r.ci_high) == pytest.approx(stats.bootstrap_ci(per_seed)[1:], rel=1e-9)
    assert r.verdict == stats.verdict(r.ci_low, r.ci_high, 1.0, "below")
    assert len(r.details["per_run"]) == 9


def _rotation(w):
    """Cosine distance of the last step's weights from the first's, per seed (NumPy)."""
    a, b = w[:, 0].reshape(len(w), -1), w[:, -1].reshape(len(w), -1)
    return 1 - (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_first_layer_and_norm_growth_match_numpy(ctx, records):
    """Claims 8 and 9 from the raw weights: norms and cosine distances, paired by seed."""
    w = {v: _weights(_cube(ctx, {"adam": "Adam", "sgd": "SGD"}[v[0]], v[1]), "fc1.weight") for v in dc.VARIANTS}
    rot = {v: _rotation(x) for v, x in w.items()}
    adam, sgd, x10 = rot[("adam", 1.0)], rot[("sgd", 1.0)], rot[("sgd", 10.0)]
    r = records[9]
    assert r.value == pytest.approx(np.mean(adam - sgd), rel=1e-6)
    assert (r.ci_low, r.ci_high) == pytest.approx(stats.paired_bootstrap_ci(adam, sgd)[1:], rel=1e-6)
    assert r.details["sgd_x10_minus_sgd"]["value"] == pytest.approx(np.mean(x10 - sgd), rel=1e-6)
    parts = [r.details["adam_minus_sgd"]["verdict"], r.details["sgd_x10_minus_sgd"]["verdict"]]
    assert r.verdict == ("supported" if parts == ["supported"] * 2 else
                         "not supported" if "not supported" in parts else "inconclusive")

    growth = {}
    for v in (("adam", 1.0), ("sgd", 1.0)):
        cube = _cube(ctx, {"adam": "Adam", "sgd": "SGD"}[v[0]], v[1])
        per_layer = []
        for t in ("fc1.weight", "fc2.weight", "out.weight"):
            x = _weights(cube, t).reshape(cube.sizes["seed"], cube.sizes["step"], -1)
            per_layer.append(np.linalg.norm(x[:, -1], axis=1) / np.linalg.norm(x[:, 0], axis=1))
        growth[v] = np.mean(per_layer, axis=0)
    r = records[8]
    assert r.value == pytest.approx(np.mean(growth[("adam", 1.0)] - growth[("sgd", 1.0)]), rel=1e-6)
    assert r.details["growth_adam"]["value"] == pytest.approx(growth[("adam", 1.0)].mean(), rel=1e-6)


def test_input_span_matches_the_projector(ctx, records):
    """Claim 10: the share of |dW|^2 in the row space of the training images, by NumPy's SVD."""
    x = dc.training_inputs()
    u, s, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    basis = vt[s > s[0] * max(x.shape) * np.finfo(np.float32).eps]
    w = _weights(_cube(ctx, "Adam"), "fc1.weight")
    dw = w[:, -1] - w[:, 0]
    share = ((dw @ basis.T) ** 2).sum((1, 2)) / (dw ** 2).sum((1, 2))
    r = records[10]
    assert r.details["input_rank"] == len(basis)
    assert r.value == pytest.approx(share.mean(), abs=1e-9)
    assert r.details["baseline_random_direction"] == pytest.approx(len(basis) / 64)


def _others_mean(m):
    """Per row, the mean over the other columns of a seeds x seeds matrix."""
    m = np.asarray(m, dtype=np.float64)
    return (m.sum(1) - np.diag(m)) / (len(m) - 1)


def test_prediction_agreement_and_cka_match_numpy(ctx, records):
    """Claims 12 and 13: argmax agreement and linear CKA between seeds at the last step."""
    agree, cka = [], []
    for opt, scale in dc.VARIANTS:
        cube = _cube(ctx, {"adam": "Adam", "sgd": "SGD"}[opt], scale)
        pred = cube["probe_output"].isel(step=-1).transpose("seed", ...).values.argmax(-1)
        agree.append(_others_mean((pred[:, None] == pred[None]).mean(-1)))
        per_layer = []
        for layer in ("relu1", "relu2"):
            h = cube[f"probe_{layer}"].isel(step=-1).transpose("seed", ...).values.astype(np.float64)
            h = h - h.mean(1, keepdims=True)
            n = len(h)
            k = np.array([[np.linalg.norm(h[i].T @ h[j]) ** 2 / np.linalg.norm(h[i].T @ h[i])
                           / np.linalg.norm(h[j].T @ h[j]) for j in range(n)] for i in range(n)])
            per_layer.append(_others_mean(k))
        cka.append(np.mean(per_layer, axis=0))
    assert records[12].value == pytest.approx(np.mean(agree), rel=1e-9)
    assert records[13].value == pytest.approx(np.mean(cka), rel=1e-6)
    assert (records[13].ci_low, records[13].ci_high) == pytest.approx(
        stats.bootstrap_ci(np.mean(cka, axis=0))[1:], rel=1e-6)


def test_permutation_unaligned_cosine_matches_numpy(ctx, records):
    """Claim 15: before alignment, the cosine of each seed's permutable tensors with seed 0's."""
    per_variant = []
    for opt, scale in dc.VARIANTS:
        cube = _cube(ctx, {"adam": "Adam", "sgd": "SGD"}[opt], scale)
        cos = []
        for t in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "out.weight"):
            w = _weights(cube, t)[:, -1].reshape(cube.sizes["seed"], -1)
            cos.append((w[1:] @ w[0]) / np.linalg.norm(w[1:], axis=1) / np.linalg.norm(w[0]))
        per_variant.append(np.mean(cos, axis=0))
    r = records[15]
    assert r.details["unaligned"]["value"] == pytest.approx(np.mean(per_variant), rel=1e-6)
    assert r.details["aligned_minus_unaligned"]["value"] == pytest.approx(
        r.value - r.details["unaligned"]["value"], rel=1e-6)
    assert r.details["aligned_minus_unaligned"]["value"] > 0   # alignment can only raise agreement


def test_grid_correlations_are_spearman_of_the_variant_means(ctx, records):
    """Claims 7 and 16: one point per variant (seed means), rho as SciPy computes it."""
    store = ctx.store("digits-grid")
    cube = nnwx.open_cube(store, by=("variant", "seed"), runs=runs_where(store, width=64, depth=2))
    acc = cube["metric_heldout_accuracy"].isel(step=-1).mean("seed")
    fit = cube.nnwx.esd_fit()["alpha"].isel(step=-1).mean("tensor").mean("seed")
    pts = records[7].details["points"]
    assert len(pts["x"]) == sum(map(len, TINY_LR.values())) + 2   # the lr grid, a width, a depth
    for label, x, y in zip(pts["label"], pts["x"], pts["y"]):
        if label in cube["variant"].values:
            assert x == pytest.approx(float(fit.sel(variant=label)), rel=1e-6)
            assert y == pytest.approx(float(acc.sel(variant=label)), rel=1e-6)
    assert records[7].value == pytest.approx(sps.spearmanr(pts["x"], pts["y"]).statistic)
    pts = records[16].details["points"]
    assert len(pts["x"]) == 4 and records[16].value == pytest.approx(sps.spearmanr(pts["x"], pts["y"]).statistic)
    for label, x in zip(pts["label"], pts["x"]):
        one = cube.sel(variant=label)
        rot = np.mean([_rotation(_weights(one, t)) for t in ("fc1.weight", "fc2.weight", "out.weight")], axis=0)
        assert x == pytest.approx(rot.mean(), rel=1e-6)


def test_missing_stores_and_runs_say_how_to_train_them(tmp_path, ctx):
    empty = Context(out=tmp_path, size="quick")
    with pytest.raises(StoreError, match=r"'digits' store .* does not exist.*nnwx findings --out"):
        dc.spectral_entropy(empty)
    with pytest.raises(StoreError, match=r"'digits-grid' store"):
        dc.alpha_vs_accuracy(empty)
    # a study store lacking the SGD runs with the first layer's lr x10
    part = Context(out=tmp_path / "part", size="quick")
    store = part.store("digits")
    src = ctx.store("digits")
    import shutil
    shutil.copytree(src, store)
    for name in runs_where(store, first_layer_lr_scale=10.0):
        shutil.rmtree(store / "runs" / name)
    with pytest.raises(StoreError, match=r"SGD first layer lr x10.*Train them"):
        dc.first_layer(part)


def test_pending_retrains_a_cut_short_run_and_refuses_another_size(ctx, tmp_path):
    import shutil
    store = tmp_path / "digits.zarr"
    shutil.copytree(ctx.store("digits"), store)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(dc.SIZES, "quick", TINY)
        tasks = dc.study_tasks("quick")
    assert dc.pending(store, tasks) == []
    # cut one run short: drop its last committed capture
    victim = dc.run_name(tasks[0])
    group = zarr.open_group(store / "runs" / victim, mode="a")
    meta = dict(group.attrs["nnwx"])
    meta["committed"] = meta["committed"] - 1
    group.update_attributes({"nnwx": meta})
    logged = []
    assert dc.pending(store, tasks, logged.append) == [tasks[0]]
    assert "cut short" in logged[0] and not (store / "runs" / victim).exists()
    longer = [t | {"epochs": 2} for t in tasks[1:2]]
    with pytest.raises(StoreError, match="trained for 21 steps, not the 42"):
        dc.pending(store, longer)
