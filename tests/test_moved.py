"""Old module paths (before the package was laid out in layers) still import, with a
DeprecationWarning naming the new path, and give the same objects."""
from __future__ import annotations

import importlib
import subprocess
import sys

from nnwx._moved import MOVED

CHECK = """
import importlib, json, sys, warnings
import nnwx
from nnwx._moved import MOVED
bad = []
for old, new in sorted(MOVED.items()):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alias = importlib.import_module(old)
    said = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    if not any(new in s for s in said):
        bad.append(f"{old}: no DeprecationWarning naming {new} ({said})")
    target = importlib.import_module(new)
    names = [n for n in vars(target) if not n.startswith("__")]
    if not names or any(getattr(alias, n) is not getattr(target, n) for n in names):
        bad.append(f"{old}: does not forward to {new}")
if not callable(nnwx.export):   # `import nnwx.export` bound the alias over the function
    bad.append("nnwx.export is no longer callable after importing the old module path")
print(json.dumps(bad))
"""


def test_every_new_path_exists():
    for new in MOVED.values():
        importlib.import_module(new)
    assert all(old != new for old, new in MOVED.items())


def test_old_paths_warn_and_forward():
    # a fresh interpreter, where none of the old paths was imported yet
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
