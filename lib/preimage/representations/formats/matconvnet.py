"""MatConvNet SimpleNN model files (``imagenet-caffe-ref.mat``: CaffeNet as MatConvNet's
import-caffe.py converted it) read without MATLAB.

The layout is that of MatConvNet's own files: a cell array ``layers`` of structs with ``type``,
``name``, conv weights as a ``weights`` cell {filters, biases} (newer files) or as ``filters``
and ``biases`` fields (older files), and the input normalisation in ``meta.normalization``
(newer) or ``normalization`` (older); a file may also hold all of this in one struct ``net``.

Files are read by the small MAT v5 decoder below, not scipy's: scipy's
reader trusts the file (a damaged type code crashes the interpreter with a segmentation fault,
a damaged size makes it loop for seconds), whereas this one checks every tag against the bytes
that are there, so a damaged file is a WeightsError whatever the damage.
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import WeightsError
from . import read_bytes

ATTRIBUTES = ("stride", "pad", "pool", "method", "param")  # the layer fields kept as attributes
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class MatConvNetLayer:
    """One layer. ``params`` of a conv layer are its filters, H x W x Cin (per group) x Cout
    indexed as in MATLAB (and column-major in memory, as MATLAB stores them), and its biases as
    a (Cout,) vector (left out when the file has none); other layers have none. ``attributes``
    holds the fields named in ATTRIBUTES that the layer has: text as str, numbers as an
    int/float, or a list of them in MATLAB order if several."""

    name: str
    type: str
    params: list[np.ndarray]
    attributes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MatConvNetModel:
    """The layers in order, the average image (H x W x 3 or 1 x 1 x 3, RGB, float32) and the
    network input size (e.g. (227, 227, 3)) where the file gives them."""

    layers: list[MatConvNetLayer]
    average_image: np.ndarray | None = None
    image_size: tuple | None = None


class _Malformed(Exception):
    pass


def read_matconvnet(path: str | Path) -> MatConvNetModel:
    """The model in the MatConvNet SimpleNN .mat file at ``path``. Anything else (a v7.3 file,
    a damaged file, a .mat without ``layers``) raises WeightsError saying what to do."""
    path = Path(path)
    fix = "re-download it from where it was published"
    data = read_bytes(path, "MatConvNet model", fix)
    if data.startswith(b"MATLAB 7.3 MAT-file") or _HDF5_SIGNATURE in (data[:8], data[512:520]):
        raise WeightsError(
            f"{path} is a MATLAB v7.3 (HDF5) .mat file, which this reader cannot read. Re-save it "
            f"as v7 in MATLAB or Octave: net = load('{path.name}'); save('{path.stem}-v7.mat', "
            f"'-struct', 'net', '-v7') and pass {path.stem}-v7.mat instead")
    try:
        variables = _variables(data)
    except _Malformed as e:
        raise WeightsError(f"{path} is not a readable MATLAB v5/v7 .mat file: {e}. It is corrupt, "
                           f"truncated or not a .mat file; {fix}") from None
    try:
        return _model(variables)
    except _Malformed as e:
        raise WeightsError(f"{path} is not a MatConvNet SimpleNN model: {e}. {fix}") from None


# MAT v5 data types (mi*) of numeric data and array classes (mx*) of numeric arrays.
_MI_NUMERIC = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8",
               12: "i8", 13: "u8"}
_MX_NUMERIC = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4",
               14: "i8", 15: "u8"}
_MX_CELL, _MX_STRUCT, _MX_CHAR = 1, 2, 4
_MI_INT8, _MI_UINT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 2, 5, 6, 14, 15
_MI_UTF8 = 16
_TEXT_TYPES = (_MI_INT8, _MI_UINT8, _MI_UTF8)
_MAX_DEPTH = 32  # a SimpleNN file nests 5 deep (net, layers, layer, weights, array)


def _variables(data: bytes) -> dict:
    """The variables of a MAT v5 file: numbers and text as arrays of their MATLAB shape, cell
    arrays as object arrays, struct arrays as object arrays of dicts; other classes as None."""
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        raise _Malformed("it has no MAT-file v5 header (128 bytes ending in IM or MI)")
    order = "<" if data[126:128] == b"IM" else ">"
    version = struct.unpack_from(order + "H", data, 124)[0]
    if version != 0x0100:
        raise _Malformed(f"MAT-file version {version:#06x} (expected 0x0100)")
    reader, variables, pos = _MatReader(data, order), {}, 128
    while pos < len(data):
        kind, size, start, pos = reader.tag(pos, len(data))
        if kind == _MI_COMPRESSED:
            pos = start + size  # compressed elements are not padded
            try:
                inner = _inflate(memoryview(data)[start:pos], order)
                name, value, _ = _MatReader(inner, order).matrix(0, len(inner), 0)
            except _Malformed as e:  # offsets in ``e`` count from the start of the inflated data
                raise _Malformed(f"in the compressed element at byte {start - 8}: {e}") from None
        elif kind == _MI_MATRIX:
            name, value, _ = reader.matrix(start - 8, pos, 0)
        else:
            raise _Malformed(f"a top-level element of data type {kind} at byte {start - 8} "
                             f"(expected an array, 14, or compressed data, 15)")
        variables[name] = value
    return variables


def _inflate(payload, order: str) -> bytes:
    """A compressed variable, inflated no further than its tag says: memory stays bounded by
    what the file declares however well the data compresses."""
    inflater = zlib.decompressobj()
    try:
        head = inflater.copy().decompress(payload, 8)
        size = struct.unpack_from(order + "I", head, 4)[0] + 8 if len(head) == 8 else 8
        inflated = inflater.decompress(payload, size)
    except zlib.error as e:
        raise _Malformed(f"corrupt compressed data ({e})") from None
    if len(inflated) < size:
        raise _Malformed("a compressed variable is cut short")
    return inflated


class _MatReader:
    """Decodes the data elements of one buffer (the file or an inflated variable)."""

    def __init__(self, buf: bytes, order: str):
        self.buf, self.order = buf, order

    def tag(self, pos: int, end: int) -> tuple[int, int, int, int]:
        """(data type, byte count, data offset, offset of the next element) at ``pos``."""
        if pos + 8 > end:
            raise _Malformed(f"a data element is cut short at byte {pos}")
        word, size = struct.unpack_from(self.order + "II", self.buf, pos)
        if word >> 16:  # small data element: type and count in 4 bytes, data in the next 4
            if word >> 16 > 4:
                raise _Malformed(f"a small data element of {word >> 16} bytes at byte {pos}")
            return word & 0xFFFF, word >> 16, pos + 4, pos + 8
        if size > end - pos - 8:
            raise _Malformed(f"a data element at byte {pos} claims {size} bytes, more than remain")
        return word, size, pos + 8, pos + 8 + size + -size % 8

    def element(self, pos: int, end: int, kinds, what: str) -> tuple[int, int, int, int]:
        kind, size, start, pos = self.tag(pos, end)
        if kind not in kinds:
            raise _Malformed(f"{what} at byte {start} has data type {kind}")
        return kind, size, start, pos

    def matrix(self, pos: int, end: int, depth: int) -> tuple[str, object, int]:
        """(name, value, next offset) of the array element (miMATRIX) at ``pos``."""
        _, size, start, after = self.element(pos, end, (_MI_MATRIX,), "an array element")
        if size == 0:
            return "", np.zeros((0, 0)), after
        if depth > _MAX_DEPTH:
            raise _Malformed(f"arrays nested more than {_MAX_DEPTH} deep")
        stop = start + size
        _, size, at, pos = self.element(start, stop, (_MI_UINT32,), "array flags")
        if size != 8:
            raise _Malformed(f"array flags at byte {at} of {size} bytes (expected 8)")
        flags = struct.unpack_from(self.order + "I", self.buf, at)[0]
        _, size, at, pos = self.element(pos, stop, (_MI_INT32,), "array dimensions")
        if size % 4 or not 2 <= size // 4 <= 32:
            raise _Malformed(f"array dimensions at byte {at} of {size} bytes")
        dims = struct.unpack_from(f"{self.order}{size // 4}i", self.buf, at)
        if min(dims) < 0:
            raise _Malformed(f"negative array dimensions {dims} at byte {at}")
        _, size, at, pos = self.element(pos, stop, _TEXT_TYPES, "an array name")
        name = self.buf[at:at + size].decode("latin-1")
        kind = flags & 0xFF
        if kind in _MX_NUMERIC:
            value = self.numeric(pos, stop, dims, flags)
        elif kind == _MX_CHAR:
            value = self.chars(pos, stop, dims)
        elif kind in (_MX_CELL, _MX_STRUCT):
            value = self.container(pos, stop, dims, kind == _MX_STRUCT, depth)
        else:  # objects, sparse matrices, functions: never part of a SimpleNN model
            value = None
        return name, value, after

    def numeric(self, pos: int, end: int, dims: tuple, flags: int) -> np.ndarray:
        parts = []
        for _ in range(2 if flags & 0x800 else 1):  # real, then imaginary part if complex
            kind, size, at, pos = self.element(pos, end, _MI_NUMERIC, "numeric data")
            dtype = np.dtype(self.order + _MI_NUMERIC[kind])
            if size != math.prod(dims) * dtype.itemsize:
                raise _Malformed(f"an array of size {dims} with {size} bytes of {dtype.name} data")
            parts.append(np.frombuffer(self.buf, dtype, math.prod(dims), at))
        values = parts[0] + 1j * parts[1] if len(parts) == 2 else parts[0]
        if flags & 0x200:
            values = values.astype(bool)
        elif len(parts) == 1:  # stored compactly (e.g. doubles as uint8): back to the class
            values = values.astype(_MX_NUMERIC[flags & 0xFF])
        return values.reshape(dims, order="F")

    def chars(self, pos: int, end: int, dims: tuple) -> np.ndarray:
        codecs = {1: "latin-1", 2: "latin-1", 16: "utf-8",
                  4: "utf-16-le" if self.order == "<" else "utf-16-be",
                  17: "utf-16-le" if self.order == "<" else "utf-16-be",
                  18: "utf-32-le" if self.order == "<" else "utf-32-be"}
        kind, size, at, pos = self.element(pos, end, codecs, "text")
        try:
            text = self.buf[at:at + size].decode(codecs[kind])
        except UnicodeDecodeError:
            raise _Malformed(f"undecodable text at byte {at}") from None
        if len(text) != math.prod(dims):
            raise _Malformed(f"a text array of size {dims} with {len(text)} characters")
        return np.array(list(text), dtype="U1").reshape(dims, order="F")

    def container(self, pos: int, end: int, dims: tuple, is_struct: bool, depth: int) -> np.ndarray:
        """A cell array (of values) or struct array (of dicts) in MATLAB's element order."""
        names = [None]
        if is_struct:
            _, size, at, pos = self.element(pos, end, (_MI_INT32,), "the field name length")
            width = struct.unpack_from(self.order + "i", self.buf, at)[0] if size == 4 else 0
            if width <= 0:
                raise _Malformed(f"a struct field name length at byte {at} that is not positive")
            _, size, at, pos = self.element(pos, end, _TEXT_TYPES, "struct field names")
            names = [self.buf[at + i:at + i + width].split(b"\0")[0].decode("latin-1")
                     for i in range(0, size - size % width, width)]
        count = math.prod(dims)
        # Every value needs an 8-byte tag at least; a struct array without fields needs none, so
        # its size has a cap of its own.
        if count * len(names) * 8 > end - pos or (not names and count > 1 << 20):
            raise _Malformed(f"an array of size {dims} whose elements cannot fit in its bytes")
        values = np.empty(count, dtype=object)
        for i in range(count):
            fields = {}
            for name in names:
                _, fields[name], pos = self.matrix(pos, end, depth + 1)
            values[i] = fields if is_struct else fields[None]
        return values.reshape(dims, order="F")


