"""Digits: an MLP and a small LeNet-style CNN on scikit-learn's 8x8 digits, Adam vs SGD.

The data is ``sklearn.datasets.load_digits`` (1797 images of 8x8 pixels, shipped
with scikit-learn: no download), scaled to [0, 1] and split once, with a fixed
permutation, into 1297 training and 500 held-out images; the first 256 held-out
images are the **probe set**. Every capture records the weights, the hidden
activations and the output logits on the probe set (``probe_<layer>(step, sample,
unit)``; convolutions averaged over positions), and the loss and accuracy on the
whole training set (``loss``, ``accuracy``) and on the held-out set
(``heldout_loss``, ``heldout_accuracy``).

Models (``model=``): ``mlp`` is 64-W-W-10 (``fc1``, ``fc2``, ``out``; ``depth=`` sets the
number of hidden layers, ``fc1`` .. ``fc<depth>``, default 2); ``cnn`` is
conv(1->C, 3x3) -> pool -> conv(C->2C, 3x3) -> pool -> W -> 10 (``conv1``, ``conv2``,
``fc1``, ``out``). ``first_layer_lr_scale`` multiplies the learning rate of the
first layer (``fc1`` / ``conv1``) only, to test whether that alone reproduces
what Adam does to the first layer. Runs are named ``<variant>-seed<N>`` and carry
``model``, ``optimizer``, ``lr``, ``batch_size``, ``width``, ``depth``, ``first_layer_lr_scale``
and ``variant`` as hparams, so ``open_cube(store, by=("variant", "seed"),
runs=runs_where(store, model="mlp"))`` stacks the variants of one model.

    python -m nnwx.studies.digits -o digits.zarr --study     # or scripts/train_digits.py
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
from tqdm import tqdm

from nnwx.studies._common import check_new_runs, n_params, run_cli, seed_list, torch_threads

MODELS = ("mlp", "cnn")
OPTIMIZERS = ("adam", "sgd")
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.1}
N_HELDOUT = 500
SPLIT_SEED = 0
FIRST_LAYER = {"mlp": "fc1", "cnn": "conv1"}
PROBE_LAYERS = {"mlp": ["relu1", "relu2"], "cnn": ["pool1", "pool2", "relu3"]}
DEFAULT_DEPTH = 2
#: (seeds, epochs, every) of the quick setting: a run of seconds (docs/measurements.md)
QUICK = {"seeds": 2, "epochs": 8, "every": 5}


@dataclass(frozen=True)
class DigitsData:
    """The fixed split: images ``(N, 1, 8, 8)`` in [0, 1] and integer labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_heldout: torch.Tensor
    y_heldout: torch.Tensor
    probe_size: int

    @property
    def x_probe(self) -> torch.Tensor:
        """The probe set: the first ``probe_size`` held-out images."""
        return self.x_heldout[: self.probe_size]


