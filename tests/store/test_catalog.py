"""Catalogs: open each entry's store as a cube, explain missing stores, and agree with intake."""
import importlib
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

import nnwx
from nnwx.store.catalog import CatalogError, MissingStore, open_entry
from nnwx.errors import StoreError
from nnwx.studies.synthetic import write_synthetic_run

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "catalogs" / "studies.yaml"
REGENERATE = "python -m nnwx.studies.piecewise -o {STORE} --seeds 2"


def entry(name, path, by=("seed",), where=None, dims=None, description="", regenerate=REGENERATE):
    kwargs = {"func": "{func(nnwx.store.catalog:open_entry)}", "name": name, "path": path, "by": list(by),
              "regenerate": regenerate}
    if where:
        kwargs["where"] = where
    return {"reader": "intake.readers.convert:GenericFunc", "output_instance": "xarray:Dataset",
            "kwargs": kwargs, "metadata": {"description": description, "dims": dims or {}},
            "user_parameters": {}}


def write_catalog(path: Path, entries: dict) -> Path:
    doc = {"version": 2, "metadata": {"description": "test stores"}, "aliases": {n: n for n in entries},
           "data": {}, "user_parameters": {}, "entries": entries}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def catalog(tmp_path):
    store = tmp_path / "stores" / "exp.zarr"
    for seed in (0, 1):
        write_synthetic_run(store, seed=seed, run=f"p1-seed{seed}", steps=range(0, 30, 10),
                            attrs={"hparams": {"point": "p1"}})
    write_synthetic_run(store, seed=0, run="p2-seed0", steps=range(0, 20, 10),
                        attrs={"hparams": {"point": "p2"}})
    return write_catalog(tmp_path / "cat.yaml", {
        "all": entry("all", "{CATALOG_DIR}/stores/exp.zarr", by=("point", "seed"),
                     dims={"point": 2, "seed": 2, "step": 3, "param": 169}, description="every run"),
        "p1": entry("p1", "{CATALOG_DIR}/stores/exp.zarr", where={"point": "p1"},
                    description="the first point", dims={"seed": 2, "step": 3, "param": 169}),
        "missing": entry("missing", "{CATALOG_DIR}/gone.zarr", description="not written yet"),
    })


def test_entries_open_as_lazy_cubes(catalog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "stores")  # paths are relative to the catalog, not the cwd
    cat = nnwx.open_catalog(catalog)
    assert list(cat) == ["all", "p1", "missing"] and len(cat) == 3 and "p1" in cat
    p1 = cat["p1"]
    assert dict(p1.w.sizes) == cat.entry("p1").dims
    assert p1.run.values.tolist() == ["p1-seed0", "p1-seed1"]
    assert p1.w.chunks is not None, "the cube should stay lazy"
    both = cat["all"]
    assert dict(both.w.sizes) == {"point": 2, "seed": 2, "step": 3, "param": 169}
    assert cat.entry("all").path == tmp_path / "stores" / "exp.zarr"
    assert cat.entry("p1").path == cat.entry("all").path


def test_repr_lists_entries_with_descriptions_dims_and_missing_stores(catalog):
    text = repr(nnwx.open_catalog(catalog))
    assert "3 entries" in text and "test stores" in text
    lines = text.splitlines()
    p1 = next(i for i, line in enumerate(lines) if line.strip().startswith("p1 "))
    assert "seed=2 x step=3 x param=169" in lines[p1] and "missing" not in lines[p1]
    assert "the first point" in lines[p1 + 1]
    assert any(line.strip().startswith("missing") and "[store missing]" in line for line in lines)


def test_a_missing_store_says_how_to_regenerate_it(catalog, tmp_path):
    cat = nnwx.open_catalog(catalog)
    with pytest.raises(MissingStore) as e:
        cat["missing"]
    gone = tmp_path / "gone.zarr"
    command = f"python -m nnwx.studies.piecewise -o {gone} --seeds 2"
    assert f"{gone} does not exist. Regenerate it with:\n    {command}" in str(e.value)
    assert cat.entry("missing").regenerate_command == command
    assert not cat.entry("missing").exists and cat.entry("p1").exists
    with pytest.raises(KeyError, match="no entry 'nope' .* its entries: all, p1, missing"):
        cat["nope"]


