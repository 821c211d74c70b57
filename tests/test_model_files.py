"""The Caffe .caffemodel and MatConvNet .mat readers: exact round trips in every encoding, a
message encoded by hand from the protobuf wire spec, and damaged or foreign files (every cut
point, fuzzed bytes) that must end in WeightsError, never another exception or a hang."""
from __future__ import annotations

import io
import itertools
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import scipy.io
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_file_writers import write_caffemodel, write_matconvnet

from preimage.errors import WeightsError
from preimage.representations import caffenet
from preimage.representations.formats.caffemodel import CaffeLayer, read_caffemodel
from preimage.representations.formats.matconvnet import MatConvNetLayer, MatConvNetModel, read_matconvnet

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SECONDS = 2.0  # the most one small damaged file may take to be rejected
_NUMBERS = itertools.count()


def _values(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _caffe_layers():
    return [CaffeLayer("data", "Data", []),
            CaffeLayer("conv1", "Convolution", [_values(4, 3, 2, 2), _values(4, seed=1)]),
            CaffeLayer("relu1", "ReLU", []),
            CaffeLayer("fc", "InnerProduct", [_values(5, 48, seed=2), _values(5, seed=3)]),
            CaffeLayer("odd", "V1:77", [_values(2, 1, 3, 1, 2, seed=4)]),
            CaffeLayer("prob", "Softmax", [])]


def _reads_as_damaged(folder, data: bytes, reader, valid_prefix=None) -> bool:
    """``reader`` rejects a file holding ``data`` with WeightsError quickly, or (for a file cut
    at an element boundary) reads layers that begin the full file's list; returns whether it
    rejected. Each file is new: overwriting one is far slower on some file systems."""
    path = folder / f"damaged{next(_NUMBERS)}"
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        result = reader(path)
    except WeightsError as e:
        assert str(path) in str(e)
        rejected = True
    else:
        layers = result[1] if isinstance(result, tuple) else result.layers
        if valid_prefix is not None:
            assert [x.name for x in layers] == valid_prefix[:len(layers)]
        rejected = False
    assert time.perf_counter() - start < SECONDS
    path.unlink()
    return rejected


@st.composite
def _mutations(draw, data: bytes) -> bytes:
    """``data`` with a few random byte flips, truncations, insertions and deletions."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        pos = draw(st.integers(0, len(buf)))
        if op == "flip" and pos < len(buf):
            buf[pos] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[pos:pos + draw(st.integers(1, 8))]
    return bytes(buf)


# --- Caffe ---------------------------------------------------------------------------------

@pytest.mark.parametrize("v1", [True, False], ids=["v1", "layer"])
@pytest.mark.parametrize("legacy_shape", [True, False], ids=["legacy", "blobshape"])
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_caffemodel_round_trip(tmp_path, v1, legacy_shape, packed):
    layers = _caffe_layers()
    path = write_caffemodel(tmp_path / "net.caffemodel", "TinyNet", layers, v1, legacy_shape, packed)
    name, got = read_caffemodel(path)
    assert name == "TinyNet"
    assert [(x.name, x.type, len(x.blobs)) for x in got] == [(x.name, x.type, len(x.blobs))
                                                             for x in layers]
    for want, have in zip(layers, got):
        for a, b in zip(want.blobs, have.blobs):
            assert b.dtype == np.float32 and b.flags.writeable
            if legacy_shape and a.ndim <= 4:  # legacy shapes are 4-D, padded on the left
                assert b.shape == (1,) * (4 - a.ndim) + a.shape
            else:
                assert b.shape == a.shape
            np.testing.assert_array_equal(b.reshape(a.shape), a)


def _hand_built_caffemodel() -> bytes:
    """A NetParameter encoded byte by byte from the protobuf wire spec (key = field << 3 | wire)."""
    blob1 = (b"\x08\x01" b"\x10\x01" b"\x18\x02" b"\x20\x01"     # num 1, channels 1, height 2, width 1
             + b"\x2a\x08" + struct.pack("<2f", 1.5, -2.0))      # data (5), packed, 8 bytes
    blob2 = (b"\x3a\x02" b"\x08\x02"                              # shape (7) { dim (1): 2 }
             + b"\x2d" + struct.pack("<f", 0.25)                  # data (5) unpacked, fixed32
             + b"\x35" + struct.pack("<f", 9.0)                   # diff (6 << 3 | 5): skipped
             + b"\x2d" + struct.pack("<f", 4.0))                  # data continues after it
    v1_layer = (b"\x12\x04data"                                   # bottom (2): skipped
                + b"\x22\x02ip"                                   # name (4)
                + b"\x28\x0e"                                     # type (5): INNER_PRODUCT = 14
                + b"\x32" + bytes([len(blob1)]) + blob1           # blobs (6)
                + b"\x32" + bytes([len(blob2)]) + blob2
                + b"\x99\x06" + bytes(8)                          # field 99, fixed64: skipped
                + b"\x3d" + struct.pack("<f", 1.0))               # blobs_lr (7), fixed32: skipped
    new_layer = b"\x0a\x04relu" b"\x12\x04ReLU"                   # name (1), type (2)
    return (b"\x0a\x04tiny"                                       # NetParameter name (1)
            + b"\x12" + bytes([len(v1_layer)]) + v1_layer         # layers (2), V1
            + b"\xa2\x06" + bytes([len(new_layer)]) + new_layer)  # layer (100): key 802 as a varint


def test_hand_built_caffemodel(tmp_path):
    path = tmp_path / "hand.caffemodel"
    path.write_bytes(_hand_built_caffemodel())
    name, layers = read_caffemodel(path)
    assert name == "tiny"
    assert [(x.name, x.type) for x in layers] == [("ip", "InnerProduct"), ("relu", "ReLU")]
    first, second = layers[0].blobs
    assert first.shape == (1, 1, 2, 1) and first.ravel().tolist() == [1.5, -2.0]
    assert second.shape == (2,) and second.tolist() == [0.25, 4.0]
    assert layers[1].blobs == []


def test_writer_matches_the_wire_spec(tmp_path):
    path = write_caffemodel(tmp_path / "w.caffemodel", "n",
                            [CaffeLayer("c", "Convolution", [np.array([0.5], np.float32)])])
    blob = b"\x08\x01\x10\x01\x18\x01\x20\x01" + b"\x2a\x04" + struct.pack("<f", 0.5)
    layer = b"\x22\x01c" + b"\x28\x04" + b"\x32" + bytes([len(blob)]) + blob  # CONVOLUTION = 4
    assert path.read_bytes() == b"\x0a\x01n" + b"\x12" + bytes([len(layer)]) + layer


def _blob_file(blob: bytes) -> bytes:
    layer = b"\x0a\x01x" + b"\x3a" + bytes([len(blob)]) + blob
    return b"\xa2\x06" + bytes([len(layer)]) + layer


def test_blob_shapes_follow_caffe(tmp_path):
    """As in Caffe's Blob::FromProto: legacy dimensions win over a BlobShape, and a blob with
    neither is a scalar."""
    legacy = b"\x08\x01" b"\x10\x02" b"\x18\x01" b"\x20\x01"      # 1 x 2 x 1 x 1
    shape = b"\x3a\x03" b"\x0a\x01\x02"                              # shape { dim: [2] } packed
    data = b"\x2a\x08" + struct.pack("<2f", 1.0, 2.0)
    path = tmp_path / "s.caffemodel"
    path.write_bytes(_blob_file(shape + legacy + data))
    assert read_caffemodel(path)[1][0].blobs[0].shape == (1, 2, 1, 1)
    path.write_bytes(_blob_file(b"\x2d" + struct.pack("<f", 7.0)))
    (scalar,) = read_caffemodel(path)[1][0].blobs
    assert scalar.shape == () and scalar.item() == 7.0


def test_double_data_reads_as_float32(tmp_path):
    blob = b"\x3a\x02\x08\x02" + b"\x42\x10" + struct.pack("<2d", 0.5, -3.0)  # double_data (8)
    layer = b"\x0a\x01d" + b"\x3a" + bytes([len(blob)]) + blob
    path = tmp_path / "d.caffemodel"
    path.write_bytes(b"\xa2\x06" + bytes([len(layer)]) + layer)
    (blob_read,) = read_caffemodel(path)[1][0].blobs
    assert blob_read.dtype == np.float32 and blob_read.tolist() == [0.5, -3.0]


@pytest.mark.parametrize("data, problem", [
    (b"", "empty"),
    (b"\x0a", "truncated varint"),
    (b"\x0a\x05ab", "past the end"),
    (b"\x0a\x01x", "no layers"),
    (b"\x08\x01", "net name has wire type 0"),
    (b"\x0a\x02\xff\xfe", "UTF-8"),
    (b"\x12\x02\x22\x05", "past the end"),
    (b"\x12\x02\x28\x01\x0b", "wire type 3"),
    (b"\x0b", "wire type 3"),
    (b"\x12\x02\x2a\x00", "wire type 2 (expected 0)"),  # V1 type (5) as a string
    (b"\x02\x00", "field number 0"),
    (b"\x0a" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (_blob_file(b"\x08" + b"\xff" * 9 + b"\x01"), "negative blob dimension -1"),
    (_blob_file(b"\x08\x02" + b"\x2a\x04" + bytes(4)), "holds 1 values"),
    (_blob_file(b"\x3a\x07\x08\x80\xa0\x94\xa5\x8d\x1d" + b"\x2a\x04" + bytes(4)),
     "1000000000000 values"),
    (_blob_file(b"\x2a\x03" + bytes(3)), "not a multiple of 4"),
    (_blob_file(b"\x2a\x04" + bytes(4) + b"\x42\x08" + bytes(8)), "both float data and double"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "field number 0"),
])
def test_malformed_caffemodel(tmp_path, data, problem):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(data)
    with pytest.raises(WeightsError) as e:
        read_caffemodel(path)
    message = str(e.value)
    assert str(path) in message and problem in message and "re-download" in message
    with pytest.raises(WeightsError) as e:  # where CaffeNet's files come from is said by caffenet
        caffenet.state_dict_from_file(path)
    assert problem in str(e.value) and caffenet.CAFFEMODEL.url in str(e.value)


def test_foreign_and_missing_files_are_weights_errors(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / "model.pth")  # a zip archive
    for path in (tmp_path / "model.pth", tmp_path / "missing.caffemodel", tmp_path):
        with pytest.raises(WeightsError, match="re-download"):
            read_caffemodel(path)
    write_matconvnet(tmp_path / "m.mat", MatConvNetModel([MatConvNetLayer("r", "relu", [])]))
    with pytest.raises(WeightsError):
        read_caffemodel(tmp_path / "m.mat")


@pytest.fixture(scope="module")
def small_caffemodels(tmp_path_factory) -> list[bytes]:
    """A small net as V1 layers with legacy shapes and unpacked data, and as new-style layers
    with BlobShapes and packed data."""
    layers = [CaffeLayer("conv", "Convolution", [_values(2, 1, 2, 2), _values(2)]),
              CaffeLayer("relu", "ReLU", []),
              CaffeLayer("ip", "InnerProduct", [_values(3, 2, seed=5)])]
    folder = tmp_path_factory.mktemp("caffe")
    return [write_caffemodel(folder / "v1.caffemodel", "small", layers, packed=False).read_bytes(),
            write_caffemodel(folder / "new.caffemodel", "small", layers, v1=False,
                             legacy_shape=False).read_bytes()]


def test_caffemodel_cut_at_every_byte(tmp_path, small_caffemodels):
    for data in small_caffemodels:
        rejected = sum(_reads_as_damaged(tmp_path, data[:n], read_caffemodel,
                                         ["conv", "relu", "ip"]) for n in range(len(data)))
        assert rejected == len(data) - 2  # only the cuts after layers 1 and 2 read


@FUZZ
@given(data=st.binary(max_size=2000))
def test_caffemodel_random_bytes(tmp_path_factory, data):
    _reads_as_damaged(tmp_path_factory.getbasetemp(), data, read_caffemodel)


@FUZZ
@given(data=st.data())
def test_caffemodel_mutated(tmp_path_factory, small_caffemodels, data):
    seed = small_caffemodels[data.draw(st.integers(0, 1))]
    _reads_as_damaged(tmp_path_factory.getbasetemp(), data.draw(_mutations(seed)), read_caffemodel)


# --- MatConvNet ----------------------------------------------------------------------------

def _matconvnet_model() -> MatConvNetModel:
    layers = [
        MatConvNetLayer("conv1", "conv", [_values(3, 3, 3, 4), _values(4, seed=1)],
                        {"stride": 4, "pad": [0, 1, 0, 1]}),
        MatConvNetLayer("relu1", "relu", []),
        MatConvNetLayer("norm1", "normalize", [], {"param": [5.0, 1.0, 2e-05, 0.75]}),
        MatConvNetLayer("pool1", "pool", [], {"method": "max", "pool": [3, 3], "stride": 2}),
        MatConvNetLayer("fc8", "conv", [_values(1, 1, 4, 2, seed=2), _values(2, seed=3)]),
        MatConvNetLayer("", "softmax", []),
    ]
    return MatConvNetModel(layers, _values(5, 6, 3, seed=4), (227, 227, 3))


@pytest.mark.parametrize("style", ["new", "old"])
@pytest.mark.parametrize("net_variable", [False, True], ids=["variables", "net"])
def test_matconvnet_round_trip(tmp_path, style, net_variable):
    model = _matconvnet_model()
    got = read_matconvnet(write_matconvnet(tmp_path / "m.mat", model, style, net_variable))
    names = [x.name or f"layer{i + 1}" for i, x in enumerate(model.layers)]
    assert [x.name for x in got.layers] == names and names[-1] == "layer6"
    assert [x.type for x in got.layers] == [x.type for x in model.layers]
    for want, have in zip(model.layers, got.layers):
        assert have.attributes == want.attributes
        assert len(have.params) == len(want.params)
        for a, b in zip(want.params, have.params):
            assert b.dtype == np.float32 and b.shape == a.shape and b.flags.writeable
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got.average_image, model.average_image)
    assert got.image_size == (227, 227, 3)
    stored = scipy.io.loadmat(tmp_path / "m.mat")
    layers = (stored["net"][0, 0]["layers"] if net_variable else stored["layers"])
    conv = layers[0, 0][0, 0]
    filters = conv["weights"][0, 0] if style == "new" else conv["filters"]
    assert filters.shape == (3, 3, 3, 4)  # H x W x Cin x Cout, as MATLAB indexes it
    assert filters[2, 1, 0, 3] == model.layers[0].params[0][2, 1, 0, 3]


def test_matconvnet_as_matlab_saves_it(tmp_path):
    """MATLAB drops trailing singleton dimensions, may store biases as a column, layers as a
    struct array, and the average image as a 1x3 colour or a [0 0] placeholder."""
    layer = np.zeros((1, 3), dtype=[("type", object), ("name", object), ("filters", object),
                                    ("biases", object)])
    layer[0, 0] = ("conv", "fc", _values(1, 1, 6), np.array([[0.5]], np.float32))
    layer[0, 1] = ("conv", "c", _values(2, 2, 1, 3), np.array([[1.0], [2.0], [3.0]]))
    layer[0, 2] = ("softmax", "", np.zeros((0, 0)), np.zeros((0, 0)))
    for average, expected in (([[1.0, 2.0, 3.0]], [[[1.0, 2.0, 3.0]]]), ([[0.0, 0.0]], None)):
        path = tmp_path / "matlab.mat"
        scipy.io.savemat(path, {"layers": layer,
                                "normalization": {"averageImage": np.array(average)}})
        model = read_matconvnet(path)
        assert [x.name for x in model.layers] == ["fc", "c", "layer3"]
        filters, biases = model.layers[0].params
        assert filters.shape == (1, 1, 6, 1) and biases.tolist() == [0.5]
        assert model.layers[1].params[1].tolist() == [1.0, 2.0, 3.0]
        assert model.layers[2].params == []
        if expected is None:
            assert model.average_image is None
        else:
            assert model.average_image.tolist() == expected
        assert model.image_size is None


def _mat_element(order: str, kind: int, payload: bytes) -> bytes:
    """A MAT v5 data element: (type, byte count) tag, then the payload padded to 8 bytes; a
    payload of at most 4 bytes as a small data element (count << 16 | type, then the data)."""
    if len(payload) <= 4:
        return struct.pack(order + "I", len(payload) << 16 | kind) + payload.ljust(4, b"\0")
    return struct.pack(order + "II", kind, len(payload)) + payload + bytes(-len(payload) % 8)


def _mat_array(order: str, mclass: int, dims: tuple, name: bytes, *data: bytes) -> bytes:
    """An miMATRIX (14): array flags (miUINT32, 6), dimensions (miINT32, 5), name (miINT8, 1)."""
    return _mat_element(order, 14, _mat_element(order, 6, struct.pack(order + "II", mclass, 0))
                        + _mat_element(order, 5, struct.pack(f"{order}{len(dims)}i", *dims))
                        + _mat_element(order, 1, name) + b"".join(data))


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
def test_hand_built_mat_file(tmp_path, order, compressed):
    """A file encoded byte by byte from the MAT-file v5 spec, as MATLAB writes it: text as
    UTF-16 (miUINT16, 4) or a small UTF-8 element (16), doubles stored as miUINT8 (2), trailing
    singleton dimensions dropped, layers a 1x1 cell holding a 1x1 struct."""
    utf16 = "utf-16-le" if order == "<" else "utf-16-be"
    fields = (b"type", b"name", b"filters", b"biases")
    layer = _mat_array(
        order, 2, (1, 1), b"",                                                   # struct (2)
        _mat_element(order, 5, struct.pack(order + "i", 8)),                     # name width 8
        _mat_element(order, 1, b"".join(f.ljust(8, b"\0") for f in fields)),
        _mat_array(order, 4, (1, 4), b"", _mat_element(order, 4, "conv".encode(utf16))),
        _mat_array(order, 4, (1, 2), b"", _mat_element(order, 16, b"fc")),
        _mat_array(order, 6, (1, 1, 2), b"", _mat_element(order, 2, bytes([3, 200]))),
        _mat_array(order, 7, (1, 1), b"", _mat_element(order, 7, struct.pack(order + "f", 0.5))))
    variable = _mat_array(order, 1, (1, 1), b"layers", layer)                   # cell (1)
    if compressed:
        z = zlib.compress(variable)
        variable = struct.pack(order + "II", 15, len(z)) + z                    # miCOMPRESSED
    header = b"MATLAB 5.0 MAT-file, written by hand".ljust(124) + struct.pack(order + "H", 0x0100)
    path = tmp_path / "hand.mat"
    path.write_bytes(header + (b"IM" if order == "<" else b"MI") + variable)
    model = read_matconvnet(path)
    (conv,) = model.layers
    assert (conv.name, conv.type, conv.attributes) == ("fc", "conv", {})
    filters, biases = conv.params
    assert filters.shape == (1, 1, 2, 1) and filters.ravel().tolist() == [3.0, 200.0]
    assert biases.tolist() == [0.5]
    assert model.average_image is None and model.image_size is None


def test_compressed_variable_is_inflated_no_further_than_declared(tmp_path):
    """A variable whose tag declares 8 bytes but whose zlib stream holds 10 MB: read no further."""
    inner = struct.pack("<II", 14, 8) + bytes(10_000_000)
    z = zlib.compress(inner)
    path = tmp_path / "bomb.mat"
    path.write_bytes(b"MATLAB 5.0".ljust(124) + b"\x00\x01IM" + struct.pack("<II", 15, len(z)) + z)
    tracemalloc.start()
    with pytest.raises(WeightsError, match="compressed element at byte 128"):
        read_matconvnet(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * len(z) + 1_000_000


def test_matconvnet_v73_file_says_how_to_resave(tmp_path):
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5"
    path = tmp_path / "imagenet-caffe-ref.mat"
    path.write_bytes(header.ljust(512, b" ") + b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(WeightsError, match=r"v7\.3 \(HDF5\).*'-v7'") as e:
        read_matconvnet(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("variables, problem", [
    ({"foo": np.ones(3)}, "no 'layers'"),
    ({"net": np.ones(3)}, "'net' is not a struct"),
    ({"layers": np.ones((1, 2))}, "'layers' is empty or not a cell array"),
    ({"layers": np.array([[{"name": "x"}]], dtype=object)}, "layer 1 has no type"),
    ({"layers": np.array([[{"type": 3.0}]], dtype=object)}, "type of layer 1 is not a text"),
    ({"layers": np.array([[{"type": "conv", "filters": "abc"}]], dtype=object)}, "not a real"),
    ({"layers": np.array([[{"type": "conv", "filters": np.ones((2, 2, 1, 3)),
                            "biases": np.ones(2)}]], dtype=object)}, "2 biases for 3 filters"),
    ({"layers": np.array([[{"type": "pool", "pad": {"a": 1}}]], dtype=object)}, "the pad of"),
])
def test_malformed_matconvnet(tmp_path, variables, problem):
    path = tmp_path / "bad.mat"
    scipy.io.savemat(path, variables)
    with pytest.raises(WeightsError, match="re-download") as e:
        read_matconvnet(path)
    assert str(path) in str(e.value) and problem in str(e.value)


def test_foreign_files_are_not_matconvnet(tmp_path, small_caffemodels):
    torch.save({"w": torch.ones(3)}, tmp_path / "model.pth")
    (tmp_path / "empty.mat").write_bytes(b"")
    (tmp_path / "net.caffemodel").write_bytes(small_caffemodels[0])
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    for name in ("model.pth", "empty.mat", "net.caffemodel", "image.png", "missing.mat"):
        with pytest.raises(WeightsError, match="re-download") as e:
            read_matconvnet(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)


@pytest.fixture(scope="module")
def small_mats(tmp_path_factory) -> list[bytes]:
    """A small model file as written (compressed, as MATLAB saves) and uncompressed, where
    damage hits the structure rather than the zlib stream."""
    folder = tmp_path_factory.mktemp("mat")
    model = MatConvNetModel(
        [MatConvNetLayer("conv", "conv", [_values(2, 2, 1, 2), _values(2)], {"stride": 1}),
         MatConvNetLayer("pool", "pool", [], {"method": "max", "pad": [0, 1, 0, 1]})],
        _values(1, 1, 3), (8, 8, 1))
    compressed = write_matconvnet(folder / "c.mat", model)
    variables = {k: v for k, v in scipy.io.loadmat(compressed).items() if not k.startswith("__")}
    scipy.io.savemat(folder / "u.mat", variables)
    return [compressed.read_bytes(), (folder / "u.mat").read_bytes()]


def test_matconvnet_cut_at_every_byte(tmp_path, small_mats):
    for data in small_mats:
        for n in range(len(data)):
            _reads_as_damaged(tmp_path, data[:n], read_matconvnet, ["conv", "pool"])


@FUZZ
@given(data=st.binary(max_size=2000))
def test_matconvnet_random_bytes(tmp_path_factory, data):
    _reads_as_damaged(tmp_path_factory.getbasetemp(), data, read_matconvnet)


@FUZZ
@given(data=st.data())
def test_matconvnet_mutated(tmp_path_factory, small_mats, data):
    seed = small_mats[data.draw(st.integers(0, 1))]
    _reads_as_damaged(tmp_path_factory.getbasetemp(), data.draw(_mutations(seed)), read_matconvnet)


def _cell(*items):
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


_MATLAB_VALUES = st.one_of(
    st.text("ab 1", max_size=5), st.floats(allow_nan=True), st.integers(-5, 300),
    st.lists(st.floats(-10, 10), max_size=5).map(lambda v: np.array(v, float).reshape(1, -1)),
    st.tuples(*[st.integers(0, 3)] * 4).map(lambda s: np.ones(s, np.float32)),
    st.just(np.zeros((0, 0))), st.just({"a": 1.0}), st.just(np.array([["ab"], ["cd"]])),
    st.just(_cell()), st.just(_cell("ab", {"a": 1.0})), st.just(_cell(np.ones((2, 2, 1, 2)))),
    st.just(_cell(np.ones((2, 2, 1, 2)), np.ones(2))))


@settings(FUZZ, max_examples=200)  # each example runs scipy.io.savemat
@given(fields=st.lists(st.dictionaries(
    st.sampled_from(["type", "name", "weights", "filters", "biases", "stride", "pad", "method",
                     "param"]),
    st.one_of(st.sampled_from(["conv", "pool", "relu"]), _MATLAB_VALUES)), min_size=1, max_size=3),
    meta=st.dictionaries(st.sampled_from(["averageImage", "imageSize"]), _MATLAB_VALUES))
def test_matconvnet_odd_field_values(tmp_path_factory, fields, meta):
    """Valid .mat files whose layer fields hold anything MATLAB can: read or WeightsError."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"layers": _cell(*fields), "meta": {"normalization": meta}})
    _reads_as_damaged(tmp_path_factory.getbasetemp(), buffer.getvalue(), read_matconvnet)
