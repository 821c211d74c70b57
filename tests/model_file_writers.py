"""Writers of .caffemodel and MatConvNet .mat files, for the tests' synthetic weights files (the
library only reads these formats: preimage.representations.formats)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from preimage.atomic import atomic_path
from preimage.representations.formats.caffemodel import (
    _BYTES,
    _FIXED32,
    _NEW_FIELDS,
    _V1_FIELDS,
    _VARINT,
    V1_TYPES,
    CaffeLayer,
)
from preimage.representations.formats.matconvnet import MatConvNetModel

_V1_NUMBERS = {name: number for number, name in V1_TYPES.items()}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _message(number: int, parts: list[bytes]) -> list[bytes]:
    """A length-delimited field around ``parts``, kept as a list so large blobs are not copied."""
    return [_key(number, _BYTES) + _varint(sum(map(len, parts)))] + parts


def _blob(array: np.ndarray, legacy_shape: bool, packed: bool) -> list[bytes]:
    array = np.asarray(array, dtype="<f4")
    if legacy_shape and array.ndim <= 4:  # Caffe pads legacy shapes on the left: bias 1x1x1xN
        shape = (1,) * (4 - array.ndim) + array.shape
        parts = [b"".join(_key(i + 1, _VARINT) + _varint(d) for i, d in enumerate(shape))]
    elif packed:
        parts = _message(7, _message(1, [b"".join(map(_varint, array.shape))]))
    else:
        parts = _message(7, [b"".join(_key(1, _VARINT) + _varint(d) for d in array.shape)])
    values = array.ravel()
    if packed:
        return parts + _message(5, [values.tobytes()])
    fields = np.empty((values.size, 5), np.uint8)
    fields[:, 0] = _key(5, _FIXED32)[0]
    fields[:, 1:] = values.view(np.uint8).reshape(-1, 4)
    return parts + [fields.tobytes()]


def write_caffemodel(path: str | Path, name: str, layers: list[CaffeLayer], v1: bool = True,
                     legacy_shape: bool = True, packed: bool = True) -> Path:
    """Write ``layers`` as a .caffemodel (for tests and examples): V1 layers with an enum type or
    new-style layers; blobs of at most 4 dimensions with the legacy num/channels/height/width
    fields (padded with leading 1s, as Caffe does) or all with a BlobShape; packed or unpacked
    repeated fields."""
    name_field, type_field, blobs_field = _V1_FIELDS if v1 else _NEW_FIELDS
    parts = _message(1, [name.encode()])
    for layer in layers:
        body = _message(name_field, [layer.name.encode()])
        if v1:
            number = int(layer.type[3:]) if layer.type.startswith("V1:") else _V1_NUMBERS.get(layer.type)
            if number is None:
                raise ValueError(f"layer type {layer.type!r} has no V1 enum number")
            body.append(_key(type_field, _VARINT) + _varint(number))
        else:
            body += _message(type_field, [layer.type.encode()])
        for blob in layer.blobs:
            body += _message(blobs_field, _blob(blob, legacy_shape, packed))
        parts += _message(2 if v1 else 100, body)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.writelines(parts)
    return path


def write_matconvnet(path: str | Path, model: MatConvNetModel, style: str = "new",
                     net_variable: bool = False) -> Path:
    """Write ``model`` as a MatConvNet SimpleNN .mat (v7, compressed, as MATLAB saves it), for
    tests and examples. ``style`` "new": conv ``weights`` cells and ``meta.normalization``;
    "old": ``filters``/``biases`` fields and a top-level ``normalization``. ``net_variable``
    puts everything in one struct variable ``net``."""
    if style not in ("new", "old"):
        raise ValueError(f"style must be 'new' or 'old', not {style!r}")
    layers = np.empty((1, len(model.layers)), dtype=object)  # a cell array of structs
    for i, layer in enumerate(model.layers):
        fields = {"name": layer.name, "type": layer.type}
        params = [np.asarray(p, np.float32) for p in layer.params]
        params[1:] = [p.reshape(1, -1) for p in params[1:]]  # biases as a row, as MatConvNet has
        if params and style == "new":
            fields["weights"] = np.empty((1, len(params)), dtype=object)
            for j, p in enumerate(params):  # one by one: numpy would broadcast a list
                fields["weights"][0, j] = p
        elif params:
            fields.update(zip(("filters", "biases"), params))
        for key, value in layer.attributes.items():
            fields[key] = value if isinstance(value, str) else np.asarray(value, float).reshape(1, -1)
        layers[0, i] = fields
    normalization = {}
    if model.average_image is not None:
        normalization["averageImage"] = np.asarray(model.average_image, np.float32)
    if model.image_size is not None:
        normalization["imageSize"] = np.asarray(model.image_size, float).reshape(1, -1)
    net = {"layers": layers}
    if style == "new":
        net["meta"] = {"normalization": normalization}
    else:
        net["normalization"] = normalization
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        scipy.io.savemat(f, {"net": net} if net_variable else net, do_compression=True)
    return path
