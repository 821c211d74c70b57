"""The paper's Fig. 10 "neural streams": reconstruct from one filter group at a time.

CaffeNet has two filter groups (conv2, conv4, conv5 see only their own half of the channels);
trained, one group turns out colour-blind and the other colour-tuned. A network without groups
has no such streams: ``stream_settings`` then offers the two halves of the channels and, beyond
the paper, a split of the first convolution's filters by their measured colour selectivity.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from ..engine.objective import Setting
from ..errors import SettingsError


def first_convolution(rep) -> nn.Conv2d:
    for m in rep.body.modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            return m
    raise SettingsError(f"{rep.model} {rep.layer} has no convolution on the RGB input, so there are no conv1 "
                        f"filters to split by colour; use colour=False")


def colour_selectivity(conv: nn.Conv2d) -> np.ndarray:
    """Per output filter, the share of its energy that is chromatic: ‖w − mean over RGB of w‖²
    / ‖w‖² (0 for a filter that weights R, G and B alike, 2/3 for a single-channel one, up to 1
    for a colour-opponent one)."""
    w = conv.weight.detach().double()
    chroma = w - w.mean(1, keepdim=True)
    return (chroma.pow(2).sum((1, 2, 3)) / w.pow(2).sum((1, 2, 3)).clamp_min(1e-30)).numpy()


def colour_split(conv: nn.Conv2d) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(the less colour-selective half of the filters, the more colour-selective half)."""
    order = np.argsort(colour_selectivity(conv), kind="stable")
    half = len(order) // 2
    return tuple(sorted(order[:half].tolist())), tuple(sorted(order[half:].tolist()))


def stream_settings(rep, lambda_tv: float, colour: bool) -> list[tuple[str, Setting]]:
    """Labelled settings for one layer: its two filter groups (CaffeNet) or channel halves, and
    with ``colour`` (only where the layer's channels are the first convolution's own) the
    colour-blind and colour-tuned halves of those filters."""
    name = "filter group" if rep.model == "caffenet" else "channel half"
    out = [(f"{name} {g}", Setting(lambda_tv=lambda_tv, group=g)) for g in (1, 2)]
    if colour:
        grey, tuned = colour_split(first_convolution(rep))
        out += [("colour-blind half of conv1's filters", Setting(lambda_tv=lambda_tv, channels=grey)),
                ("colour-tuned half of conv1's filters", Setting(lambda_tv=lambda_tv, channels=tuned))]
    return out


def shares_first_convolution_channels(rep) -> bool:
    """Whether ``rep``'s layer still has the first convolution's channels, one to one (pointwise
    layers, pooling and LRN after it, before the next convolution)."""
    convs = [m for m in rep.body.modules() if isinstance(m, nn.Conv2d)]
    return len(convs) == 1 and convs[0].out_channels == rep.info.channels
