"""Representations by name."""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Callable

from ..engine.optimise import check_seed
from ..errors import SettingsError, UnknownNameError, WeightsError, unknown
from . import alexnet, caffenet, dsift, efficientnet, generic, hog
from .base import LayerInfo, Representation
from .weights import Weights, checkpoint_dir, fetch


@dataclass(frozen=True)
class Model:
    table: Callable[[], list[LayerInfo]]  # the layers, computed when first asked for
    build: Callable[..., Representation]
    imagenet: Weights | None = None  # the published weights file, where there is one
    default_layer: str | None = None  # None: the layer must be named
    hand_designed: bool = False  # HOG, DSIFT: nothing to load


_MODELS = {
    "alexnet": Model(lambda: alexnet.LAYERS, alexnet.build, alexnet.IMAGENET),
    "caffenet": Model(lambda: caffenet.LAYERS, caffenet.build, caffenet.CAFFEMODEL),
    "efficientnet_lite0": Model(efficientnet.layers, efficientnet.build, efficientnet.IMAGENET),
    "hog": Model(lambda: hog.HOG_LAYERS, hog.build_hog, default_layer="hog", hand_designed=True),
    "hogb": Model(lambda: hog.HOGB_LAYERS, hog.build_hogb, default_layer="hogb", hand_designed=True),
    "dsift": Model(lambda: dsift.LAYERS, dsift.build, default_layer="dsift5", hand_designed=True),
}


def models() -> list[str]:
    return sorted(_MODELS)


def resolve_auto() -> tuple[str, str]:
    """(model, weights) that ``auto`` stands for: AlexNet with ImageNet weights when they are
    cached or can be downloaded, else the offline trained EfficientNet-Lite0, loudly."""
    try:
        fetch(alexnet.IMAGENET)
        return "alexnet", "imagenet"
    except WeightsError as e:
        warnings.warn(f"model auto: AlexNet's ImageNet weights are not available ({str(e).split('. ')[0]}); "
                      f"using the OFFLINE trained network efficientnet_lite0 instead. Every figure and "
                      f"record names the model actually used; see the README to get AlexNet's weights",
                      stacklevel=3)
        return "efficientnet_lite0", "imagenet"


def _model(model: str) -> Model:
    if generic.is_generic(model):
        return _generic(model)
    if model not in _MODELS:
        raise unknown("model", model, models() + ["auto", "torchvision:NAME", "timm:NAME"])
    return _MODELS[model]


@functools.cache
def _generic(model: str) -> Model:
    table = generic.layers(model)  # checks the name now
    return Model(lambda: table, functools.partial(generic.build, model), generic.imagenet_weights(model))


def layers(model: str) -> list[LayerInfo]:
    """Every layer of ``model`` with its channels and receptive field."""
    return _model(model).table()


def categories(model: str) -> list[str]:
    """The names of ``model``'s output units where its published weights name them (ImageNet's
    1000 classes), else an empty list."""
    spec = _model(model).imagenet
    return spec.category_names() if spec is not None else []


def layer_table(model: str) -> str:
    """``model``'s layers as a text table: channels, and the receptive field's size, stride and
    offset in pixels (what ``python -m preimage layers`` prints); for a model with token
    sequences, their grids too (1+14x14: a class token and 14x14 patch tokens)."""
    table = layers(model)
    width = max([8] + [len(info.name) for info in table])
    grids = any(info.tokens for info in table)
    lines = [f"{'layer':{width}} {'channels':>8} {'field':>6} {'stride':>6} {'offset':>7}" + "  tokens" * grids]
    for info in table:
        rf = info.receptive_field
        line = f"{info.name:{width}} {info.channels:8d} {rf.size:6d} {rf.stride:6d} {rf.offset:7.1f}"
        lines.append(line + f"  {_grid(info.tokens)}" * grids)
    return "\n".join(lines)


def _grid(tokens: tuple[int, int, int] | None) -> str:
    if tokens is None:
        return "-"
    prefix, h, w = tokens
    return f"{prefix}+{h}x{w}" if prefix else f"{h}x{w}"


def get(model: str, layer: str | None = None, weights: str | None = None, seed: int = 0) -> Representation:
    """``model`` truncated at ``layer``. ``model`` 'auto' is AlexNet with ImageNet weights where
    they can be had, else EfficientNet-Lite0 (see ``resolve_auto``).

    ``weights`` (networks only): 'imagenet' (the default), 'random', a state_dict path, or
    'auto': the ImageNet weights when they are in the cache, else random ones with a warning
    (the representation's label then says untrained). Hand-designed representations (HOG,
    DSIFT) take no weights."""
    check_seed(seed)
    if model == "auto":
        model, weights = resolve_auto()
    m = _model(model)
    if layer is None:
        if m.default_layer is None:
            raise UnknownNameError(f"{model} needs a layer; valid layers: {', '.join(l.name for l in m.table())}")
        layer = m.default_layer
    if m.hand_designed:
        if weights not in (None, "none", "auto"):
            raise SettingsError(f"{model} is hand-designed and has no weights; drop --weights {weights}")
        return m.build(layer)
    weights = weights or "imagenet"
    if weights != "auto":
        return m.build(layer, weights=weights, seed=seed)
    downloaded = m.imagenet is not None and m.imagenet.downloadable  # not packaged
    if downloaded and not (checkpoint_dir() / m.imagenet.filename).is_file():
        reason = f"are not in {checkpoint_dir()}"
    else:
        try:
            return m.build(layer, weights="imagenet", seed=seed)
        except WeightsError as e:
            reason = f"cannot be loaded ({str(e).split('. ')[0]})"
    warnings.warn(f"the ImageNet weights of {model} {reason}: using RANDOM (untrained) weights; see the "
                  f"README to get the trained ones", stacklevel=2)
    return m.build(layer, weights="random", seed=seed)