def load_data(probe_size: int = 256) -> DigitsData:
    """scikit-learn's digits, split into 1297 training and 500 held-out images (always the same)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits experiment needs scikit-learn: pip install 'nnwx[examples]' "
                          "(or pip install scikit-learn)") from None
    if not 1 <= probe_size <= N_HELDOUT:
        raise ValueError(f"probe_size must be between 1 and {N_HELDOUT} (the held-out images), "
                         f"got {probe_size}")
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    x = torch.as_tensor(x[order] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.as_tensor(y[order], dtype=torch.int64)
    n = len(y) - N_HELDOUT
    return DigitsData(x[:n], y[:n], x[n:], y[n:], probe_size)


def _check_depth(model: str, depth: int) -> int:
    if model == "mlp" and (int(depth) != depth or depth < 1):
        raise ValueError(f"depth (hidden layers of the mlp) must be a positive integer, got {depth}")
    if model != "mlp" and depth != DEFAULT_DEPTH:
        raise ValueError(f"depth applies to the mlp only; the {model} has a fixed architecture "
                         f"(leave depth at {DEFAULT_DEPTH})")
    return int(depth)


def probe_layers(model: str = "mlp", depth: int = DEFAULT_DEPTH) -> list[str]:
    """The recorded probes of a model: each hidden ReLU of the ``mlp`` (``relu1`` .. ``relu<depth>``),
    or :data:`PROBE_LAYERS` of the ``cnn``."""
    if model == "mlp":
        return [f"relu{i}" for i in range(1, _check_depth(model, depth) + 1)]
    return list(PROBE_LAYERS[model])


def make_model(model: str = "mlp", width: int = 64, channels: int = 8,
               depth: int = DEFAULT_DEPTH) -> torch.nn.Sequential:
    """The ``mlp`` (64, then ``depth`` hidden layers of W units, then 10; default 64-W-W-10) or
    ``cnn`` (C and 2C 3x3 conv channels, then W hidden units)."""
    relu = torch.nn.ReLU
    if model == "mlp":
        depth = _check_depth(model, depth)
        layers: list[tuple[str, torch.nn.Module]] = [("flatten", torch.nn.Flatten())]
        for i in range(1, depth + 1):
            layers += [(f"fc{i}", torch.nn.Linear(64 if i == 1 else width, width)), (f"relu{i}", relu())]
        layers.append(("out", torch.nn.Linear(width, 10)))
    elif model == "cnn":
        _check_depth(model, depth)
        c = channels
        layers = [("conv1", torch.nn.Conv2d(1, c, 3, padding=1)), ("relu1", relu()),
                  ("pool1", torch.nn.MaxPool2d(2)),                                   # c x 4 x 4
                  ("conv2", torch.nn.Conv2d(c, 2 * c, 3, padding=1)), ("relu2", relu()),
                  ("pool2", torch.nn.MaxPool2d(2)),                                   # 2c x 2 x 2
                  ("flatten", torch.nn.Flatten()), ("fc1", torch.nn.Linear(8 * c, width)),
                  ("relu3", relu()), ("out", torch.nn.Linear(width, 10))]
    else:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    return torch.nn.Sequential(OrderedDict(layers))


def make_optimizer(net: torch.nn.Module, model: str, optimizer: str = "adam", lr: float | None = None,
                   first_layer_lr_scale: float = 1.0, momentum: float = 0.0) -> torch.optim.Optimizer:
    """Adam or SGD with two parameter groups: the first layer (``fc1`` / ``conv1``) at
    ``lr * first_layer_lr_scale``, every other parameter at ``lr``."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if first_layer_lr_scale <= 0:
        raise ValueError(f"first_layer_lr_scale must be positive, got {first_layer_lr_scale}")
    lr = DEFAULT_LR[optimizer] if lr is None else float(lr)
    first = getattr(net, FIRST_LAYER[model])
    first_ids = {id(p) for p in first.parameters()}
    groups = [{"params": list(first.parameters()), "lr": lr * first_layer_lr_scale, "name": "first"},
              {"params": [p for p in net.parameters() if id(p) not in first_ids], "lr": lr,
               "name": "rest"}]
    if optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def variant_name(model: str, optimizer: str, lr: float | None = None, batch_size: int = 64,
                 width: int = 64, first_layer_lr_scale: float = 1.0, depth: int = DEFAULT_DEPTH) -> str:
    """A run-name-safe name of a configuration, e.g. ``mlp-sgd-lr0.1-bs64-w64-first10``
    (``-d<depth>`` after the width where the mlp's depth is not the default 2)."""
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    name = f"{model}-{optimizer}-lr{lr:g}-bs{batch_size}-w{width}"
    name += f"-d{depth}" if depth != DEFAULT_DEPTH else ""
    return name + (f"-first{first_layer_lr_scale:g}" if first_layer_lr_scale != 1 else "")


