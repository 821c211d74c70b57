"""CNN-A of the paper: the BVLC reference CaffeNet, exactly (the paper, §4).

Unlike torchvision's AlexNet it has 96/256/384/384/256 channels, local response normalisation
after pooling (norm1, norm2), two filter groups in conv2, conv4 and conv5 (the "two neural
streams"), Caffe's ceil-mode pooling and a 227x227 input. The fully connected layers are
convolutions (fc6 a 6x6 one), as in MatConvNet, so a code at fc6-fc8 is (C, 1, 1) at 227x227.

Input: RGB pixels (0..255) minus the ILSVRC 2012 mean colour. Caffe's own network reads BGR,
so converting a ``.caffemodel`` reverses conv1's input channels; MatConvNet's importer already
did that (and transposed x and y) when it wrote ``imagenet-caffe-ref.mat``, whose filters are
H x W x C_in x C_out in MATLAB's index order. Either file is converted once into a state_dict
cached beside it in the torch hub checkpoint folder.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path
from ..errors import WeightsError
from .base import Representation, find_layer, layer_table
from .receptive_field import POINTWISE, Geometry
from .weights import Weights, apply, checkpoint_dir, fetch, file_digest, load_state_dict

# Caffe's ilsvrc_2012_mean averaged over pixels (its BGR order reversed); MatConvNet's average
# image holds the same colour to within rounding. The network takes the pixels unscaled.
MEAN = (122.67891434, 116.66876762, 104.00698793)
CAFFEMODEL = Weights("http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel",
                     origin="bvlc_reference_caffenet.caffemodel", sha1="4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46",
                     mean=MEAN, std=None, input_size=227)
MATCONVNET = Weights("http://www.vlfeat.org/matconvnet/models/imagenet-caffe-ref.mat", origin="imagenet-caffe-ref.mat",
                     mean=MEAN, std=None, input_size=227)
WIDTHS = (96, 256, 384, 384, 256, 4096, 4096, 1000)
PARAMETRISED = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
LRN = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)  # Caffe's alpha is divided by size, as torch's

_pool = Geometry(3, 2)


def _specs(widths=WIDTHS):
    c1, c2, c3, c4, c5, f6, f7, f8 = widths
    return [("conv1", c1, Geometry(11, 4), True), ("relu1", c1, POINTWISE, True), ("pool1", c1, _pool, True),
            ("norm1", c1, POINTWISE, True), ("conv2", c2, Geometry(5, 1, 2), True), ("relu2", c2, POINTWISE, True),
            ("pool2", c2, _pool, True), ("norm2", c2, POINTWISE, True), ("conv3", c3, Geometry(3, 1, 1), True),
            ("relu3", c3, POINTWISE, True), ("conv4", c4, Geometry(3, 1, 1), True), ("relu4", c4, POINTWISE, True),
            ("conv5", c5, Geometry(3, 1, 1), True), ("relu5", c5, POINTWISE, True), ("pool5", c5, _pool, True),
            ("fc6", f6, Geometry(6), False), ("relu6", f6, POINTWISE, False), ("fc7", f7, POINTWISE, False),
            ("relu7", f7, POINTWISE, False), ("fc8", f8, POINTWISE, False)]


LAYERS = layer_table(_specs())


def network(widths=WIDTHS) -> nn.Sequential:
    """CaffeNet as one Sequential whose children are named like the paper's 20 layers, so that
    truncating at layer i keeps the first i + 1 children. ``widths`` (the output channels of
    conv1..fc8) only change for tests, which build small networks of the same structure."""
    c1, c2, c3, c4, c5, f6, f7, f8 = widths
    modules = {
        "conv1": nn.Conv2d(3, c1, 11, stride=4), "pool1": nn.MaxPool2d(3, 2, ceil_mode=True),
        "norm1": nn.LocalResponseNorm(**LRN),
        "conv2": nn.Conv2d(c1, c2, 5, padding=2, groups=2), "pool2": nn.MaxPool2d(3, 2, ceil_mode=True),
        "norm2": nn.LocalResponseNorm(**LRN),
        "conv3": nn.Conv2d(c2, c3, 3, padding=1), "conv4": nn.Conv2d(c3, c4, 3, padding=1, groups=2),
        "conv5": nn.Conv2d(c4, c5, 3, padding=1, groups=2), "pool5": nn.MaxPool2d(3, 2, ceil_mode=True),
        "fc6": nn.Conv2d(c5, f6, 6), "fc7": nn.Conv2d(f6, f7, 1), "fc8": nn.Conv2d(f7, f8, 1),
    }
    return nn.Sequential(OrderedDict(
        (name, modules[name] if name in modules else nn.ReLU()) for name, *_ in _specs(widths)))


def _check_shape(name: str, array: np.ndarray, shape: torch.Size, source: Path) -> torch.Tensor:
    if array.size != int(np.prod(shape)):
        raise WeightsError(f"{source}: layer {name} holds {array.size} values {tuple(array.shape)}, but "
                           f"CaffeNet's {name} needs {tuple(shape)}; the file is not the reference CaffeNet")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).reshape(shape)


def _by_name(params: dict[str, list[np.ndarray]], source: Path) -> list[list[np.ndarray]]:
    """The two parameter arrays of conv1..fc8: by name, else the parametrised layers in order."""
    if all(name in params for name in PARAMETRISED):
        chosen = [params[name] for name in PARAMETRISED]
    else:
        chosen = [p for p in params.values() if p]
        if len(chosen) != len(PARAMETRISED):
            raise WeightsError(f"{source} has {len(chosen)} layers with parameters "
                               f"({', '.join(n for n, p in params.items() if p)}); CaffeNet has 8 "
                               f"({', '.join(PARAMETRISED)})")
    for name, p in zip(PARAMETRISED, chosen):
        if len(p) != 2:
            raise WeightsError(f"{source}: layer {name} has {len(p)} parameter arrays, expected filters and biases")
    return chosen


def state_dict_from_file(source: str | Path, widths=WIDTHS) -> OrderedDict[str, torch.Tensor]:
    """A state_dict of ``network(widths)`` from a ``.caffemodel`` or MatConvNet ``.mat`` file."""
    source = Path(source)
    target = network(widths).state_dict()
    try:
        return _converted_state(source, target)
    except WeightsError as e:
        raise WeightsError(f"{e} (CaffeNet's are {CAFFEMODEL.url} and {MATCONVNET.url})") from None


def _converted_state(source: Path, target: dict) -> OrderedDict[str, torch.Tensor]:
    from .formats.caffemodel import read_caffemodel
    from .formats.matconvnet import read_matconvnet

    if source.suffix == ".mat":
        model = read_matconvnet(source)
        _check_average(model.average_image, source)
        params = {layer.name: layer.params for layer in model.layers}
        to_torch = lambda a: a.transpose(3, 2, 0, 1) if a.ndim == 4 else a  # noqa: E731  HxWxCinxCout
    else:
        _, layers = read_caffemodel(source)
        params = {layer.name: layer.blobs for layer in layers}
        to_torch = lambda a: a  # noqa: E731  Caffe's (out, in, h, w), fc weights (out, in) in C,H,W order
    state = OrderedDict()
    for name, (filters, biases) in zip(PARAMETRISED, _by_name(params, source)):
        weight = _check_shape(name, to_torch(filters), target[f"{name}.weight"].shape, source)
        if name == "conv1" and source.suffix != ".mat":
            weight = weight.flip(1)  # Caffe's BGR input to our RGB
        state[f"{name}.weight"] = weight
        state[f"{name}.bias"] = _check_shape(name, biases.reshape(-1), target[f"{name}.bias"].shape, source)
    return state


def _check_average(average: np.ndarray | None, source: Path) -> None:
    if average is None or average.size == 0:
        return
    colour = average.reshape(-1, average.shape[-1]).mean(0)
    if colour.shape != (3,) or np.abs(colour - MEAN).max() > 1:
        warnings.warn(f"{source}: its average image has mean colour {np.round(colour, 2).tolist()}, not "
                      f"CaffeNet's {np.round(MEAN, 2).tolist()}; inputs are centred on the latter",
                      stacklevel=3)


def converted(source: Path) -> Path:
    """The cached state_dict converted from ``source`` (made once, keyed by the source's hash)."""
    out = checkpoint_dir() / f"caffenet-from-{source.stem}-{file_digest(source)[:8]}.pth"
    if not out.is_file():
        state = state_dict_from_file(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            torch.save(state, tmp)
    return out


def locate_imagenet() -> Path:
    """The reference weights: the cached .caffemodel (else MatConvNet's .mat when only that is
    cached), downloaded when allowed."""
    mat = checkpoint_dir() / MATCONVNET.filename
    if mat.is_file() and not (checkpoint_dir() / CAFFEMODEL.filename).is_file():
        return mat
    try:
        return fetch(CAFFEMODEL)
    except WeightsError as e:
        raise WeightsError(f"{e}. MatConvNet's copy works as well: put {MATCONVNET.url} at {mat}") from None


def _load(net: nn.Module, path: Path) -> None:
    if path.suffix in (".caffemodel", ".mat"):
        path = converted(path)
    net.load_state_dict(load_state_dict(path, net))


def build(layer: str, weights: str = "imagenet", seed: int = 0) -> Representation:
    """CaffeNet truncated at ``layer``; ``weights``: 'imagenet' (the reference .caffemodel or
    MatConvNet's .mat from the cache), 'random', or the path of a .caffemodel, .mat or state_dict."""
    index = find_layer(LAYERS, layer, "caffenet")
    net = network()
    if weights == "imagenet":
        source = locate_imagenet()
        _load(net, source)
        label, trained = f"imagenet ({source.name})", True
    else:
        label, trained = apply(net, weights, None, seed, load=_load)
    return Representation(net[:index + 1], model="caffenet", layer=layer, layers=LAYERS,
                          weights=label, trained=trained, mean=CAFFEMODEL.mean, input_size=CAFFEMODEL.input_size)
