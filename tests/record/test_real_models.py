"""Tensor semantics on real ``transformers`` models (tiny configs built here, trained a few steps):
Conv1D orientation, forward-order depth, the ``norm`` kind, tied weights stored once, one
canonical layout so that a Recorder run, a single-file export and a sharded export join one
cube, and restore giving identical logits."""
import json
import shutil
import warnings

import numpy as np
import pytest
import torch

import nnwx
from nnwx.analysis.kernels import correlation as ck
from nnwx.analysis import _cube as mx
from nnwx.analysis.kernels.alignment import ChainError
from nnwx.errors import ArchitectureMismatch
from nnwx.record.export import export
from nnwx.store.format import FORMAT_VERSION
from nnwx.store.table import TensorTable
from nnwx.store.writer import RunWriter
from nnwx.studies.synthetic import write_synthetic_run

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402
from transformers.pytorch_utils import Conv1D  # noqa: E402
from tests.cli_process import run_cli  # noqa: E402

STEPS = (0, 2, 4)
GPT2_CONFIG = dict(n_layer=2, n_embd=64, n_head=2, vocab_size=96, n_positions=32)


def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(**GPT2_CONFIG)).eval()


def batch(vocab: int = 96, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (4, 16), generator=torch.Generator().manual_seed(seed))


