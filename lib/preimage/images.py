"""Reading images, converting them to RGB, resizing, and the display stretch."""
from __future__ import annotations

import io
import math
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

SUFFIXES = (".png", ".jpg", ".jpeg")  # what a folder of images is read for


def data_file(*parts: str) -> Path:
    """A file shipped in the package's data folder (images, the HOGgle dictionary), wherever the
    package is installed."""
    return Path(str(resources.files("preimage").joinpath("data", *parts)))


def shipped() -> dict[str, Path]:
    """The images shipped with the package, by stem (lib/preimage/data/README.md gives their licences)."""
    folder = data_file("images")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in SUFFIXES} if folder.is_dir() else {}


def resolve(name_or_path: str | Path) -> Path:
    """A path, or the stem of a shipped image ('astronaut', 'chelsea', ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image file; give the path of one image")
    if path.is_symlink():
        raise ImageError(f"{path} is a symbolic link that leads to no file (a loop, or a missing target); "
                         f"give the path of the image itself")
    images = shipped()
    if str(name_or_path) in images:
        return images[str(name_or_path)]
    raise ImageError(f"image {str(name_or_path)!r} not found: give the path of an image file or the "
                     f"name of a shipped image ({', '.join(images) or 'none found'})")


def load(name_or_path: str | Path) -> tuple[np.ndarray, list[str]]:
    """An image as an RGB uint8 array (H, W, 3) and the conversions made on the way, in words."""
    path = resolve(name_or_path)
    return _read(path, path)


def decode(data: bytes, name: str = "the upload") -> tuple[np.ndarray, list[str]]:
    """``load`` for the bytes of an image file (an upload); ``name`` is what messages call it."""
    return _read(io.BytesIO(bytes(data)), name)


def _read(source, name) -> tuple[np.ndarray, list[str]]:
    try:
        with Image.open(source) as im:
            im.load()
            notes = []
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                notes.append(f"used the first of its {frames} frames")
            orientation = im.getexif().get(0x0112, 1)  # the EXIF Orientation tag
            if orientation not in (1, None):
                im = ImageOps.exif_transpose(im)
                notes.append(f"turned upright by its EXIF orientation ({orientation})")
            rgb, converted = to_rgb(im)
            return rgb, notes + converted
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot read {name} as an image ({e}); use a PNG, JPEG, TIFF, BMP or "
                         f"another format Pillow reads") from None


def to_rgb(im: Image.Image) -> tuple[np.ndarray, list[str]]:
    notes = []
    if im.mode == "F":  # floating point: by its range, whatever the scale it was saved in
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ImageError("the image holds NaN or infinite values; save it without them")
        lo, hi = float(a.min()), float(a.max())
        if 0 <= lo and hi <= 1:
            a, how = a * 255, "multiplying its 0..1 values by 255"
        else:
            a, how = (a - lo) / max(hi - lo, 1e-12) * 255, f"stretching its range {lo:g}..{hi:g} to 0..255"
        notes.append(f"converted the floating-point image to 8 bits by {how}")
        im = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
    elif im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        notes.append(f"converted {im.mode} (high bit depth) to 8 bits by dividing by {top / 255:g}")
        a = np.clip(np.round(a / top * 255), 0, 255).astype(np.uint8)
        im = Image.fromarray(a, "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        notes.append(f"composited the {im.mode} image's transparency over white")
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    elif im.mode in ("L", "1"):
        notes.append("converted grayscale to RGB by repeating the channel")
    elif im.mode == "P":
        notes.append("converted the palette (P) image to RGB")
    elif im.mode != "RGB":
        notes.append(f"converted {im.mode} to RGB")
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy(), notes


def fit(rgb: np.ndarray, size: int | tuple[int, int] | None, mode: str = "crop") -> np.ndarray:
    """Resize to ``size`` (an int for a square). ``crop`` takes the central square (or aspect)
    first; ``warp`` stretches like the reference code's imresize."""
    if size is None:
        return np.array(rgb)
    h, w = (size, size) if isinstance(size, int) else size
    im = Image.fromarray(rgb)
    if mode == "crop":
        H, W = rgb.shape[:2]
        scale = min(H / h, W / w)
        ch, cw = round(h * scale), round(w * scale)
        top, left = (H - ch) // 2, (W - cw) // 2
        im = im.crop((left, top, left + cw, top + ch))
    elif mode != "warp":
        raise ValueError(f"fit mode must be 'crop' or 'warp', not {mode!r}")
    return np.array(im.resize((w, h), Image.BICUBIC), dtype=np.uint8)


