"""torchvision's AlexNet (the "one weird trick" variant) under the paper's layer names.

It differs from the paper's CNN-A (CaffeNet): 64/192/384/256/256 channels, no LRN and hence no
norm1/norm2, no grouped convolutions, and an adaptive 6x6 average pool before fc6. Inputs are
mean-subtracted pixels (0..255); the division by torchvision's std happens inside the module.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import AlexNet_Weights, alexnet

from .base import Representation, find_layer, layer_table
from .receptive_field import POINTWISE, Geometry
from .weights import Weights, apply

# input_size is the paper's; torchvision trained at 224, and pool5 is 6x6 for both
IMAGENET = Weights.from_url(AlexNet_Weights.IMAGENET1K_V1.url, input_size=227)

# (paper name, channels, geometry, spatial, where in torchvision's AlexNet)
_LAYERS = [
    ("conv1", 64, Geometry(11, 4, 2), True, ("features", 0)),
    ("relu1", 64, POINTWISE, True, ("features", 1)),
    ("pool1", 64, Geometry(3, 2), True, ("features", 2)),
    ("conv2", 192, Geometry(5, 1, 2), True, ("features", 3)),
    ("relu2", 192, POINTWISE, True, ("features", 4)),
    ("pool2", 192, Geometry(3, 2), True, ("features", 5)),
    ("conv3", 384, Geometry(3, 1, 1), True, ("features", 6)),
    ("relu3", 384, POINTWISE, True, ("features", 7)),
    ("conv4", 256, Geometry(3, 1, 1), True, ("features", 8)),
    ("relu4", 256, POINTWISE, True, ("features", 9)),
    ("conv5", 256, Geometry(3, 1, 1), True, ("features", 10)),
    ("relu5", 256, POINTWISE, True, ("features", 11)),
    ("pool5", 256, Geometry(3, 2), True, ("features", 12)),
    ("fc6", 4096, Geometry(6), False, ("classifier", 1)),
    ("relu6", 4096, POINTWISE, False, ("classifier", 2)),
    ("fc7", 4096, POINTWISE, False, ("classifier", 4)),
    ("relu7", 4096, POINTWISE, False, ("classifier", 5)),
    ("fc8", 1000, POINTWISE, False, ("classifier", 6)),
]
LAYERS = layer_table([spec[:4] for spec in _LAYERS])
ABSENT = {n: "torchvision's AlexNet has no local response normalisation (the paper's CaffeNet "
             "has; use --model caffenet)" for n in ("norm1", "norm2")}


class Normalise(nn.Module):
    """Mean-subtracted pixels (0..255) to torchvision's input scale."""

    def __init__(self, std):
        super().__init__()
        self.register_buffer("scale", 1 / (255 * torch.tensor(std).view(1, -1, 1, 1)), persistent=False)

    def forward(self, x):
        return x * self.scale


def truncated(net: nn.Module, layer_index: int) -> nn.Sequential:
    """The modules of ``net`` up to and including layer ``layer_index``, nothing after it."""
    part, index = _LAYERS[layer_index][4]
    if part == "features":
        return nn.Sequential(Normalise(IMAGENET.std), net.features[:index + 1])
    return nn.Sequential(Normalise(IMAGENET.std), net.features, net.avgpool, nn.Flatten(1),
                         net.classifier[:index + 1])


def build(layer: str, weights: str = "imagenet", seed: int = 0) -> Representation:
    """AlexNet truncated at ``layer`` with ``weights`` 'imagenet', 'random' or a state_dict path."""
    index = find_layer(LAYERS, layer, "alexnet", ABSENT)
    net = alexnet(weights=None)
    label, trained = apply(net, weights, IMAGENET, seed)
    return Representation(truncated(net, index), model="alexnet", layer=layer, layers=LAYERS,
                          weights=label, trained=trained, mean=IMAGENET.mean, input_size=IMAGENET.input_size)