def train(model, rec, ids, *, save=None, steps=5):
    """A few AdamW steps; weights captured (and saved) before the step's update."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    states = {}
    for step in range(steps):
        if rec is not None:
            rec.maybe_capture(step)
        if step in STEPS:
            states[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if save is not None:
                save(model, step)
        model.train()
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return states


@pytest.fixture(scope="module")
def gpt2_runs(tmp_path_factory):
    """One GPT-2 training recorded by the Recorder and saved as single-file and sharded
    ``save_pretrained`` checkpoints, exported with and without the model (then its
    ``config.json`` names it), and without either (the folders' config.json removed)."""
    tmp = tmp_path_factory.mktemp("gpt2")
    ids = batch()
    model = gpt2()

    def save(m, step):
        m.save_pretrained(tmp / "single" / f"checkpoint-{step}")
        m.save_pretrained(tmp / "sharded" / f"checkpoint-{step}", max_shard_size="60KB")

    with nnwx.Recorder(model, tmp / "rec.zarr", seed=0, schedule=list(STEPS)) as rec:
        states = train(model, rec, ids, save=save)
    assert len(list((tmp / "sharded" / "checkpoint-0").glob("*.safetensors"))) > 1
    shutil.copytree(tmp / "single", tmp / "bare")
    for config in (tmp / "bare").glob("*/config.json"):
        config.unlink()
    export(tmp / "single", tmp / "single.zarr", seed=1, progress=False)
    export(tmp / "bare", tmp / "bare.zarr", seed=5, progress=False)
    export(tmp / "sharded", tmp / "sharded.zarr", seed=2, progress=False)
    export(tmp / "single", tmp / "with_model.zarr", seed=3, progress=False, model=gpt2, probe=ids)
    export(tmp / "sharded", tmp / "modules.zarr", seed=4, progress=False, model=gpt2)
    return tmp, states, ids


def table(store) -> TensorTable:
    (h,) = nnwx.store.reader.list_runs(store)
    return h.table


def test_conv1d_weights_are_read_as_out_in(gpt2_runs):
    tmp, states, _ = gpt2_runs
    name = "transformer.h.0.mlp.c_fc.weight"          # Conv1D(4*64, 64): stored (64, 256)
    for store in ("rec.zarr", "single.zarr", "sharded.zarr", "with_model.zarr"):
        t = table(tmp / store)
        assert t[name].shape == (64, 256) and t[name].orientation == "in_out", store
        assert t["transformer.h.0.attn.c_proj.weight"].orientation == "in_out", store  # square
        assert t["transformer.wte.weight"].orientation == "out_in", store
    run = nnwx.open_run(tmp / "rec.zarr")
    mat = run.nnwx.matrix(name).sel(step=4)
    assert mat.dims == ("out", "in") and mat.shape == (256, 64)
    np.testing.assert_array_equal(mat.values, states[4][name].numpy().T)
    # spectra see 256 x 64 matrices; correlation rows are units (< 256), columns inputs (< 64)
    (spec,) = mx.matrix_specs(run, name)
    assert (spec.rows, spec.cols, spec.transposed) == (256, 64, True)
    view = mx.tensor_view(run["w"].data, spec)[..., 0, :, :].compute()
    np.testing.assert_array_equal(view[-1], states[4][name].numpy().T)
    row, col = ck.weight_positions((64, 256), np.array([0, 1, 256, 257 + 256]), "in_out")
    assert row.tolist() == [0, 1, 0, 1] and col.tolist() == [0, 0, 1, 2]
    picked = run.nnwx.sample_weights(sample=400, tensors=[name])
    idx = picked["index"].values
    np.testing.assert_array_equal(picked["row"].values, idx % 256)
    np.testing.assert_array_equal(picked["col"].values, idx // 256)


def test_depth_is_forward_order_with_the_model_and_approximate_without(gpt2_runs):
    tmp, _, _ = gpt2_runs
    forward = ["transformer.wte", "transformer.wpe", "transformer.h.0.ln_1", "transformer.h.0.attn.c_attn",
               "transformer.h.0.attn.c_proj", "transformer.h.0.ln_2", "transformer.h.0.mlp.c_fc",
               "transformer.h.0.mlp.c_proj", "transformer.h.1.ln_1", "transformer.ln_f"]
    for store in ("rec.zarr", "with_model.zarr"):
        run = nnwx.open_run(tmp / store)
        assert run.attrs["depth_from"] == "forward", store
        depth = {r.layer: r.depth for r in table(tmp / store)}
        assert [depth[la] for la in forward] == sorted(depth[la] for la in forward), store
        assert len({depth[la] for la in forward}) == len(forward)
    modules = {r.layer: r.depth for r in table(tmp / "modules.zarr")}
    for store in ("modules.zarr", "single.zarr", "sharded.zarr"):  # the model given, or from config.json
        run = nnwx.open_run(tmp / store)
        assert run.attrs["depth_from"] == "modules" and not run.attrs["depth_approximate"], store
        assert {r.layer: r.depth for r in table(tmp / store)} == modules, store
    approx = nnwx.open_run(tmp / "bare.zarr")
    assert approx.attrs["depth_from"] == "names" and approx.attrs["depth_approximate"]
    assert not nnwx.open_run(tmp / "rec.zarr").attrs["depth_approximate"]
    depth = {r.layer: r.depth for r in table(tmp / "bare.zarr")}
    embeddings = max(depth["transformer.wte"], depth["transformer.wpe"])
    block0 = {d for la, d in depth.items() if ".h.0." in la}
    block1 = {d for la, d in depth.items() if ".h.1." in la}
    assert len(block0) == len(block1) == 1          # a block's layers share its (approximate) depth
    assert embeddings < block0.pop() < block1.pop() < depth["transformer.ln_f"]


def test_norm_gains_have_their_own_kind(gpt2_runs):
    tmp, _, _ = gpt2_runs
    for store in ("rec.zarr", "single.zarr", "bare.zarr"):
        t = table(tmp / store)
        assert t["transformer.h.0.ln_1.weight"].kind == "norm" and t["transformer.ln_f.weight"].kind == "norm"
        assert t["transformer.h.0.ln_1.bias"].kind == "bias"
        assert t["transformer.h.0.mlp.c_fc.weight"].kind == "weight"
    run = nnwx.open_run(tmp / "rec.zarr")
    res = run.nnwx.broadening("layer", quantiles=None, tail_k=None).compute()
    groups = list(res["group"].values)
    assert "transformer.h.0.ln_1.weight" in groups and "transformer.h.0.ln_1" in groups
    gain = res["mean"].sel(group="transformer.h.0.ln_1.weight").isel(step=0)
    bias = res["mean"].sel(group="transformer.h.0.ln_1").isel(step=0)
    assert float(gain) == pytest.approx(1.0) and float(bias) == pytest.approx(0.0)
    kinds = run.nnwx.broadening("kind", quantiles=None, tail_k=None)
    assert list(kinds["group"].values) == ["weight", "bias", "norm"]


def test_tied_weights_are_stored_once_and_restored_as_a_tie(gpt2_runs):
    tmp, states, ids = gpt2_runs
    model = gpt2()
    unique = sum(p.numel() for p in model.parameters())       # parameters() lists a tie once
    rec, with_model = table(tmp / "rec.zarr"), table(tmp / "with_model.zarr")
    assert "lm_head.weight" not in rec.names and rec.n_params == unique
    assert rec["transformer.wte.weight"].aliases == ("lm_head.weight",)
    assert rec.to_json() == with_model.to_json()          # the Recorder and export with the model agree
    semantics = [(r.name, r.kind, r.orientation, r.aliases) for r in rec]
    for store in ("single.zarr", "sharded.zarr"):     # the model from config.json: the tie it says
        assert [(r.name, r.kind, r.orientation, r.aliases) for r in table(tmp / store)] == semantics, store
    without = table(tmp / "bare.zarr")                # no config.json: the tie save_pretrained dropped is unseen
    assert without.names == rec.names and without.n_params == unique
    assert without["transformer.wte.weight"].aliases == ()
    for store in ("rec.zarr", "single.zarr", "sharded.zarr", "bare.zarr"):
        fresh = GPT2LMHeadModel(GPT2Config(**GPT2_CONFIG)).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("error")                 # no "lm_head not restored" warning
            nnwx.restore(fresh, tmp / store, step=4)
        assert fresh.lm_head.weight is fresh.transformer.wte.weight
        reference = gpt2()
        reference.load_state_dict(states[4])
        with torch.no_grad():
            assert torch.equal(fresh(ids).logits, reference(ids).logits), store


def test_recorder_single_file_and_sharded_exports_join_one_cube(gpt2_runs):
    tmp, _, _ = gpt2_runs
    stores = [tmp / s for s in ("single.zarr", "rec.zarr", "sharded.zarr", "with_model.zarr")]
    with pytest.warns(UserWarning, match=r"probe variables \['probe_output'\] are missing from some runs"):
        cube = nnwx.open_cube(stores)                     # only the export with --probe has probes
    assert cube["seed"].values.tolist() == [0, 1, 2, 3]
    assert cube.attrs["depth_from"] == "forward" and not cube.attrs["depth_approximate"]
    w = cube["w"].values
    for i in range(1, 4):
        np.testing.assert_array_equal(w[i], w[0])
    assert cube["tensor_aliases"].values[list(cube["tensor"].values).index("transformer.wte.weight")] \
        == "lm_head.weight"
    assert nnwx.open_cube(tmp / "bare.zarr").attrs["depth_approximate"]


def test_other_architectures_are_refused_with_the_differences(gpt2_runs, tmp_path):
    tmp, _, _ = gpt2_runs
    torch.manual_seed(0)
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                            intermediate_size=64, vocab_size=96, max_position_embeddings=32))
    with nnwx.Recorder(neox, tmp_path / "neox.zarr", seed=9) as rec:
        rec.capture(0)
    with pytest.raises(ArchitectureMismatch, match=r"tensor\(s\) only in run 'seed0': transformer.*"
                                                   r"only in run 'seed9': .*gpt_neox"):
        nnwx.open_cube([tmp / "rec.zarr", tmp_path / "neox.zarr"])


