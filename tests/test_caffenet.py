"""CaffeNet (CNN-A): structure, receptive fields of §4, and both weight files converted and
checked against an independent forward pass written in Caffe's own conventions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_file_writers import write_caffemodel, write_matconvnet

from preimage import representations
from preimage.errors import UnknownNameError, WeightsError
from preimage.representations import caffenet, weights
from preimage.representations.formats.caffemodel import CaffeLayer
from preimage.representations.formats.matconvnet import MatConvNetLayer, MatConvNetModel

SMALL = (8, 12, 10, 14, 6, 20, 16, 10)  # conv1..fc8 widths of a small network of the same shape
PAPER_FIELDS = [11, 11, 19, 19, 51, 51, 67, 67, 99, 99, 131, 131, 163, 163, 195, 355, 355, 355, 355, 355]


def test_layers_and_receptive_fields_are_the_papers():
    assert [l.name for l in caffenet.LAYERS] == [
        "conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2", "conv3", "relu3",
        "conv4", "relu4", "conv5", "relu5", "pool5", "fc6", "relu6", "fc7", "relu7", "fc8"]
    assert [l.receptive_field.size for l in caffenet.LAYERS] == PAPER_FIELDS
    assert [l.channels for l in caffenet.LAYERS][::4] == [96, 256, 384, 256, 4096]
    net = caffenet.network()
    assert [net.conv2.groups, net.conv3.groups, net.conv4.groups, net.conv5.groups] == [2, 1, 2, 2]
    assert sum(p.numel() for p in net.parameters()) == 60_965_224  # the reference CaffeNet's count


def test_receptive_field_matches_the_gradient_support():
    """Gradient of pool2's centre unit covers exactly the computed 67-pixel field (positive
    weights, so ReLUs pass everything; max pooling swapped for average pooling of the same
    geometry, so gradients reach every input of a window)."""
    torch.manual_seed(0)
    net = caffenet.network(SMALL).double()[:7]
    for name in ("pool1", "pool2"):
        setattr(net, name, torch.nn.AvgPool2d(3, 2, ceil_mode=True))
    for p in net.parameters():
        p.data.abs_()
    x = torch.ones(1, 3, 131, 131, dtype=torch.float64, requires_grad=True)
    y = net(x)
    i = y.shape[-1] // 2
    y[0, :, i, i].sum().backward()
    rows = torch.nonzero(x.grad[0].abs().sum((0, 2)))
    rf = caffenet.LAYERS[6].receptive_field
    lo, hi = rf.box(i)
    assert (rows.min().item(), rows.max().item() + 1) == (lo, hi) and hi - lo == 67


def _random_blobs(widths, seed=0):
    """Caffe-layout parameters: conv weights (out, in/groups, k, k) for BGR input, fc weights 2-D."""
    g = np.random.default_rng(seed)
    shapes = {name: tuple(t.shape) for name, t in caffenet.network(widths).state_dict().items()}
    blobs = {}
    for name in caffenet.PARAMETRISED:
        w = shapes[f"{name}.weight"]
        if name.startswith("fc"):
            w = (w[0], int(np.prod(w[1:])))
        fan_in = int(np.prod(w[1:]))
        blobs[name] = (g.normal(0, 1 / math.sqrt(fan_in), w).astype(np.float32),
                       g.normal(0, 0.1, w[0]).astype(np.float32))
    return blobs


def _caffe_forward(blobs, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
    """CaffeNet in Caffe's conventions, op by op: BGR input, groups as separate convolutions,
    LRN written out, ceil-mode pooling with clipped windows, fc as a matrix product."""
    def conv(x, name, stride=1, pad=0, groups=1):
        w, b = (torch.from_numpy(a).double() for a in blobs[name])
        parts = zip(x.chunk(groups, 1), w.chunk(groups, 0), b.chunk(groups))
        return torch.cat([F.conv2d(xi, wi, bi, stride, pad) for xi, wi, bi in parts], 1)

    def lrn(x, n=5, alpha=1e-4, beta=0.75):
        c = x.shape[1]
        return torch.stack([x[:, i] / (1 + alpha / n * (x[:, max(0, i - 2):min(c, i + 3)] ** 2).sum(1)) ** beta
                            for i in range(c)], 1)

    def pool(x):
        h, w = x.shape[-2:]
        oh, ow = math.ceil((h - 3) / 2) + 1, math.ceil((w - 3) / 2) + 1
        return torch.stack([torch.stack([x[..., 2 * i:2 * i + 3, 2 * j:2 * j + 3].amax((-2, -1))
                                         for j in range(ow)], -1) for i in range(oh)], -2)

    def fc(x, name):
        w, b = (torch.from_numpy(a).double() for a in blobs[name])
        return x.flatten(1) @ w.T + b

    out = {}
    x = rgb.double().flip(1)
    out["conv1"] = x = conv(x, "conv1", stride=4)
    out["pool1"] = x = pool(torch.relu(x))
    out["norm1"] = x = lrn(x)
    out["conv2"] = x = conv(x, "conv2", pad=2, groups=2)
    out["norm2"] = x = lrn(pool(torch.relu(x)))
    out["conv3"] = x = conv(x, "conv3", pad=1)
    out["conv4"] = x = conv(torch.relu(x), "conv4", pad=1, groups=2)
    out["conv5"] = x = conv(torch.relu(x), "conv5", pad=1, groups=2)
    out["pool5"] = x = pool(torch.relu(x))
    out["fc6"] = x = fc(x, "fc6")
    out["fc7"] = x = fc(torch.relu(x), "fc7")
    out["fc8"] = fc(torch.relu(x), "fc8")
    return out


def _caffemodel(path, blobs, v1=True):
    layers = [CaffeLayer("data", "Data", [])]
    for name in caffenet.PARAMETRISED:
        layers.append(CaffeLayer(name, "InnerProduct" if name.startswith("fc") else "Convolution",
                                 list(blobs[name])))
        layers.append(CaffeLayer(name.replace("conv", "relu").replace("fc", "relu"), "ReLU", []))
    write_caffemodel(path, "CaffeNet", layers, v1=v1, legacy_shape=v1)
    return path


def _matconvnet(path, state, style="new", names=True):
    """The layout MatConvNet's importer writes: H x W x C_in x C_out filters for RGB input."""
    layers = []
    for i, name in enumerate(caffenet.PARAMETRISED):
        w = state[f"{name}.weight"].numpy().transpose(2, 3, 1, 0)
        layers.append(MatConvNetLayer(name if names else "", "conv", [w, state[f"{name}.bias"].numpy()],
                                      {"stride": 4 if i == 0 else 1}))
        layers.append(MatConvNetLayer(f"relu{i + 1}" if names else "", "relu", [], {}))
    average = np.broadcast_to(np.array(caffenet.MEAN, np.float32), (227, 227, 3)).copy()
    write_matconvnet(path, MatConvNetModel(layers, average, (227, 227, 3)), style=style)
    return path


