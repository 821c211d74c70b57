"""Representations by name."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

from ..errors import SettingsError, UnknownNameError, unknown
from ..weights import WeightsFile, checkpoint_dir
from . import alexnet, dsift, hog
from .base import LayerInfo, Representation


@dataclass(frozen=True)
class Model:
    layers: list[LayerInfo]
    build: Callable[..., Representation]
    imagenet: WeightsFile | None = None  # None: hand-designed, nothing to load
    default_layer: str | None = None  # None: the layer must be named


_MODELS = {
    "alexnet": Model(alexnet.LAYERS, alexnet.build, alexnet.IMAGENET),
    "hog": Model(hog.HOG_LAYERS, hog.build_hog, default_layer="hog"),
    "hogb": Model(hog.HOGB_LAYERS, hog.build_hogb, default_layer="hogb"),
    "dsift": Model(dsift.LAYERS, dsift.build, default_layer="dsift5"),
}


def models() -> list[str]:
    return sorted(_MODELS)


def _model(model: str) -> Model:
    if model not in _MODELS:
        raise unknown("model", model, models())
    return _MODELS[model]


def layers(model: str) -> list[LayerInfo]:
    """Every layer of ``model`` with its channels and receptive field."""
    return _model(model).layers


def get(model: str, layer: str | None = None, weights: str | None = None, seed: int = 0) -> Representation:
    """``model`` truncated at ``layer``.

    ``weights`` (networks only): 'imagenet' (the default), 'random', a state_dict path, or
    'auto': the ImageNet weights when they are in the cache, else random ones with a warning
    (the representation's label then says untrained). Hand-designed representations (HOG,
    DSIFT) take no weights."""
    m = _model(model)
    if layer is None:
        if m.default_layer is None:
            raise UnknownNameError(f"{model} needs a layer; valid layers: {', '.join(l.name for l in m.layers)}")
        layer = m.default_layer
    if m.imagenet is None:
        if weights not in (None, "none", "auto"):
            raise SettingsError(f"{model} is hand-designed and has no weights; drop --weights {weights}")
        return m.build(layer)
    weights = weights or "imagenet"
    if weights == "auto":
        weights = "imagenet" if (checkpoint_dir() / m.imagenet.filename).is_file() else "random"
        if weights == "random":
            warnings.warn(f"the ImageNet weights of {model} are not in {checkpoint_dir()}: using RANDOM "
                          f"(untrained) weights; see the README to get the trained ones", stacklevel=2)
    return m.build(layer, weights=weights, seed=seed)
