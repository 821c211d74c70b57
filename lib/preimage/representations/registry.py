"""Representations by name."""
from __future__ import annotations

import warnings

from ..errors import unknown
from ..weights import checkpoint_dir
from . import alexnet
from .base import LayerInfo, Representation

_MODELS = {"alexnet": alexnet}


def models() -> list[str]:
    return sorted(_MODELS)


def _module(model: str):
    if model not in _MODELS:
        raise unknown("model", model, models())
    return _MODELS[model]


def layers(model: str) -> list[LayerInfo]:
    """Every layer of ``model`` with its channels and receptive field."""
    return _module(model).LAYERS


def get(model: str, layer: str, weights: str = "imagenet", seed: int = 0) -> Representation:
    """``model`` truncated at ``layer``; ``weights`` is 'imagenet', 'random', a file path, or
    'auto': the ImageNet weights when they are in the cache, else random ones with a warning
    (the result's label then says untrained)."""
    module = _module(model)
    if weights == "auto":
        weights = "imagenet" if (checkpoint_dir() / module.IMAGENET.filename).is_file() else "random"
        if weights == "random":
            warnings.warn(f"the ImageNet weights of {model} are not in {checkpoint_dir()}: using RANDOM "
                          f"(untrained) weights; see the README to get the trained ones", stacklevel=2)
    return module.build(layer, weights=weights, seed=seed)
