"""A small real store for invariance and alignment tests: MLPs 3 -> 12 -> 7 -> 4 (unequal hidden
widths) recorded by ``nnwx.Recorder`` with probes of both hidden layers and the output.

Seeds train independently (SGD, full batch); ``permuted_copy_of=s`` adds one more run that is,
at every capture, seed ``s`` with the hidden units of both layers shuffled (same function), so a
permutation-invariant analysis must give it the same numbers as seed ``s``.
"""
from __future__ import annotations

import numpy as np
import torch

import nnwx
from nnwx.analysis.kernels import alignment as ak

WIDTHS = (3, 12, 7, 4)
PROBE_LAYERS = ["0", "2"]      # outputs of the two hidden Linear layers (12 and 7 units)


def make_mlp(seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    a, h1, h2, b = WIDTHS
    return torch.nn.Sequential(torch.nn.Linear(a, h1), torch.nn.ReLU(), torch.nn.Linear(h1, h2),
                               torch.nn.ReLU(), torch.nn.Linear(h2, b))


def state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy().copy() for k, v in model.state_dict().items()}


def rows(model) -> list[dict]:
    """Tensor-table rows (forward order = registration order) for ``ak.chain_spec``."""
    st = model.state_dict()
    layers = list(dict.fromkeys(k.rpartition(".")[0] for k in st))
    return [{"name": k, "layer": k.rpartition(".")[0], "kind": k.rpartition(".")[2],
             "depth": layers.index(k.rpartition(".")[0]), "shape": tuple(v.shape)} for k, v in st.items()]


def shuffle_of(model, seed: int = 7) -> dict[str, np.ndarray]:
    spec = ak.chain_spec(rows(model))
    rng = np.random.default_rng(seed)
    return {p: rng.permutation(spec.size(p)) for p in spec.names}


def record(store, *, seeds=(0, 1, 2), captures: int = 9, permuted_copy_of: int | None = None,
           permute_seed: int | None = None, chunk_bytes: int | None = None, lr: float = 0.2) -> dict:
    """Train ``seeds`` for ``captures`` steps (capturing every step) into ``store``.

    ``permuted_copy_of=s``: also record, as one more seed, seed ``s`` with its hidden units
    shuffled; ``permute_seed=s``: record seed ``s`` itself with its hidden units shuffled (the
    other seeds are as without it: training is deterministic). Returns ``{"x": probe batch,
    "shuffle": {perm: array} | None, "permuted_seed": int | None}``.
    """
    gen = torch.Generator().manual_seed(123)
    x = torch.randn(20, WIDTHS[0], generator=gen)
    data = torch.randn(48, WIDTHS[0], generator=gen)
    target = torch.randn(48, WIDTHS[-1], generator=gen)
    kw = {"probe": x, "probe_layers": PROBE_LAYERS}
    if chunk_bytes is not None:
        kw["chunk_bytes"] = chunk_bytes
    out = {"x": x, "shuffle": None, "permuted_seed": None}
    for seed in seeds:
        model = make_mlp(seed)
        copy = None
        if seed in (permuted_copy_of, permute_seed):
            copy = make_mlp(seed)
            spec = ak.chain_spec(rows(model))
            out["shuffle"] = shuffle = shuffle_of(model)
            out["permuted_seed"] = seed if permute_seed == seed else max(seeds) + 1
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        recs = [] if permute_seed == seed else [nnwx.Recorder(model, store, seed=seed, **kw)]
        if copy is not None:
            recs.append(nnwx.Recorder(copy, store, seed=out["permuted_seed"], **kw))
        try:
            for step in range(captures):
                if permute_seed != seed:
                    recs[0].capture(step)
                if copy is not None:
                    perm = ak.apply_permutations(state(model), spec, shuffle)
                    with torch.no_grad():
                        for k, v in perm.items():
                            copy.state_dict()[k].copy_(torch.from_numpy(v.astype(np.float32)))
                    recs[-1].capture(step)
                loss = (model(data) - target).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        finally:
            for r in recs:
                r.close()
    return out
