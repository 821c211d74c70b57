"""Receptive-field geometry: hand-checked chains, AlexNet's table against the paper's CaffeNet
values (method.md §4), and an empirical check through the network's own gradients."""
from __future__ import annotations

import pytest
import torch

from preimage import representations
from preimage.representations.receptive_field import Geometry, ReceptiveField, receptive_fields


def test_single_layers():
    assert receptive_fields([Geometry()]) == [ReceptiveField(1, 1, 0.0)]
    # 11x11 conv, stride 4, padding 2: unit 0 covers input pixels -2..8, centred at 3.
    assert receptive_fields([Geometry(11, 4, 2)]) == [ReceptiveField(11, 4, 3.0)]
    # 2x2 pool, stride 2: unit 0 covers pixels 0 and 1, centred at 0.5.
    assert receptive_fields([Geometry(2, 2)]) == [ReceptiveField(2, 2, 0.5)]


def test_hand_checked_chains():
    # Two 3x3 'same' convolutions: 3 then 5 pixels, stride 1, centred on the pixel itself.
    assert receptive_fields([Geometry(3, 1, 1), Geometry(3, 1, 1)]) == [
        ReceptiveField(3, 1, 0.0), ReceptiveField(5, 1, 0.0)]
    # Three 2x2/2 pools: unit 0 covers 0..1, 0..3, 0..7.
    assert receptive_fields([Geometry(2, 2)] * 3) == [
        ReceptiveField(2, 2, 0.5), ReceptiveField(4, 4, 1.5), ReceptiveField(8, 8, 3.5)]
    # conv 5/2 (no pad) then conv 3/1 (no pad): unit 0 of the second layer sees units 0..2 of
    # the first, i.e. pixels 0..(4 + 2·2) = 0..8: size 9, centre 4, stride 2.
    # A pointwise layer in between changes nothing.
    assert receptive_fields([Geometry(5, 2), Geometry(), Geometry(3, 1)]) == [
        ReceptiveField(5, 2, 2.0), ReceptiveField(5, 2, 2.0), ReceptiveField(9, 2, 4.0)]
    # Padding shifts the centre by padding · (stride so far).
    assert receptive_fields([Geometry(3, 2, 0), Geometry(3, 1, 1)])[-1] == ReceptiveField(7, 2, 1.0)


def test_box():
    rf = ReceptiveField(11, 4, 3.0)
    assert rf.box(0) == (-2.0, 9.0)  # [start, end): pixels -2..8
    assert rf.box(2) == (6.0, 17.0)
    even = ReceptiveField(2, 2, 0.5)
    assert even.box(0) == (0.0, 2.0) and even.box(3) == (6.0, 8.0)
    for rf in (ReceptiveField(19, 8, 7.0), ReceptiveField(8, 8, 3.5)):
        for k in range(4):
            lo, hi = rf.box(k)
            assert hi - lo == rf.size
            assert (lo + hi - 1) / 2 == rf.offset + k * rf.stride


ALEXNET_NAMES = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "conv4",
                 "relu4", "conv5", "relu5", "pool5", "fc6", "relu6", "fc7", "relu7", "fc8"]


def test_alexnet_layer_table_matches_caffenet_receptive_fields():
    layers = representations.layers("alexnet")
    assert [l.name for l in layers] == ALEXNET_NAMES
    rf = {l.name: l.receptive_field for l in layers}
    # method.md §4 (the paper's CaffeNet table, same layer names; norm1/norm2 do not exist here).
    expected_size = dict(conv1=11, relu1=11, pool1=19, conv2=51, relu2=51, pool2=67, conv3=99,
                         relu3=99, conv4=131, relu4=131, conv5=163, relu5=163, pool5=195, fc6=355)
    assert {n: rf[n].size for n in expected_size} == expected_size
    assert all(rf[n].size == 355 for n in ("relu6", "fc7", "relu7", "fc8"))
    expected_stride = dict(conv1=4, relu1=4, pool1=8, conv2=8, relu2=8, pool2=16, conv3=16, relu3=16,
                           conv4=16, relu4=16, conv5=16, relu5=16, pool5=32, fc6=32)
    assert {n: rf[n].stride for n in expected_stride} == expected_stride
    channels = {l.name: l.channels for l in layers}
    assert [channels[n] for n in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc8")] == \
        [64, 192, 384, 256, 256, 4096, 1000]
    assert [l.spatial for l in layers] == [True] * 13 + [False] * 5


def _support(rep, size, unit, samples=8, seed=0):
    """Boolean (H, W) of input pixels with a non-zero gradient on output unit (i, j), summed over
    channels, over a few random inputs (so ReLU and max-pool paths are all exercised)."""
    g = torch.Generator().manual_seed(seed)
    x = (60 * torch.randn(samples, 3, size, size, generator=g)).requires_grad_(True)
    out = rep(x)
    i, j = unit
    out[:, :, i, j].sum().backward()
    return (x.grad != 0).any(0).any(0), out.shape


def _box_mask(rep, size, unit):
    rf = rep.receptive_field
    (r0, r1), (c0, c1) = rf.box(unit[0]), rf.box(unit[1])
    assert 0 <= r0 and r1 <= size and 0 <= c0 and c1 <= size, "pick a unit whose field is inside the image"
    m = torch.zeros(size, size, dtype=torch.bool)
    m[int(r0):int(r1), int(c0):int(c1)] = True
    return m


@pytest.mark.parametrize("layer,size,unit", [
    ("conv1", 63, (7, 7)),
    ("relu1", 63, (7, 6)),
    ("pool1", 63, (3, 3)),
    ("conv2", 99, (5, 5)),
    ("pool2", 115, (3, 3)),
])
def test_alexnet_gradient_support_equals_field_box(layer, size, unit):
    rep = representations.get("alexnet", layer, weights="random", seed=1)
    support, shape = _support(rep, size, unit)
    assert unit[0] < shape[2] and unit[1] < shape[3]
    box = _box_mask(rep, size, unit)
    assert int(box.sum()) == rep.receptive_field.size ** 2
    assert torch.equal(support, box), (
        f"gradient support rows {support.any(1).nonzero().flatten()[[0, -1]].tolist()}, "
        f"box rows {box.any(1).nonzero().flatten()[[0, -1]].tolist()}")


def test_linear_conv_gradient_support_equals_field_box(linear_rep):
    rep = linear_rep()
    assert rep.receptive_field == ReceptiveField(5, 2, 2.0)
    for unit in [(0, 0), (6, 6), (3, 10), (14, 14)]:
        support, _ = _support(rep, 33, unit, samples=1)
        assert torch.equal(support, _box_mask(rep, 33, unit))


def test_central_box_of_fig9():
    from preimage.representations import caffenet
    from preimage.representations.receptive_field import central_box

    conv1 = caffenet.LAYERS[0].receptive_field  # 11 px, stride 4, first unit centred on pixel 5
    assert central_box(conv1, (55, 55), 5) == (25 * 4, 25 * 4, 29 * 4 + 11, 29 * 4 + 11)  # units 25..29
    pool5 = caffenet.LAYERS[14].receptive_field
    top, left, bottom, right = central_box(pool5, (6, 6), 5)
    assert bottom - top == 195 + 4 * 32 and (top + bottom) / 2 == pool5.offset + 2 * 32 + 0.5  # units 0..4 of 6; [start, end) of pixel centres
