"""Caffe ``.caffemodel`` files (a binary protobuf ``NetParameter``) read without Caffe or
protobuf, since the BVLC reference CaffeNet weights are published only in this format.

Only what weights need is decoded: the net name and, per layer, its name, type and parameter
blobs; every other field is skipped. Both layer encodings are read: the old ``V1LayerParameter``
(``layers``, field 2, type an enum; the published CaffeNet file) and ``LayerParameter``
(``layer``, field 100, type a string). Field numbers are those of BVLC Caffe's caffe.proto.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import WeightsError
from . import read_bytes

# V1LayerParameter.LayerType, named as Caffe's UpgradeV1LayerType names them in LayerParameter.
V1_TYPES = {
    0: "", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout",
    7: "EuclideanLoss", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 11: "Im2col",
    12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN",
    16: "MultinomialLogisticLoss", 17: "Pooling", 18: "ReLU", 19: "Sigmoid", 20: "Softmax",
    21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData", 25: "Eltwise", 26: "Power",
    27: "SigmoidCrossEntropyLoss", 28: "HingeLoss", 29: "MemoryData", 30: "ArgMax",
    31: "Threshold", 32: "DummyData", 33: "Slice", 34: "MVN", 35: "AbsVal", 36: "Silence",
    37: "ContrastiveLoss", 38: "Exp", 39: "Deconvolution",
}

# (name, type, blobs) field numbers of V1LayerParameter and of LayerParameter.
_V1_FIELDS = (4, 5, 6)
_NEW_FIELDS = (1, 2, 7)

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class CaffeLayer:
    """One layer: its name, its type as a LayerParameter type string ("Convolution", ...; an
    unknown V1 enum number n reads as "V1:n") and its blobs as float32 arrays of their shape."""

    name: str
    type: str
    blobs: list[np.ndarray]


class _Malformed(Exception):
    def __init__(self, what: str, offset: int):
        super().__init__(what)
        self.what, self.offset = what, offset


class _Reader:
    """Decodes the wire format of one file held in memory; offsets are absolute byte offsets."""

    def __init__(self, buf: bytes):
        self.buf = buf

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        start, result, shift = pos, 0, 0
        while True:
            if pos >= end:
                raise _Malformed("truncated varint", start)
            byte = self.buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
            if shift >= 70:
                raise _Malformed("varint longer than 10 bytes", start)

    def field(self, pos: int, end: int):
        """(number, wire type, value, next position, tag offset) of the field at ``pos``. The value
        is the integer of a varint, the payload offset of a fixed32/64 and the (start, end) of a
        length-delimited payload."""
        at = pos
        tag, pos = self.varint(pos, end)
        number, wire = tag >> 3, tag & 7
        if not 0 < number < 1 << 29:
            raise _Malformed(f"invalid field number {number}", at)
        if wire == _VARINT:
            value, pos = self.varint(pos, end)
        elif wire in (_FIXED64, _FIXED32):
            value, pos = pos, pos + (8 if wire == _FIXED64 else 4)
        elif wire == _BYTES:
            length, pos = self.varint(pos, end)
            value, pos = (pos, pos + length), pos + length
        else:
            raise _Malformed(f"field {number} has wire type {wire}, which Caffe never writes", at)
        if pos > end:
            raise _Malformed(f"field {number} runs {pos - end} bytes past the end of its message", at)
        return number, wire, value, pos, at

    def fields(self, start: int, end: int):
        pos = start
        while pos < end:
            number, wire, value, pos, at = self.field(pos, end)
            yield number, wire, value, at

    def string(self, value, wire: int, what: str, at: int) -> str:
        _expect(wire, (_BYTES,), what, at)
        try:
            return self.buf[value[0]:value[1]].decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"{what} is not UTF-8 text", at) from None

    def run(self, at: int, end: int, width: int) -> tuple[np.ndarray, int]:
        """The payloads of the unpacked fixed-width fields repeating the one-byte tag at ``at``,
        found with numpy (a blob of unpacked floats is one field per value), and the position
        after them. A last field cut short is left for ``field`` to report."""
        stride = width + 1
        u8 = np.frombuffer(self.buf, np.uint8, count=end - at, offset=at)
        total, n, chunk = (end - at) // stride, 0, 1024
        while n < total:  # growing chunks: linear time however long the run
            stop = min(total, n + chunk)
            bad = np.flatnonzero(u8[n * stride:stop * stride:stride] != u8[0])
            if bad.size:
                n += int(bad[0])
                break
            n, chunk = stop, chunk * 2
        payload = u8[:n * stride].reshape(n, stride)[:, 1:]
        return np.ascontiguousarray(payload).view(f"<f{width}").ravel(), at + n * stride

    def net(self) -> tuple[str, list[CaffeLayer]]:
        name, layers = "", []
        for number, wire, value, at in self.fields(0, len(self.buf)):
            if number == 1:
                name = self.string(value, wire, "the net name", at)
            elif number in (2, 100):
                _expect(wire, (_BYTES,), "a layer", at)
                layers.append(self.layer(*value, _V1_FIELDS if number == 2 else _NEW_FIELDS))
        if not layers:
            raise _Malformed("no layers (NetParameter field 2 or 100) in the whole file", 0)
        return name, layers

    def layer(self, start: int, end: int, numbers: tuple[int, int, int]) -> CaffeLayer:
        name_field, type_field, blobs_field = numbers
        name, kind, blobs = "", "", []
        for number, wire, value, at in self.fields(start, end):
            if number == name_field:
                name = self.string(value, wire, "a layer name", at)
            elif number == type_field and numbers == _V1_FIELDS:
                _expect(wire, (_VARINT,), "a V1 layer type", at)
                kind = V1_TYPES.get(value, f"V1:{value}")
            elif number == type_field:
                kind = self.string(value, wire, "a layer type", at)
            elif number == blobs_field:
                _expect(wire, (_BYTES,), "a blob", at)
                blobs.append(self.blob(*value, at))
        return CaffeLayer(name, kind, blobs)

    def blob(self, start: int, end: int, blob_at: int) -> np.ndarray:
        """The data of a BlobProto, shaped as Caffe's Blob::FromProto shapes it: by the legacy
        num/channels/height/width if any of them is present, else by the BlobShape (no BlobShape
        at all: a scalar)."""
        legacy, dims, floats, doubles = None, [], [], []
        pos = start
        while pos < end:
            number, wire, value, pos, at = self.field(pos, end)
            if number in (1, 2, 3, 4):  # num, channels, height, width
                _expect(wire, (_VARINT,), "a blob dimension", at)
                legacy = legacy or [0, 0, 0, 0]
                legacy[number - 1] = _dimension(value, at)
            elif number == 7:
                _expect(wire, (_BYTES,), "a blob shape", at)
                dims += self.dims(*value)  # a repeated message field merges
            elif number in (5, 8):  # data (float), double_data
                width, fixed = (4, _FIXED32) if number == 5 else (8, _FIXED64)
                _expect(wire, (_BYTES, fixed), "blob data", at)
                if wire == _BYTES:
                    length = value[1] - value[0]
                    if length % width:
                        raise _Malformed(f"packed blob data of {length} bytes, not a multiple of "
                                         f"{width}", at)
                    values = np.frombuffer(self.buf, f"<f{width}", length // width, value[0])
                else:
                    values, pos = self.run(at, end, width)
                (floats if number == 5 else doubles).append(values)
            elif wire in (_FIXED32, _FIXED64) and number < 16:  # e.g. unpacked diff: skip fast
                pos = self.run(at, end, 8 if wire == _FIXED64 else 4)[1]
        # concatenate copies, so the result owns its memory even for one chunk of the file
        floats, doubles = (np.concatenate(v or [np.zeros(0, "<f4")]) for v in (floats, doubles))
        if floats.size and doubles.size:
            raise _Malformed("a blob with both float data and double_data", blob_at)
        shape = tuple(dims if legacy is None else legacy)
        data = floats if floats.size else doubles
        if data.size != math.prod(shape):
            raise _Malformed(f"a blob of shape {shape} ({math.prod(shape)} values) holds "
                             f"{data.size} values", blob_at)
        return data.astype(np.float32, copy=False).reshape(shape)

    def dims(self, start: int, end: int) -> list[int]:
        dims = []
        for number, wire, value, at in self.fields(start, end):
            if number != 1:
                continue
            _expect(wire, (_VARINT, _BYTES), "a shape dimension", at)
            if wire == _VARINT:
                dims.append(_dimension(value, at))
                continue
            pos, stop = value
            while pos < stop:
                dim_at = pos
                value, pos = self.varint(pos, stop)
                dims.append(_dimension(value, dim_at))
        return dims


def _expect(wire: int, allowed: tuple[int, ...], what: str, at: int) -> None:
    if wire not in allowed:
        raise _Malformed(f"{what} has wire type {wire} (expected {' or '.join(map(str, allowed))})",
                         at)


def _dimension(value: int, at: int) -> int:
    if value >= 1 << 63:  # an int64 is sent as its 64-bit two's complement
        raise _Malformed(f"negative blob dimension {value - (1 << 64)}", at)
    return value


def read_caffemodel(path: str | Path) -> tuple[str, list[CaffeLayer]]:
    """The net name and the layers, in file order, of the .caffemodel at ``path``. Anything that
    is not a well-formed file raises WeightsError saying what is wrong, where, and what to do."""
    path = Path(path)
    fix = "the file is corrupt, truncated or not a .caffemodel; re-download it from where it was published"
    buf = read_bytes(path, "Caffe model", fix)
    try:
        return _Reader(buf).net()
    except _Malformed as e:
        raise WeightsError(f"{path} is not a valid Caffe .caffemodel: {e.what} (at byte "
                           f"{e.offset} of {len(buf)}); {fix}") from None
