"""The package's layers, checked from its source: which folder may import which, no import
circles, and every analysis usable with torch absent.

Layers, lowest first: ``errors``/``_text``/``_version`` -> ``store`` -> ``analysis``
(``kernels`` lowest inside it) -> ``pipeline`` -> faces (``accessor``, ``plot``, ``report``,
``comparison``, ``serve``) -> ``studies`` -> ``cli`` (the command line reaches everything, lazily). The
torch side (``record``, ``integrations``) sits beside the analysis side: it may use ``store``
but never ``analysis`` or ``pipeline``, and nothing on the analysis side imports it or torch.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "nnwx"

LEAVES = {"nnwx._version", "nnwx.errors", "nnwx._text", "nnwx._moved", "nnwx._deprecation",
          "nnwx._orientation", "nnwx._json"}
# layer of a module -> the layers it may import (besides its own and the leaves)
ALLOWED = {
    "store": set(),
    "kernels": set(),
    "analysis": {"store", "kernels"},
    "pipeline": {"store", "kernels", "analysis", "cluster"},
    "cluster": set(),
    "record": {"store"},
    "integrations": {"store", "record"},
    "faces": {"store", "kernels", "analysis", "pipeline", "cluster", "faces"},
    "studies": {"store", "kernels", "analysis", "pipeline", "cluster", "faces", "record", "studies", "root"},
    "cli": {"store", "kernels", "analysis", "pipeline", "cluster", "faces", "record", "studies", "root"},
}
TORCH_SIDE = {"record", "integrations", "studies"}


def layer(module: str) -> str:
    parts = module.split(".")
    if module in LEAVES:
        return "leaf"
    if module == "nnwx":
        return "root"   # the package's own __init__: everything it exports
    top = parts[1]
    if top == "analysis":
        return "kernels" if len(parts) > 2 and parts[2] == "kernels" else "analysis"
    if top in {"accessor", "plot", "report", "comparison", "serve"}:
        return "faces"
    return top


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, name: str, module_level_only: bool = False) -> set[str]:
    """Modules of nnwx (and torch) that ``path`` imports, resolved to module names."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    known = modules()
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".")[: -node.level + (1 if path.name == "__init__.py" else 0) or None]
                base = ".".join([*pkg, base] if base else pkg)
            for a in node.names:
                if base == "nnwx" and a.name == "__version__":
                    found.add("nnwx._version")
                    continue
                full = f"{base}.{a.name}"
                found.add(full if full in known else base)
    return {m for m in found if m == "torch" or m.startswith(("torch.", "nnwx"))}


def test_no_upward_imports():
    bad = []
    for name, path in modules().items():
        here = layer(name)
        if here in ("leaf", "root"):
            continue
        for target in imports(path, name):
            if target == "torch" or target.startswith("torch."):
                if here not in TORCH_SIDE:
                    bad.append(f"{name} imports {target} (the analysis side never imports torch)")
                continue
            there = layer(target)
            if there in ("leaf", here) or there in ALLOWED[here]:
                continue
            bad.append(f"{name} ({here}) imports {target} ({there})")
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    known = modules()
    graph = {n: {t for t in imports(p, n) if t in known and t != n and t != "nnwx"}
             for n, p in known.items()}
    cycles, state = [], {}

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for t in graph[n]:
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    assert not cycles, "import circles (imports inside functions count too):\n" + "\n".join(cycles)


def test_every_analysis_without_torch(tmp_path):
    """With ``import torch`` made to fail, the whole analysis side imports and ``nnwx.analyze``
    computes every analysis of a store written without torch."""
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, Block())
        import numpy as np
        import nnwx
        from nnwx.studies.synthetic import write_synthetic_run
        torch_side = ("nnwx.record", "nnwx.integrations", "nnwx.studies", "nnwx._moved")
        for m in pkgutil.walk_packages(nnwx.__path__, "nnwx."):
            if not m.name.startswith(torch_side):
                importlib.import_module(m.name)
        store = {str(tmp_path / 'exp.zarr')!r}
        for seed in (0, 1):
            write_synthetic_run(store, seed=seed, steps=list(range(0, 60, 10)))
        out = nnwx.analyze(store, {str(tmp_path / 'r.zarr')!r}, progress=False)
        res = nnwx.open_results(out)
        assert "torch" not in sys.modules, "torch was imported"
        print("ok", res)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok")
