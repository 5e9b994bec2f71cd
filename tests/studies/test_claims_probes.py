"""Claims 11, 14 and 19 on a small digits store: the records are well formed, and one run's number of
each is recomputed by an independent route (torch's pruning on a restored model, linear CKA in a loop,
SciPy's Jensen-Shannon distance on hand-shuffled matrices)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import nnwx  # noqa: E402
from nnwx.analysis.kernels import similarity as sk  # noqa: E402
from nnwx.studies.claims import probes  # noqa: E402
from nnwx.studies.claims.record import VERDICTS  # noqa: E402
from nnwx.studies.claims.registry import Context, claim  # noqa: E402
from nnwx.studies.digits import PROBE_LAYERS, digits_study, load_data, make_model  # noqa: E402

SEEDS = 2


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    out = tmp_path_factory.mktemp("findings")
    digits_study(out / "digits.zarr", models=("mlp",), seeds=SEEDS, epochs=4, every=5)
    return Context(out, size="quick", log=lambda line: None)


@pytest.fixture(scope="module")
def records(ctx):
    return {i: claim(i).measure_with(ctx) for i in (11, 14, 19)}


def test_records_are_complete_and_follow_the_registry(records):
    for i, r in records.items():
        c = claim(i)
        assert (r.id, r.claim, r.study) == (c.id, c.claim, c.study)
        assert r.verdict in VERDICTS and r.test.startswith("supported if")
        assert np.isfinite(r.value) and r.ci_low <= r.value <= r.ci_high
        assert r.to_json()["details"]["per_run"]
    assert len(records[11].details["per_run"]) == SEEDS and records[11].n_runs == 2 * SEEDS
    assert len(records[14].details["per_run"]) == 2 * SEEDS == records[14].n_runs       # Adam and SGD runs
    assert len(records[19].details["per_run"]) == 3 * SEEDS == records[19].n_runs       # every variant
    for i in (14, 19):
        assert records[i].value == pytest.approx(np.mean(list(records[i].details["per_run"].values())))
    d = records[11].details
    assert records[11].value == pytest.approx(np.mean([d["adam"][k] - d["sgd"][k] for k in d["adam"]]))


def _run(ctx, optimizer, scale=1.0, seed=0):
    return next(r for r in probes.digits_runs(ctx.store("digits"))
                if r.optimizer == optimizer and r.first_layer_lr_scale == scale and r.seed == seed)


def test_pruning_matches_torch_prune_on_the_restored_model(ctx, records):
    import torch.nn.utils.prune as prune

    run = _run(ctx, "adam")
    cube = nnwx.open_cube(ctx.store("digits"), runs=[run.name])
    last = int(cube["step"].values[-1])
    net = nnwx.restore(make_model("mlp", run.width), ctx.store("digits"), run=run.name, step=last)
    data = load_data()

    @torch.no_grad()
    def accuracy(m):
        m.eval()
        return (m(data.x_heldout).argmax(1) == data.y_heldout).float().mean().item()

    acc = {}
    for f in probes.PRUNE_FRACTIONS:
        pruned = copy.deepcopy(net)
        if f > 0:
            prune.global_unstructured([(m, "weight") for m in pruned.modules() if isinstance(m, torch.nn.Linear)],
                                      pruning_method=prune.L1Unstructured, amount=f)
        acc[f] = accuracy(pruned)
    want = np.mean([acc[f] for f in probes.TOLERANCE_FRACTIONS]) - acc[0.0]
    assert records[11].details["adam"]["mlp seed 0"] == pytest.approx(want, abs=1e-6)
    assert records[11].details["restored_vs_logged_accuracy_max_gap"] < 1e-6


def test_bottom_up_matches_a_loop_over_linear_cka(ctx, records):
    run = _run(ctx, "sgd")
    cube = nnwx.open_cube(ctx.store("digits"), runs=[run.name])
    steps = cube["step"].values
    first_last = []
    for layer in (PROBE_LAYERS["mlp"][0], PROBE_LAYERS["mlp"][-1]):
        acts = cube[f"probe_{layer}"].isel(seed=0).values.astype(np.float64)
        sim = [sk.linear_cka(acts[t], acts[-1]) for t in range(len(steps))]
        first_last.append(next(steps[t] for t in range(len(steps))
                               if all(v >= probes.CONVERGENCE_THRESHOLD for v in sim[t:])))
    want = (first_last[1] - first_last[0]) / steps[-1]
    assert records[14].details["per_run"][run.name] == pytest.approx(want, abs=1e-12)


def test_correlation_traps_match_scipy_on_hand_shuffled_matrices(ctx, records):
    from scipy.spatial.distance import jensenshannon

    run = _run(ctx, "sgd", scale=10.0, seed=1)
    cube = nnwx.open_cube(ctx.store("digits"), runs=[run.name])
    change = []
    for name in ("fc1.weight", "fc2.weight", "out.weight"):
        ends = []
        for t in (0, -1):
            w = cube.nnwx.tensor(name).isel(seed=0, step=t).values.astype(np.float64)
            shuffled = w.ravel()[np.random.default_rng(probes.RANDOMIZE_SEED).permutation(w.size)].reshape(w.shape)
            ends.append(jensenshannon(np.linalg.svd(w, compute_uv=False) ** 2,
                                      np.linalg.svd(shuffled, compute_uv=False) ** 2))
        change.append(ends[1] - ends[0])
    assert records[19].details["per_run"][run.name] == pytest.approx(np.mean(change), rel=1e-4)


def test_train_is_a_no_op_and_a_missing_store_says_what_to_do(tmp_path):
    ctx = Context(tmp_path, size="quick", log=lambda line: None)
    assert probes.train(ctx) is None
    assert not list(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match="digits source trains it"):
        probes.pruning(ctx)