def load_many(names: list[str], size: int | tuple[int, int] | None) -> tuple[np.ndarray, list[str]]:
    """(N, H, W, 3) uint8 images fitted to ``size`` (centre crop), and what loading noticed."""
    notes, rgbs = [], []
    for name in names:
        rgb, found = load(name)
        notes += [f"{name}: {n}" for n in found]
        rgbs.append(fit(rgb, size))
    return np.stack(rgbs), notes


MAX_UPSCALE = 4.0  # more than this, and the image is refused unless a size is asked for explicitly


def check_scale(shape: tuple[int, int], size: int | tuple[int, int] | None, what: str, explicit: bool) -> list[str]:
    """Refuse a source image that fitting to the default ``size`` would enlarge more than
    ``MAX_UPSCALE`` times; with a size asked for (``explicit``) the enlargement is only noted.
    (An image used at its own size meets the layer's receptive field or not:
    ``Representation.check_image_size`` says.)"""
    h, w = shape
    if size is None:
        return []
    th, tw = (size, size) if isinstance(size, int) else size
    factor = max(th / h, tw / w) if min(h, w) > 0 else math.inf
    if factor <= MAX_UPSCALE:
        return []
    if not explicit:
        raise ImageError(f"a {h}x{w} image would be enlarged {factor:.0f}x to {th}x{tw} for {what}; use a "
                         f"larger image, or ask for the size explicitly (--size {th}) to enlarge it anyway")
    return [f"enlarged {factor:.1f}x from {h}x{w} to {th}x{tw}, as asked"]


GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # MATLAB's rgb2gray, as the reference code used


def to_input(rgb: np.ndarray, mean) -> torch.Tensor:
    """(1, C, H, W) float32 mean-subtracted pixels (0..255 scale) from an (H, W, 3) array; a
    one-value ``mean`` asks for a grayscale input (the shallow representations' 255·gray − 128)."""
    x = torch.as_tensor(np.asarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    if len(mean) == 1 and x.shape[1] == 3:
        x = (x * torch.tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return x - torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)


def to_pixels(x, mean) -> np.ndarray:
    """(N, H, W, 3) float pixels (0..255 scale, unclipped) from mean-subtracted (N, C, H, W);
    grayscale is repeated into three channels so that every consumer gets RGB."""
    x = torch.as_tensor(x).detach().float().cpu()
    x = x + torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    return x.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy().copy()


def stretch(pixels: np.ndarray) -> np.ndarray:
    """Min-max stretch of each image to [0, 1] for display, as the paper's saved figures do."""
    p = np.asarray(pixels, dtype=np.float32)
    axes = tuple(range(p.ndim - 3, p.ndim))
    lo, hi = p.min(axis=axes, keepdims=True), p.max(axis=axes, keepdims=True)
    return (p - lo) / np.maximum(hi - lo, 1e-12)


def save_png(path: str | Path, image01: np.ndarray) -> None:
    """Write a [0, 1] (H, W, C) image as an 8-bit PNG, atomically."""
    from .atomic import atomic_path
    with atomic_path(path) as tmp:
        Image.fromarray(np.round(np.clip(image01, 0, 1) * 255).astype(np.uint8)).save(tmp, format="PNG")