@pytest.mark.parametrize("v1", [True, False], ids=["V1LayerParameter", "LayerParameter"])
def test_caffemodel_converts_to_the_caffe_forward_pass(tmp_path, v1):
    blobs = _random_blobs(SMALL)
    state = caffenet.state_dict_from_file(_caffemodel(tmp_path / "small.caffemodel", blobs, v1), SMALL)
    net = caffenet.network(SMALL).double()
    net.load_state_dict(state)
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(1)) * 60
    ref = _caffe_forward(blobs, x)
    names = [l.name for l in caffenet.LAYERS]
    for layer, expected in ref.items():
        got = net[:names.index(layer) + 1](x.double()).flatten(1)
        err = (got - expected.flatten(1)).norm() / expected.norm()
        assert err < 1e-10, (layer, err)


@pytest.mark.parametrize("style", ["new", "old"])
def test_matconvnet_file_gives_the_same_weights(tmp_path, style):
    blobs = _random_blobs(SMALL, seed=3)
    from_caffe = caffenet.state_dict_from_file(_caffemodel(tmp_path / "a.caffemodel", blobs), SMALL)
    from_mat = caffenet.state_dict_from_file(_matconvnet(tmp_path / "a.mat", from_caffe, style), SMALL)
    assert list(from_mat) == list(from_caffe)
    for key in from_caffe:
        assert torch.equal(from_mat[key], from_caffe[key]), key


