"""Representations by name."""
from __future__ import annotations

from ..errors import unknown
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
    """``model`` truncated at ``layer``; ``weights`` is 'imagenet', 'random' or a file path."""
    return _module(model).build(layer, weights=weights, seed=seed)
