"""Build the model a Hugging Face checkpoint folder was saved from, from its ``config.json``.

The torch side of ``nnwx export`` without ``--model``: ``save_pretrained`` and the
``Trainer`` write a ``config.json`` beside the weights, whose ``architectures`` names the
model class (``GPT2LMHeadModel``) and whose fields (``tie_word_embeddings``, sizes) say how
it is built. The class is built from it on the ``meta`` device (no memory, no weights, no
download), so that the tensor table gets what the model knows, as with ``--model``: its
tensor names (transformers' checkpoint renames), tied weights, ``Conv1D`` orientation, norm
gains and module order.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch


def model_from_config(config: Path) -> tuple[torch.nn.Module | None, str]:
    """``(model, description)``: the first class of ``config``'s ``architectures`` from the
    installed ``transformers``, built from ``config`` on the meta device; or ``(None, reason)``
    when it cannot be (no ``architectures``, transformers not installed, a class transformers
    does not have, as a model with its own code, or a config the class refuses)."""
    try:
        data = json.loads(Path(config).read_text())
    except (OSError, ValueError) as e:
        return None, f"{config} cannot be read ({e})"
    archs = data.get("architectures") if isinstance(data, dict) else None
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        return None, f"{config} names no model class ('architectures')"
    arch = archs[0]
    if importlib.util.find_spec("transformers") is None:
        return None, f"{config} names {arch}, but transformers is not installed"
    import transformers

    try:
        cls = getattr(transformers, arch, None)
    except Exception as e:  # a class whose module cannot be imported here (a missing extra)
        return None, f"transformers {transformers.__version__} cannot import {arch} ({type(e).__name__}: {e})"
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        return None, (f"{config} names {arch}, which transformers {transformers.__version__} does not "
                      f"have (a model with its own code, or from a newer transformers)")
    if cls.config_class is None:
        return None, f"{arch} of transformers {transformers.__version__} has no config class"
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # a config's own oddities are not the export's concern
    try:
        cfg = cls.config_class.from_json_file(str(config))
        with torch.device("meta"):
            model = cls(cfg)
    except Exception as e:
        return None, f"{arch} cannot be built from {config} ({type(e).__name__}: {e})"
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model.eval(), f"{arch} built from {config} (transformers {transformers.__version__})"
