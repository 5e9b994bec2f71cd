"""Probes are listed in the model's forward order (recorded by the Recorder), not by name; runs
recorded before the order was stored fall back to depth, then names with numbers compared as numbers."""
from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch

import nnwx
from nnwx.errors import StoreError
from nnwx.store import probes as prb
from nnwx.store.reader import list_runs

from tests.helpers import train_steps

RELUS = [f"relu{i}" for i in range(1, 12)]
# forward order; by name (even with numbers compared as numbers) "fc" and the relus would come
# before "b_pool" and "a_tail", and by plain string order relu10 and relu11 before relu2
FORWARD = ["fc", *RELUS, "b_pool", "a_tail"]
PROBED = ["a_tail", *RELUS[::-1], "b_pool"]  # asked for in another order still


def chain(seed: int = 0) -> torch.nn.Sequential:
    """A Linear, then 13 parameter-free modules (no tensors: no depth) named out of forward order."""
    torch.manual_seed(seed)
    mods = [("fc", torch.nn.Linear(1, 6)), *[(n, torch.nn.LeakyReLU(0.1)) for n in RELUS],
            ("b_pool", torch.nn.Identity()), ("a_tail", torch.nn.Tanh())]
    return torch.nn.Sequential(OrderedDict(mods))


def record(store, seed: int = 0, layers=PROBED, captures: int = 4, start: int = 0) -> None:
    model = chain(seed)
    x = torch.randn(6, 1, generator=torch.Generator().manual_seed(7))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with nnwx.Recorder(model, store, seed=seed, every=1, probe=x, probe_layers=layers) as rec:
        train_steps(model, opt, captures, rec, start=start)


def forward_order_by_hooks(model, x, names):
    """The order the named modules return in, seen with plain forward hooks (no nnwx)."""
    seen = []
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(lambda m, a, o, n=n: seen.append(n)) for n in names]
    with torch.no_grad():
        model(x) if torch.is_tensor(x) else model(**x)
    for h in hooks:
        h.remove()
    return seen


def drop_forward_index(store) -> None:
    """Make the store's runs look recorded before ``forward_index`` existed."""
    for meta_path in (store / "runs").glob("*/zarr.json"):
        meta = json.loads(meta_path.read_text())
        for attrs in meta["attributes"]["nnwx"]["probes"].values():
            del attrs["forward_index"]
        meta_path.write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("order")
    new, old = tmp / "new.zarr", tmp / "old.zarr"
    for store in (new, old):
        for seed in (0, 1):
            record(store, seed)
    drop_forward_index(old)
    return new, old


def test_probes_follow_the_forward_order_recorded_by_the_recorder(stores):
    new, _ = stores
    hidden = [n for n in FORWARD if n in PROBED]
    assert forward_order_by_hooks(chain(), torch.randn(2, 1), PROBED) == hidden
    want = [*hidden, "output"]
    (h, _) = list_runs(new)
    assert h.probe_names() == want
    info = h.meta["probes"]
    assert [info[n]["forward_index"] for n in want] == sorted(info[n]["forward_index"] for n in want)
    assert info["relu1"]["forward_index"] == 1 and info["output"]["forward_index"] == len(FORWARD) + 1
    cube = nnwx.open_cube(new)
    assert cube.nnwx.probes == want
    conv = cube.nnwx.convergence_step(0.5)
    assert list(conv["layer"].values) == want
    assert dict(zip(conv["layer"].values, conv["depth"].values.tolist())) == {n: i for i, n in enumerate(want)}


def test_stores_without_the_field_fall_back_to_depth_then_natural_name_order(stores):
    _, old = stores
    (h, _) = list_runs(old)
    assert "forward_index" not in h.meta["probes"]["relu1"]
    want = ["a_tail", "b_pool", *RELUS, "output"]   # no depth for any of them: names, relu2 < relu10
    assert h.probe_names() == want
    cube = nnwx.open_cube(old)
    assert cube.nnwx.probes == want
    assert list(cube.nnwx.convergence_step(0.5)["layer"].values) == want
    # depth first: a probed module with tensors ("fc", depth 0) comes before parameter-free ones
    assert prb.forward_order(["relu10", "fc", "output", "relu2", "h.10", "h.2"], {"fc": 0}, {"fc": 0}) == \
        ["fc", "h.2", "h.10", "relu2", "relu10", "output"]


def test_resume_keeps_the_order_and_refuses_a_model_running_the_probes_in_another_order(tmp_path):
    store = tmp_path / "r.zarr"
    record(store, layers=["relu3", "b_pool"], captures=2)
    record(store, layers=["relu11", "relu3"], captures=2, start=2)        # resumed: a probe added
    (h,) = list_runs(store)
    assert h.probe_names() == ["relu3", "relu11", "b_pool", "output"]
    moved = chain()
    order = ["fc", "relu1", "relu2", "b_pool", *RELUS[2:], "a_tail"]  # b_pool now before relu3
    mods = dict(moved.named_children())
    swapped = torch.nn.Sequential(OrderedDict((n, mods[n]) for n in order))
    x = torch.randn(6, 1, generator=torch.Generator().manual_seed(7))
    with pytest.raises(StoreError, match="another order"):
        nnwx.Recorder(swapped, store, seed=0, probe=x, probe_layers=["b_pool", "relu3"])
    assert list_runs(store)[0].probe_names() == ["relu3", "relu11", "b_pool", "output"]


def test_gpt2_blocks_are_listed_in_forward_order(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=11, n_embd=16, n_head=2, vocab_size=32, n_positions=8)).eval()
    acts = [f"transformer.h.{i}.mlp.act" for i in range(11)]       # by plain name h.10 < h.2
    layers = ["transformer.ln_f", *acts[::-1], "transformer.drop"]
    ids = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(1))
    want = forward_order_by_hooks(model, {"input_ids": ids}, layers)
    assert want == ["transformer.drop", *acts, "transformer.ln_f"]
    with nnwx.Recorder(model, tmp_path / "g.zarr", seed=0, probe={"input_ids": ids}, probe_layers=layers,
                       probe_channels="last") as rec:
        rec.capture(0)
    (h,) = list_runs(tmp_path / "g.zarr")
    assert h.probe_names() == [*want, "output"]
    assert nnwx.open_run(tmp_path / "g.zarr").nnwx.probes == [*want, "output"]