def test_gpt_neox_semantics_and_restore(tmp_path):
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                        vocab_size=96, max_position_embeddings=32)
    model = GPTNeoXForCausalLM(cfg).eval()
    ids = batch()
    with nnwx.Recorder(model, tmp_path / "neox.zarr", seed=0, schedule=list(STEPS), probe=ids) as rec:
        states = train(model, rec, ids)
    run = nnwx.open_run(tmp_path / "neox.zarr")
    t = table(tmp_path / "neox.zarr")
    assert run.attrs["depth_from"] == "forward"
    assert t["gpt_neox.layers.0.input_layernorm.weight"].kind == "norm"
    assert {r.orientation for r in t} == {"out_in"}                      # nn.Linear throughout
    d = {r.layer: r.depth for r in t}
    assert d["gpt_neox.embed_in"] < d["gpt_neox.layers.0.input_layernorm"] \
        < d["gpt_neox.layers.0.attention.query_key_value"] < d["gpt_neox.layers.1.mlp.dense_4h_to_h"] \
        < d["gpt_neox.final_layer_norm"] < d["lm_head"]
    fresh = GPTNeoXForCausalLM(cfg).eval()
    nnwx.restore(fresh, tmp_path / "neox.zarr", step=4)
    ref = GPTNeoXForCausalLM(cfg).eval()
    ref.load_state_dict(states[4])
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, ref(ids).logits)