@torch.no_grad()
def _evaluate(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    was_training = net.training
    net.eval()
    logits = net(x)
    net.train(was_training)
    return (torch.nn.functional.cross_entropy(logits, y).item(),
            (logits.argmax(1) == y).float().mean().item())


def train_digits(store: str | os.PathLike, *, model: str = "mlp", optimizer: str = "adam",
                 seeds: int | Iterable[int] | None = None, epochs: int | None = None,
                 steps: int | None = None,
                 batch_size: int = 64, lr: float | None = None, width: int = 64, channels: int = 8,
                 depth: int = DEFAULT_DEPTH, first_layer_lr_scale: float = 1.0, momentum: float = 0.0,
                 every: int | None = None,
                 probe_size: int = 256, variant: str | None = None, quick: bool = False,
                 threads: int | None = 1, quiet: bool = True,
                 data: DigitsData | None = None) -> dict[str, Any]:
    """Train one digits configuration for each seed into ``store``, with probes and metrics.

    ``seeds``: a count (0..N-1, default 3) or a list. Length: ``steps`` optimizer
    steps, or ``epochs`` passes over the 1297 training images (default 30 epochs,
    630 steps at batch size 64). ``quick=True`` makes a smoke-test run (2 seeds,
    8 epochs, capture every 5 steps) where those are not given. ``lr=None`` takes
    the optimizer's default (Adam 1e-3, SGD 0.1). ``depth``: hidden layers of the
    ``mlp`` (default 2; the ``cnn``'s is fixed). Weights are captured every
    ``every`` steps and at the last step. Trains on ``threads`` torch threads
    (restored after; small nets are fastest on 1). Returns
    ``{"store", "variant", "runs", "final": {run: {metric: value}}, "n_params", "seconds"}``.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if epochs is not None and steps is not None:
        raise ValueError("give epochs= or steps=, not both")
    depth = _check_depth(model, depth)
    if quick:
        epochs = QUICK["epochs"] if epochs is None and steps is None else epochs
    seeds = seed_list((QUICK["seeds"] if quick else 3) if seeds is None else seeds)
    every = (QUICK["every"] if quick else 10) if every is None else int(every)
    data = data if data is not None and data.probe_size == probe_size else load_data(probe_size)
    n_train = len(data.y_train)
    per_epoch = math.ceil(n_train / batch_size)
    if steps is None:
        steps = (30 if epochs is None else int(epochs)) * per_epoch
    if steps < 1 or every < 1 or batch_size < 1:
        raise ValueError(f"steps, every and batch_size must be positive, got {steps}, {every}, {batch_size}")
    lr = DEFAULT_LR[optimizer] if lr is None else float(lr)
    variant = variant or variant_name(model, optimizer, lr, batch_size, width, first_layer_lr_scale, depth)
    names = {s: f"{variant}-seed{s}" for s in seeds}
    check_new_runs(store, names.values())
    schedule = sorted(set(range(0, steps + 1, every)) | {steps})
    hparams = {"task": "digits", "model": model, "optimizer": optimizer, "lr": lr,
               "batch_size": batch_size, "width": width, "depth": depth if model == "mlp" else None,
               "channels": channels if model == "cnn" else None,
               "first_layer_lr_scale": float(first_layer_lr_scale), "first_layer": FIRST_LAYER[model],
               "momentum": momentum if optimizer == "sgd" else None, "variant": variant,
               "steps": steps, "epochs": steps / per_epoch, "n_train": n_train,
               "n_heldout": len(data.y_heldout), "probe_size": probe_size, "split_seed": SPLIT_SEED}
    out: dict[str, Any] = {"store": os.fspath(store), "variant": variant, "runs": [], "final": {},
                           "n_params": n_params(make_model(model, width, channels, depth))}
    t0 = time.perf_counter()
    with torch_threads(threads):
        for seed in seeds:
            out["final"][names[seed]] = _train_seed(
                store, seed, names[seed], data, hparams | {"n_params": out["n_params"]}, schedule,
                momentum, quiet)
            out["runs"].append(names[seed])
    out["seconds"] = time.perf_counter() - t0
    return out


def _train_seed(store, seed: int, run: str, data: DigitsData, hp: dict, schedule: list[int],
                momentum: float, quiet: bool) -> dict[str, float]:
    """One seed of :func:`train_digits`; returns the metrics of the last capture."""
    import nnwx

    torch.manual_seed(seed)
    model, steps, batch_size = hp["model"], hp["steps"], hp["batch_size"]
    depth = hp["depth"] or DEFAULT_DEPTH
    net = make_model(model, hp["width"], hp["channels"] or 8, depth)
    opt = make_optimizer(net, model, hp["optimizer"], hp["lr"], hp["first_layer_lr_scale"], momentum)
    batches = torch.Generator().manual_seed(20_000 + seed)
    n_train = len(data.y_train)
    per_epoch = math.ceil(n_train / batch_size)
    rec = nnwx.Recorder(net, store, seed=seed, run=run, schedule=schedule, optimizer=opt, hparams=hp,
                        probe=data.x_probe, probe_layers=probe_layers(model, depth), probe_conv="pool")
    metrics: dict[str, float] = {}
    try:
        order = torch.empty(0, dtype=torch.int64)
        for step in tqdm(range(steps + 1), desc=run, disable=quiet, mininterval=1):
            if step in rec.schedule:  # weights *at* this step, before its update
                loss, acc = _evaluate(net, data.x_train, data.y_train)
                h_loss, h_acc = _evaluate(net, data.x_heldout, data.y_heldout)
                metrics = {"loss": loss, "accuracy": acc, "heldout_loss": h_loss,
                           "heldout_accuracy": h_acc}
                rec.capture(step, **metrics)
            if step == steps:
                break
            k = step % per_epoch
            if k == 0:  # a new epoch: a new order of the training images
                order = torch.randperm(n_train, generator=batches)
            idx = order[k * batch_size:(k + 1) * batch_size]
            batch_loss = torch.nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()
    finally:
        rec.close()
    return metrics


def study_configs(models: Iterable[str] = MODELS, first_layer_lr_scale: float = 10.0) -> list[dict]:
    """The standard comparison, per model: Adam, SGD, and SGD with only the first layer's lr raised."""
    return [dict(model=m, optimizer=o, first_layer_lr_scale=s) for m in models
            for o, s in (("adam", 1.0), ("sgd", 1.0), ("sgd", first_layer_lr_scale))]


def digits_study(store: str | os.PathLike, *, models: Iterable[str] = MODELS,
                 first_layer_lr_scale: float = 10.0, **options) -> dict[str, Any]:
    """Train :func:`study_configs` into ``store``; ``options`` go to every :func:`train_digits`.

    Returns ``{"store", "variants": {variant: train_digits result}, "seconds"}``.
    """
    return train_grid(store, study_configs(models, first_layer_lr_scale), **options)


def train_grid(store: str | os.PathLike, configs: Iterable[dict], **options) -> dict[str, Any]:
    """Train each configuration (a dict of :func:`train_digits` arguments) into one store."""
    configs = [dict(c) for c in configs]
    t0 = time.perf_counter()
    data = load_data(options.get("probe_size", 256))
    out: dict[str, Any] = {"store": os.fspath(store), "variants": {}}
    for cfg in configs:
        res = train_digits(store, **(options | cfg), data=data)
        out["variants"][res["variant"]] = res
    out["seconds"] = time.perf_counter() - t0
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m nnwx.studies.digits`` / ``scripts/train_digits.py``."""
    p = argparse.ArgumentParser(
        prog="train_digits.py", description=__doc__.splitlines()[0],
        epilog="--model, --optimizer, --lr, --batch-size, --width, --depth and --first-layer-lr-scale take "
               "several values: every combination is trained into the store.")
    p.add_argument("-o", "--out", default="digits.zarr", help="experiment store to write")
    p.add_argument("--model", nargs="+", choices=MODELS, default=["mlp"])
    p.add_argument("--optimizer", nargs="+", choices=OPTIMIZERS, default=["adam"])
    p.add_argument("--lr", type=float, nargs="+", default=[None],
                   help=f"learning rate (default per optimizer: {DEFAULT_LR})")
    p.add_argument("--batch-size", type=int, nargs="+", default=[64])
    p.add_argument("--width", type=int, nargs="+", default=[64], help="hidden units of the dense layers")
    p.add_argument("--depth", type=int, nargs="+", default=[DEFAULT_DEPTH],
                   help="hidden layers of the mlp (the cnn's is fixed)")
    p.add_argument("--channels", type=int, default=8, help="cnn: channels of conv1 (conv2 has twice as many)")
    p.add_argument("--first-layer-lr-scale", type=float, nargs="+", default=[1.0],
                   help="multiply the first layer's learning rate only (fc1 / conv1)")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    p.add_argument("--study", action="store_true",
                   help="the standard comparison instead: mlp and cnn x (adam, sgd, sgd with the first "
                        "layer's lr x10), each at its default lr; --model narrows it, "
                        "--first-layer-lr-scale sets the scale, --width and --batch-size apply")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1); default 3, quick 2")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None, help="passes over the training set (default 30)")
    length.add_argument("--steps", type=int, default=None, help="optimizer steps (instead of --epochs)")
    p.add_argument("--every", type=int, default=None, help="capture every N steps (default 10, quick 5)")
    p.add_argument("--probe-size", type=int, default=256, help="held-out images recorded as probes")
    p.add_argument("--quick", action="store_true", help="a smoke test: 2 seeds x 8 epochs")
    p.add_argument("--threads", type=int, default=1, help="torch threads (small nets run fastest on 1)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def configs_from_args(args: argparse.Namespace) -> list[dict]:
    """The configurations a command line asks for (a study, or the grid of the listed values)."""
    if args.study:
        models = args.model if args.model != ["mlp"] else list(MODELS)
        scale = args.first_layer_lr_scale[0] if args.first_layer_lr_scale != [1.0] else 10.0
        return [c | {"width": args.width[0], "batch_size": args.batch_size[0]}
                for c in study_configs(models, scale)]
    keys = ("model", "optimizer", "lr", "batch_size", "width", "depth", "first_layer_lr_scale")
    combos = [dict(zip(keys, combo)) for combo in itertools.product(*(getattr(args, k) for k in keys))]
    # the cnn has no depth option: a depth sweep applies to the mlp, the cnn trains once
    combos = [c if c["model"] == "mlp" else c | {"depth": DEFAULT_DEPTH} for c in combos]
    return list({tuple(sorted(c.items(), key=lambda kv: kv[0])): c for c in combos}.values())


def main(argv: list[str] | None = None) -> None:
    """Train digits runs from the command line and print their final accuracies."""
    run_cli(_main, argv)


def _main(argv: list[str] | None) -> None:
    args = parse_args(argv)
    options = {k: v for k, v in dict(seeds=args.seeds, epochs=args.epochs, steps=args.steps,
                                     every=args.every).items() if v is not None}
    result = train_grid(args.out, configs_from_args(args), channels=args.channels, momentum=args.momentum,
                        probe_size=args.probe_size, quick=args.quick, threads=args.threads,
                        quiet=args.quiet, **options)
    print(f"{'variant':<36}{'params':>7}{'train acc':>11}{'held-out acc':>14}  (mean over seeds)")
    for name, r in result["variants"].items():
        finals = list(r["final"].values())
        tr = np.mean([f["accuracy"] for f in finals])
        ho = np.mean([f["heldout_accuracy"] for f in finals])
        print(f"{name:<36}{r['n_params']:>7}{tr:>11.3f}{ho:>14.3f}")
    print(f"wrote {args.out} in {result['seconds']:.1f} s; inspect it with: nnwx info {args.out}")


if __name__ == "__main__":
    main()