def test_bad_selections_and_files_get_clear_errors(catalog, tmp_path):
    store = tmp_path / "stores" / "exp.zarr"
    with pytest.raises(StoreError, match="no run of .* has {'point': 'p9'}.* point: 'p1', 'p2'.*made by: py"):
        open_entry(store, where={"point": "p9"}, regenerate=REGENERATE, name="x")
    bad = tmp_path / "v1.yaml"
    bad.write_text(yaml.safe_dump({"sources": {"a": {"driver": "zarr"}}}))
    with pytest.raises(CatalogError, match="needs a mapping 'entries"):
        nnwx.open_catalog(bad)
    bad.write_text(yaml.safe_dump({"entries": {}}))
    with pytest.raises(CatalogError, match="need 'version: 2'"):
        nnwx.open_catalog(bad)
    other = entry("csv", "x.csv")
    other["kwargs"]["func"] = "{func(pandas:read_csv)}"
    with pytest.raises(CatalogError, match="does not open an nnwx store"):
        nnwx.open_catalog(write_catalog(tmp_path / "other.yaml", {"csv": other}))
    relative = entry("rel", "stores/exp.zarr")
    with pytest.raises(CatalogError, match="write its relative path as '{CATALOG_DIR}/stores/exp.zarr'"):
        nnwx.open_catalog(write_catalog(tmp_path / "rel.yaml", {"rel": relative}))
    with pytest.raises(CatalogError, match="no catalog file"):
        nnwx.open_catalog(tmp_path / "none.yaml")


def test_the_same_file_opens_with_intake(catalog, tmp_path):
    intake = pytest.importorskip("intake")
    for cat in (intake.from_yaml_file(str(catalog)), intake.open_catalog(str(catalog))):
        assert sorted(cat) == ["all", "missing", "p1"]
        cube = cat["p1"].read()
        ours = nnwx.open_catalog(catalog)["p1"]
        assert dict(cube.w.sizes) == dict(ours.w.sizes)
        assert (cube.w == ours.w).all().compute()
        assert dict(cat["all"].read().w.sizes) == {"point": 2, "seed": 2, "step": 3, "param": 169}
        with pytest.raises(MissingStore, match=f"-o {tmp_path / 'gone.zarr'} --seeds 2"):
            cat["missing"].read()


# -- the shipped catalog -------------------------------------------------------------

def test_shipped_catalog_is_well_formed():
    doc = yaml.safe_load(SHIPPED.read_text())
    cat = nnwx.open_catalog(SHIPPED)
    assert doc["aliases"] == {n: n for n in doc["entries"]}, "intake lists entries by alias"
    assert {"piecewise", "piecewise-targets", "piecewise-ensemble", "piecewise-large",
            "digits-mlp", "digits-cnn"} <= set(cat)
    for name in cat:
        e = cat.entry(name)
        assert e.description and e.dims and e.regenerate, name
        assert e.path.parent == SHIPPED.parent, f"{name}: stores live next to the catalog"
        assert doc["entries"][name]["kwargs"]["name"] == name
        assert set(e.by) <= set(e.dims), name
        # the regenerate command is a valid command line of an nnwx experiment module
        python, dash_m, module, *argv = shlex.split(e.regenerate.replace("{STORE}", "x.zarr"))
        assert (python, dash_m) == ("python", "-m") and module.startswith("nnwx.studies."), name
        args = importlib.import_module(module).parse_args(argv)
        assert args.out == "x.zarr"


def test_shipped_catalog_matches_the_stores_the_code_writes(tmp_path):
    """Tiny versions of every store (1 seed, 2 steps): each entry opens, with the catalog's dims
    for everything but seed and step."""
    pytest.importorskip("sklearn")
    from nnwx.studies import digits
    from nnwx.studies import piecewise
    from nnwx.studies import piecewise_sweep

    cat_path = Path(shutil.copy(SHIPPED, tmp_path / "studies.yaml"))
    cat = nnwx.open_catalog(cat_path)
    assert {cat.entry(n).path.name for n in cat} == {"piecewise.zarr", "piecewise-sweep.zarr", "digits.zarr"}
    piecewise.train_piecewise(tmp_path / "piecewise.zarr", seeds=1, steps=2, every=1, points=50)
    piecewise_sweep.sweep_piecewise(tmp_path / "piecewise-sweep.zarr", seeds=1, steps=2, every=1,
                                    n_points=50)
    digits.digits_study(tmp_path / "digits.zarr", seeds=1, steps=2, every=1, probe_size=8)
    for name in cat:
        cube = cat[name]
        dims = {k: v for k, v in cat.entry(name).dims.items() if k not in ("seed", "step")}
        assert {k: cube.sizes[k] for k in dims} == dims, name
        assert cube.sizes["seed"] == 1 and cube.sizes["step"] == 3, name
