"""Reading images of every common mode as RGB uint8, resizing, and the display stretch."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from preimage import images
from preimage.errors import ImageError


def _check_rgb(rgb, shape):
    assert isinstance(rgb, np.ndarray)
    assert rgb.dtype == np.uint8 and rgb.shape == (*shape, 3)


def test_load_rgb_needs_no_note(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(a, "RGB").save(tmp_path / "rgb.png")
    rgb, notes = images.load(tmp_path / "rgb.png")
    assert np.array_equal(rgb, a) and notes == []


def test_load_grayscale(tmp_path):
    a = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    Image.fromarray(a, "L").save(tmp_path / "gray.png")
    rgb, notes = images.load(str(tmp_path / "gray.png"))
    _check_rgb(rgb, (4, 5))
    for c in range(3):
        assert np.array_equal(rgb[..., c], a)
    assert len(notes) == 1 and "grayscale" in notes[0] and "RGB" in notes[0]


def test_load_rgba_composited_over_white(tmp_path):
    a = np.zeros((3, 4, 4), dtype=np.uint8)
    a[0, 0] = (10, 20, 30, 255)  # opaque: kept
    a[0, 1] = (10, 20, 30, 0)  # transparent: white
    a[0, 2] = (0, 0, 0, 128)  # half transparent black over white: about 127
    Image.fromarray(a, "RGBA").save(tmp_path / "rgba.png")
    rgb, notes = images.load(tmp_path / "rgba.png")
    _check_rgb(rgb, (3, 4))
    assert rgb[0, 0].tolist() == [10, 20, 30]
    assert rgb[0, 1].tolist() == [255, 255, 255]
    assert all(abs(v - 127) <= 1 for v in rgb[0, 2].tolist())
    assert len(notes) == 1 and "RGBA" in notes[0] and "transparency" in notes[0]


def test_load_16_bit(tmp_path):
    a = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # a real 16-bit PNG
    rgb, notes = images.load(tmp_path / "deep.png")
    _check_rgb(rgb, (1, 4))
    # Scaled from 0..65535 to 0..255, not clipped: 257 -> 1, 32768 -> 128, 65535 -> 255.
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    assert any("8 bits" in n for n in notes) and any("I;16" in n or "high bit depth" in n for n in notes)


def test_load_palette(tmp_path):
    im = Image.new("P", (3, 2))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    im.putdata([0, 1, 2, 2, 1, 0])
    im.save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "pal.png").mode == "P"
    rgb, notes = images.load(tmp_path / "pal.png")
    _check_rgb(rgb, (2, 3))
    assert rgb[0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    assert rgb[1].tolist() == [[0, 0, 255], [0, 255, 0], [255, 0, 0]]
    assert len(notes) == 1 and "palette" in notes[0] and "RGB" in notes[0]


def test_load_palette_with_transparency(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 0] + [0] * (256 * 3 - 6))
    im.putdata([0, 1])
    im.info["transparency"] = 1
    im.save(tmp_path / "palt.png", transparency=1)
    rgb, notes = images.load(tmp_path / "palt.png")
    assert rgb[0].tolist() == [[255, 0, 0], [255, 255, 255]]
    assert any("transparency" in n for n in notes)


def test_load_missing_file(tmp_path):
    with pytest.raises(ImageError) as e:
        images.load(tmp_path / "no_such_image.png")
    msg = str(e.value)
    assert "no_such_image.png" in msg and "not found" in msg
    assert "astronaut" in msg  # lists the shipped images one could name instead


def test_load_text_file_named_png(tmp_path):
    path = tmp_path / "fake.png"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError) as e:
        images.load(path)
    msg = str(e.value)
    assert f"cannot read {path} as an image" in msg and "PNG" in msg


def test_load_truncated_png(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 100).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot read"):
        images.load(tmp_path / "cut.png")


def test_load_by_shipped_name():
    rgb, notes = images.load("astronaut")
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert min(rgb.shape[:2]) >= 227


def test_shipped_lists_six_images():
    shipped = images.shipped()
    assert sorted(shipped) == ["astronaut", "chelsea", "coffee", "grace_hopper", "motorcycle_left", "rocket"]
    for name, path in shipped.items():
        assert path.is_file() and path.parent == images.data_file("images") and path.stem == name
        rgb, _ = images.load(name)
        assert rgb.dtype == np.uint8 and rgb.shape[2] == 3


def _wide():
    """100x200: left quarter red, rest gray."""
    a = np.full((100, 200, 3), 128, np.uint8)
    a[:, :50] = (255, 0, 0)
    return a


@pytest.mark.parametrize("size,shape", [(227, (227, 227)), (64, (64, 64)), ((50, 80), (50, 80))])
@pytest.mark.parametrize("mode", ["crop", "warp"])
def test_fit_gives_requested_size(size, shape, mode):
    out = images.fit(_wide(), size, mode)
    assert out.dtype == np.uint8 and out.shape == (*shape, 3)


def test_fit_crop_takes_centre_and_warp_keeps_everything():
    cropped = images.fit(_wide(), 50, "crop")
    warped = images.fit(_wide(), 50, "warp")
    red = lambda a: (a[..., 0] > 200) & (a[..., 1] < 50)  # noqa: E731
    # The central 100x100 square (columns 50..149) contains no red; the warp keeps the red quarter.
    assert not red(cropped).any()
    assert red(warped)[:, :10].all() and not red(warped)[:, 15:].any()
    assert images.fit(_wide(), None) is not None and images.fit(_wide(), None).shape == (100, 200, 3)
    with pytest.raises(ValueError, match="crop.*warp"):
        images.fit(_wide(), 50, "stretch")


def test_to_input_and_to_pixels_round_trip():
    rgb = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    mean = (123.68, 116.78, 103.94)
    x = images.to_input(rgb, mean)
    assert tuple(x.shape) == (1, 3, 6, 5) and x.dtype.is_floating_point
    assert x[0, 1, 2, 3].item() == pytest.approx(rgb[2, 3, 1] - mean[1], abs=1e-4)
    back = images.to_pixels(x, mean)
    assert back.shape == (1, 6, 5, 3)
    assert np.allclose(back[0], rgb, atol=1e-4)
    assert np.array_equal(np.round(back[0]).astype(np.uint8), rgb)


def test_stretch_per_image():
    rng = np.random.default_rng(2)
    p = np.stack([rng.normal(0, 1, (4, 5, 3)), rng.normal(500, 90, (4, 5, 3))])
    s = images.stretch(p)
    assert s.shape == p.shape
    for img, orig in zip(s, p):
        assert img.min() == pytest.approx(0) and img.max() == pytest.approx(1)
        # An affine map: order and ratios of differences are kept.
        assert np.allclose(img, (orig - orig.min()) / (orig.max() - orig.min()), atol=1e-6)
    single = images.stretch(p[1])
    assert single.min() == pytest.approx(0) and single.max() == pytest.approx(1)
    flat = images.stretch(np.full((3, 3, 3), 7.0))
    assert np.isfinite(flat).all() and (flat == 0).all()


def test_save_png(tmp_path):
    img = np.zeros((2, 3, 3))
    img[0, 0] = (1.0, 0.5, 2.0)  # above 1 is clipped
    images.save_png(tmp_path / "out.png", img)
    back = np.asarray(Image.open(tmp_path / "out.png"))
    assert back.shape == (2, 3, 3) and back[0, 0].tolist() == [255, 128, 255]
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary left behind