def _model(variables: dict) -> MatConvNetModel:
    net = variables
    if "layers" not in variables and "net" in variables:
        net = _struct(variables["net"])
        if net is None:
            raise _Malformed("its variable 'net' is not a struct")
    if "layers" not in net:
        found = ", ".join(sorted(net)) or "none"
        raise _Malformed(f"it has no 'layers' (variables or fields found: {found})")
    items = _elements(net["layers"])
    if not items:
        raise _Malformed("'layers' is empty or not a cell array of structs")
    layers = [_layer(item, i) for i, item in enumerate(items)]
    normalization = _struct(net.get("normalization"))
    if normalization is None:
        normalization = _struct((_struct(net.get("meta")) or {}).get("normalization")) or {}
    average = normalization.get("averageImage")
    size = normalization.get("imageSize")
    return MatConvNetModel(layers, None if average is None else _average_image(average),
                           None if size is None else _image_size(size))


def _struct(value) -> dict | None:
    """A 1x1 struct (also inside 1x1 cells) as a dict of its fields; None for anything else."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.flat[0]
    return value if isinstance(value, dict) else None


def _elements(value) -> list:
    """The elements of a cell or struct array in MATLAB (column-major) order: structs as dicts,
    anything else as None."""
    if not (isinstance(value, np.ndarray) and value.dtype == object):
        return []
    return [_struct(v) for v in value.ravel(order="F")]


def _layer(fields: dict | None, i: int) -> MatConvNetLayer:
    where = f"layer {i + 1}"
    if fields is None:
        raise _Malformed(f"{where} is not a struct")
    kind = _text(fields.get("type"), f"the type of {where}")
    if not kind:
        raise _Malformed(f"{where} has no type")
    name = _text(fields.get("name"), f"the name of {where}") or f"layer{i + 1}"
    params = []
    if kind == "conv":
        if "weights" in fields:
            weights = fields["weights"]
            if not (isinstance(weights, np.ndarray) and weights.dtype == object):
                raise _Malformed(f"the weights of {where} ({name}) are not a cell array")
            weights = list(weights.ravel(order="F")) + [None, None]
            filters, biases = weights[0], weights[1]
        else:
            filters, biases = fields.get("filters"), fields.get("biases")
        params = _conv_params(filters, biases, f"{where} ({name})")
    attributes = {k: _plain(fields[k], f"the {k} of {where} ({name})")
                  for k in ATTRIBUTES if k in fields}
    return MatConvNetLayer(name, kind, params, attributes)


def _conv_params(filters, biases, where: str) -> list[np.ndarray]:
    if filters is None:
        return []
    filters = _numeric(filters, f"the filters of {where}")
    if filters.ndim > 4:
        raise _Malformed(f"the filters of {where} have {filters.ndim} dimensions, not 4")
    filters = filters.reshape(filters.shape + (1,) * (4 - filters.ndim))  # MATLAB drops trailing 1s
    params = [filters.astype(np.float32, copy=False)]  # column-major, as MATLAB stores it
    if biases is not None and np.size(biases):
        biases = _numeric(biases, f"the biases of {where}").ravel(order="F")
        if biases.size != filters.shape[3]:
            raise _Malformed(f"{where} has {biases.size} biases for {filters.shape[3]} filters")
        params.append(biases.astype(np.float32))
    return params


def _text(value, what: str) -> str:
    if value is None or (isinstance(value, np.ndarray) and value.size == 0):
        return ""
    if not (isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.shape[0] == 1):
        raise _Malformed(f"{what} is not a text string")
    return "".join(value.ravel(order="F"))


def _numeric(value, what: str) -> np.ndarray:
    if not (isinstance(value, np.ndarray) and value.dtype.kind in "buif"):
        raise _Malformed(f"{what} is not a real numeric array")
    return value


def _plain(value, what: str):
    """Text as str; numbers as plain ints (if all whole) or floats, one or a list."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        return _text(value, what)
    numbers = _numeric(value, what).ravel(order="F").astype(float).tolist()
    if all(x.is_integer() for x in numbers):
        numbers = [int(x) for x in numbers]
    return numbers[0] if len(numbers) == 1 else numbers


def _average_image(value) -> np.ndarray | None:
    image = _numeric(value, "normalization.averageImage")
    if image.size == 0 or (image.size == 2 and not image.any()):  # import-caffe.py's [0 0]: none
        return None
    if image.size == 3:
        return image.ravel(order="F").astype(np.float32).reshape(1, 1, 3)
    if image.ndim != 3 or image.shape[2] != 3:
        raise _Malformed(f"normalization.averageImage has shape {image.shape}, not H x W x 3")
    return image.astype(np.float32, copy=False)


def _image_size(value) -> tuple | None:
    size = _plain(value, "normalization.imageSize")
    size = size if isinstance(size, list) else [size]
    if not all(isinstance(x, int) and x >= 0 for x in size):
        raise _Malformed(f"normalization.imageSize {size} is not a list of sizes")
    return tuple(size) or None