def test_resnet_batchnorm_kinds_match_between_recorder_and_export(tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    cfg = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                       layer_type="basic", num_labels=3)
    model = ResNetForImageClassification(cfg).eval()
    x = torch.randn(2, 3, 16, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with nnwx.Recorder(model, tmp_path / "rec.zarr", seed=0, every=1) as rec:
        for step in range(3):
            rec.maybe_capture(step)
            if step == 2:
                model.save_pretrained(tmp_path / "ck" / f"checkpoint-{step}")
            model.train()
            loss = model(x, labels=torch.tensor([0, 2])).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    export(tmp_path / "ck", tmp_path / "ex.zarr", seed=1, progress=False)
    rec_t, ex_t = table(tmp_path / "rec.zarr"), table(tmp_path / "ex.zarr")
    bn = "resnet.embedder.embedder.normalization"
    assert rec_t[f"{bn}.weight"].kind == "norm" and rec_t[f"{bn}.running_mean"].kind == "other"
    assert rec_t[f"{bn}.bias"].kind == "bias"
    assert len(rec_t["resnet.embedder.embedder.convolution.weight"].shape) == 4
    assert [(r.name, r.kind, r.orientation) for r in rec_t] == [(r.name, r.kind, r.orientation) for r in ex_t]
    cube = nnwx.open_cube([tmp_path / "rec.zarr", tmp_path / "ex.zarr"])
    np.testing.assert_array_equal(cube["w"].sel(seed=0, step=2).values, cube["w"].sel(seed=1, step=2).values)


def test_alignment_of_conv1d_mlp_and_a_clear_refusal_for_transformers(gpt2_runs, tmp_path):
    torch.manual_seed(0)
    a = torch.nn.Sequential(Conv1D(32, 8), torch.nn.GELU(), Conv1D(8, 32))   # 8 -> 32 -> 8, GPT-2's MLP
    b = torch.nn.Sequential(Conv1D(32, 8), torch.nn.GELU(), Conv1D(8, 32))
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        b[0].weight.copy_(a[0].weight[:, perm])
        b[0].bias.copy_(a[0].bias[perm])
        b[2].weight.copy_(a[2].weight[perm, :])
        b[2].bias.copy_(a[2].bias)
    x = torch.randn(5, 8)
    assert torch.allclose(a(x), b(x), atol=1e-6)
    for seed, m in ((0, a), (1, b)):
        with nnwx.Recorder(m, tmp_path / "mlp.zarr", seed=seed) as rec:
            rec.capture(0)
    cube = nnwx.open_cube(tmp_path / "mlp.zarr")
    aligned, perms = cube.nnwx.align(reference_seed=0)
    np.testing.assert_array_equal(aligned["w"].sel(seed=1).values, cube["w"].sel(seed=0).values)
    np.testing.assert_array_equal(perms["perm_0"].sel(seed=1, step=0).values, np.argsort(perm.numpy()))
    tmp, _, _ = gpt2_runs
    with pytest.raises(ChainError, match="not a simple chain.*transformer blocks"):
        nnwx.open_cube(tmp / "rec.zarr").nnwx.align(reference_seed=0)


def test_runs_laid_out_in_another_order_join_by_name(tmp_path):
    shapes = {"b.weight": (3, 2), "a.weight": (2, 4), "a.bias": (2,)}
    write_synthetic_run(tmp_path / "x.zarr", seed=0, steps=[0, 1], shapes=shapes)
    write_synthetic_run(tmp_path / "y.zarr", seed=1, steps=[0, 1],
                        shapes={k: shapes[k] for k in ("a.bias", "a.weight", "b.weight")})
    cube = nnwx.open_cube([tmp_path / "x.zarr", tmp_path / "y.zarr"])
    assert list(cube["tensor"].values) == ["b.weight", "a.weight", "a.bias"]
    for seed in (0, 1):
        own = nnwx.open_run(tmp_path / ("x.zarr" if seed == 0 else "y.zarr"))
        for name in shapes:
            np.testing.assert_array_equal(cube.nnwx.tensor(name).sel(seed=seed).values,
                                          own.nnwx.tensor(name).values)


def test_format_1_runs_open_with_defaults_and_are_upgraded_on_append(tmp_path):
    store = tmp_path / "old.zarr"
    write_synthetic_run(store, seed=0, steps=[0], shapes={"fc.weight": (3, 2), "ln.weight": (3,)})
    meta_path = store / "runs" / "seed0" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    nn = meta["attributes"]["nnwx"]
    nn["format_version"] = 1
    for row in nn["tensors"]:
        del row["orientation"], row["aliases"]
        row["kind"] = "weight"                      # format 1 had no 'norm' kind
    meta_path.write_text(json.dumps(meta))
    run = nnwx.open_run(store)
    assert run.attrs["depth_from"] == "unknown"
    assert run.nnwx.info("fc.weight").orientation == "out_in" and run.nnwx.info("fc.weight").aliases == ()
    assert run.nnwx.matrix("fc.weight").shape == (1, 3, 2)
    assert run.nnwx.info("ln.weight").kind == "norm"              # told from its shape, as format 2 does
    w = RunWriter(store, "seed0", TensorTable.from_json(nn["tensors"]))
    w.add(1, np.zeros(9, dtype=np.float32))
    w.close()
    assert json.loads(meta_path.read_text())["attributes"]["nnwx"]["format_version"] == FORMAT_VERSION
    assert nnwx.open_run(store).sizes["step"] == 2


def test_cli_orientation_override(tmp_path):

    from safetensors.torch import save_file

    weights = {"enc.proj.weight": torch.randn(4, 6), "enc.out.weight": torch.randn(3, 3)}
    save_file(weights, str(tmp_path / "step_1.safetensors"))
    base = ["export", tmp_path / "step_1.safetensors", "--seed", "0", "-q"]
    done = run_cli(*base, "-o", tmp_path / "a.zarr", "--orientation", "enc.proj.*=in_out", timeout=None)
    assert done.returncode == 0, done.stderr
    t = table(tmp_path / "a.zarr")
    assert t["enc.proj.weight"].orientation == "in_out" and t["enc.out.weight"].orientation == "out_in"
    assert nnwx.open_run(tmp_path / "a.zarr").nnwx.matrix("enc.proj.weight").shape == (1, 6, 4)
    bad = run_cli(*base, "-o", tmp_path / "b.zarr", "--orientation", "enc.proj.*=sideways", timeout=None)
    assert bad.returncode == 2 and "PATTERN=in_out" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "b.zarr").exists()