def test_unnamed_matconvnet_layers_are_taken_in_order(tmp_path):
    state = caffenet.network(SMALL).state_dict()
    got = caffenet.state_dict_from_file(_matconvnet(tmp_path / "n.mat", state, names=False), SMALL)
    assert all(torch.equal(got[k], state[k]) for k in state)


def test_full_size_caffemodel_through_get_and_the_cache(tmp_path, monkeypatch):
    """The real sizes end to end: a random full CaffeNet written as a .caffemodel, loaded with
    --weights PATH (converted once, then read from the cache), against the Caffe forward pass."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    blobs = _random_blobs(caffenet.WIDTHS, seed=5)
    path = _caffemodel(tmp_path / "bvlc_reference_caffenet.caffemodel", blobs)
    rep = representations.get("caffenet", "fc8", weights=str(path))
    cached = list(weights.checkpoint_dir().glob("caffenet-from-bvlc_reference_caffenet-*.pth"))
    assert len(cached) == 1 and rep.trained and "bvlc_reference_caffenet.caffemodel" in rep.weights
    x = torch.randn(1, 3, 227, 227, generator=torch.Generator().manual_seed(2)) * 60
    expected = _caffe_forward(blobs, x)
    with torch.no_grad():
        got = rep(x).flatten(1).double()
    assert ((got - expected["fc8"]).norm() / expected["fc8"].norm()) < 1e-4
    stamp = cached[0].stat().st_mtime_ns
    representations.get("caffenet", "conv1", weights=str(path))
    assert cached[0].stat().st_mtime_ns == stamp

    # 'imagenet' finds the cached reference file by name; its SHA-1 is not the published one.
    (weights.checkpoint_dir() / path.name).write_bytes(path.read_bytes())
    with pytest.raises(WeightsError, match="sha1 .*expected a hash starting 4c8d77deb20e"):
        representations.get("caffenet", "conv1", weights="imagenet")


def test_wrong_files_say_what_is_wrong(tmp_path, monkeypatch):
    blobs = _random_blobs(SMALL)
    bad = dict(blobs, conv2=(blobs["conv2"][0][:, :3], blobs["conv2"][1]))
    with pytest.raises(WeightsError, match="conv2"):
        caffenet.state_dict_from_file(_caffemodel(tmp_path / "bad.caffemodel", bad), SMALL)
    write_caffemodel(tmp_path / "few.caffemodel", "x", [CaffeLayer("conv1", "Convolution", list(blobs["conv1"]))])
    with pytest.raises(WeightsError, match="1 layers with parameters"):
        caffenet.state_dict_from_file(tmp_path / "few.caffemodel", SMALL)
    (tmp_path / "junk.caffemodel").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(WeightsError, match="junk.caffemodel"):
        representations.get("caffenet", "conv1", weights=str(tmp_path / "junk.caffemodel"))


def test_offline_imagenet_weights_name_both_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as e:
        representations.get("caffenet", "pool5", weights="imagenet")
    assert caffenet.CAFFEMODEL.url in str(e.value) and caffenet.MATCONVNET.url in str(e.value)


def test_a_cached_matconvnet_file_is_used_when_the_caffemodel_is_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(caffenet, "network", lambda *_, net=caffenet.network: net(SMALL))
    state = caffenet.network().state_dict()
    weights.checkpoint_dir().mkdir(parents=True)
    _matconvnet(weights.checkpoint_dir() / "imagenet-caffe-ref.mat", state)
    rep = caffenet.build("norm2", "imagenet")
    assert rep.weights == "imagenet (imagenet-caffe-ref.mat)" and rep.trained
    assert torch.equal(rep.body.conv2.weight, state["conv2.weight"])


def test_layers_by_name_and_norm1_exists_only_here():
    rep = representations.get("caffenet", "norm1", weights="random")
    assert rep.code_shape(227, 227) == (96, 27, 27) and "untrained" in rep.label
    with pytest.raises(UnknownNameError, match="caffenet"):
        representations.get("alexnet", "norm1", weights="random")
    with pytest.raises(UnknownNameError, match="conv1, relu1, pool1, norm1"):
        representations.get("caffenet", "norm3", weights="random")
