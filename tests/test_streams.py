"""Fig. 10's streams: the colour split of first-layer filters, and the settings offered."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from preimage import representations
from preimage.engine.objective import mask
from preimage.paper import streams


def test_colour_split_separates_grey_from_colour_filters():
    conv = nn.Conv2d(3, 6, 3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        base = torch.randn(6, 1, 3, 3, generator=g)
        conv.weight.copy_(base.repeat(1, 3, 1, 1))  # identical on R, G, B: colour-blind
        conv.weight[[1, 4], 0] *= -1.0  # red against green and blue: colour-tuned
        conv.weight[2, 1:] = 0  # red only
    s = streams.colour_selectivity(conv)
    assert np.allclose(s[[0, 3, 5]], 0) and np.isclose(s[2], 2 / 3) and np.isclose(s[1], 8 / 9)
    grey, tuned = streams.colour_split(conv)
    assert grey == (0, 3, 5) and tuned == (1, 2, 4)


def test_stream_settings_name_what_they_are():
    rep = representations.get("caffenet", "norm1", weights="random")
    labels = [label for label, _ in streams.stream_settings(rep, 1.0, colour=False)]
    assert labels == ["filter group 1", "filter group 2"]
    alex = representations.get("alexnet", "pool1", weights="random")
    assert streams.shares_first_convolution_channels(alex)
    assert not streams.shares_first_convolution_channels(representations.get("alexnet", "conv2", weights="random"))
    settings = streams.stream_settings(alex, 1.0, colour=True)
    assert [label for label, _ in settings][:2] == ["channel half 1", "channel half 2"]
    masks = [mask((64, 27, 27), s)[:, 0, 0] for _, s in settings]
    assert masks[0][:32].all() and not masks[0][32:].any()
    grey, tuned = masks[2], masks[3]
    assert grey.sum() == tuned.sum() == 32 and not (grey * tuned).any()


def test_colour_split_needs_an_rgb_convolution():
    import pytest

    from preimage.errors import SettingsError

    with pytest.raises(SettingsError, match="no convolution on the RGB input"):
        streams.stream_settings(representations.get("hog"), 1.0, colour=True)