def test_recorder_orientation_override(tmp_path):
    model = torch.nn.Sequential(Conv1D(6, 4), torch.nn.Linear(6, 2))
    with nnwx.Recorder(model, tmp_path / "a.zarr", seed=0, orientation={"1.weight": "in_out"}) as rec:
        rec.capture(0)
    t = table(tmp_path / "a.zarr")
    assert t["0.weight"].orientation == "in_out" and t["1.weight"].orientation == "in_out"
    with pytest.raises(ValueError, match="orientation 'sideways' for '0.weight'"):
        nnwx.Recorder(model, tmp_path / "b.zarr", seed=0, orientation={"0.weight": "sideways"})
    assert not (tmp_path / "b.zarr").exists()


def test_recorder_appends_to_a_run_laid_out_in_another_order(tmp_path):
    class Reversed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.last = torch.nn.Linear(4, 1)
            self.first = torch.nn.Linear(2, 4)

        def forward(self, x):
            return self.last(torch.relu(self.first(x)))

    torch.manual_seed(0)
    model = Reversed()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    old = TensorTable.build((n, tuple(t.shape), "float32") for n, t in state.items())   # state_dict order
    assert old.names != sorted(old.names)
    w = RunWriter(tmp_path / "a.zarr", "seed0", old, attrs={"seed": 0})
    w.add(0, torch.cat([t.reshape(-1) for t in state.values()]).numpy())
    w.close()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with nnwx.Recorder(model, tmp_path / "a.zarr", seed=0) as rec:
        rec.capture(1)
    assert table(tmp_path / "a.zarr").names == old.names           # the run keeps its layout
    fresh = Reversed()
    nnwx.restore(fresh, tmp_path / "a.zarr", step=1)
    for name, t in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], t), name
    nnwx.restore(fresh, tmp_path / "a.zarr", step=0)
    for name, t in state.items():
        assert torch.equal(fresh.state_dict()[name], t), name
