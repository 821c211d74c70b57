"""HOGgle, the paper's baseline: HOG inverted by a paired dictionary (after Vondrick, Khosla,
Malisiewicz and Torralba, "HOGgles: Visualizing Object Detection Features", ICCV 2013).

A dictionary is learnt on pairs (HOG window of P×P cells, the grayscale patch under it), each half
normalised to unit norm and the two concatenated, so that both halves share one sparse code.
To invert, every P×P window of a HOG code is sparse-coded against the HOG half and replaced by
the image half of the same combination; overlapping patches are averaged. Not an optimisation:
nothing here matches the code exactly, which is why its error in Table 1 is the largest.

Train (a few minutes on 2 CPU cores; writes the package's data/hoggle/dictionary.npz and a .json
beside it) from the repository:

    python tools/train_hoggle.py

The training images are scikit-image's bundled photos listed in TRAINING_IMAGES, none of them
an image the notebooks test on.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import images
from ..atomic import atomic_path, write_json
from ..errors import PreimageError

DICTIONARY = images.data_file("hoggle", "dictionary.npz")
# scikit-image's bundled photographs that are not among data/images (motorcycle_right is left out:
# it is the other half of the shipped motorcycle_left's stereo pair).
TRAINING_IMAGES = ("camera", "brick", "grass", "gravel", "coins", "moon", "hubble_deep_field",
                   "retina", "immunohistochemistry", "page", "text", "cell")


@dataclass
class PairedDictionary:
    hog: np.ndarray  # (K, P*P*27): HOG halves of the atoms
    image: np.ndarray  # (K, (cell*P)^2): image halves
    cells: int  # P, window side in cells
    cell_size: int  # pixels per cell
    sparsity: int  # non-zeros per code (orthogonal matching pursuit)
    meta: dict

    @property
    def patch(self) -> int:
        return self.cells * self.cell_size

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, hog=self.hog.astype(np.float16), image=self.image.astype(np.float16),
                                    cells=self.cells, cell_size=self.cell_size, sparsity=self.sparsity)
        write_json(path.with_suffix(".json"), self.meta)

    @classmethod
    def load(cls, path: Path = DICTIONARY) -> "PairedDictionary":
        if not Path(path).is_file():
            raise PreimageError(f"no HOGgle dictionary at {path}; train one with `python tools/train_hoggle.py` in the repository")
        with np.load(path) as z:
            meta_path = Path(path).with_suffix(".json")
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            return cls(z["hog"].astype(np.float32), z["image"].astype(np.float32), int(z["cells"]),
                       int(z["cell_size"]), int(z["sparsity"]), meta)


def _hog_rep():
    from ..representations import get
    return get("hog")


def _codes(rep, gray: np.ndarray) -> np.ndarray:
    """(h, w, D) HOG cells of a (H, W) grayscale image in 0..255."""
    x = torch.as_tensor(gray, dtype=torch.float32)[None, None] - rep.mean[0]
    with torch.no_grad():
        return rep(x)[0].permute(1, 2, 0).numpy()


def _cell_origin(rep) -> float:
    """Input pixel where cell 0's patch starts: its centre less half a cell."""
    rf = rep.receptive_field
    return rf.offset - (rf.stride - 1) / 2


def windows(code: np.ndarray, cells: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Every cells×cells window of an (h, w, D) code as unit-norm rows, and their top-left cells."""
    h, w, _ = code.shape
    pos = [(i, j) for i in range(h - cells + 1) for j in range(w - cells + 1)]
    rows = np.stack([code[i:i + cells, j:j + cells].ravel() for i, j in pos]) if pos else np.zeros((0, 0))
    return _unit(rows), pos


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-8)


def training_pairs(grays: list[np.ndarray], cells: int, per_image: int, seed: int) -> np.ndarray:
    """Rows [HOG window, image patch], each half of unit norm, sampled from ``grays``."""
    rep = _hog_rep()
    stride = rep.receptive_field.stride
    origin = _cell_origin(rep)
    rng = np.random.default_rng(seed)
    rows = []
    for gray in grays:
        code = _codes(rep, gray)
        hogs, pos = windows(code, cells)
        patches, keep = [], []
        for k, (i, j) in enumerate(pos):
            top, left = int(round(origin + i * stride)), int(round(origin + j * stride))
            if top < 0 or left < 0 or top + cells * stride > gray.shape[0] or left + cells * stride > gray.shape[1]:
                continue
            p = gray[top:top + cells * stride, left:left + cells * stride].astype(np.float32).ravel()
            p = p - p.mean()
            if np.linalg.norm(p) < 1e-3:
                continue  # flat patches carry no gradient and no HOG
            patches.append(p)
            keep.append(k)
        take = rng.permutation(len(keep))[:per_image]
        rows.append(np.hstack([hogs[np.array(keep)[take]], _unit(np.stack(patches)[take])]))
    return np.vstack(rows)


def train(grays: list[np.ndarray], atoms: int = 256, cells: int = 4, per_image: int = 3000,
          sparsity: int = 5, seed: int = 0, meta: dict | None = None) -> PairedDictionary:
    from sklearn.decomposition import MiniBatchDictionaryLearning

    t0 = time.perf_counter()
    pairs = training_pairs(grays, cells, per_image, seed)
    learner = MiniBatchDictionaryLearning(n_components=atoms, alpha=0.1, batch_size=256, max_iter=10,
                                          random_state=seed, transform_algorithm="omp")
    atoms_ = learner.fit(pairs).components_
    split = cells * cells * _hog_rep().info.channels
    meta = {"atoms": atoms, "cells": cells, "pairs": int(len(pairs)), "per_image": per_image,
            "sparsity": sparsity, "seed": seed, "train_time_s": round(time.perf_counter() - t0, 1),
            **(meta or {})}
    return PairedDictionary(atoms_[:, :split], atoms_[:, split:], cells, _hog_rep().receptive_field.stride,
                            sparsity, meta)


def invert(code: np.ndarray, image_size: tuple[int, int], dictionary: PairedDictionary | None = None) -> np.ndarray:
    """A (H, W) grayscale image (arbitrary contrast, zero mean) whose HOG resembles ``code``
    (h, w, 27), by sparse coding every window against the dictionary's HOG half."""
    from sklearn.decomposition import sparse_encode

    d = dictionary or PairedDictionary.load()
    rep = _hog_rep()
    stride, origin = rep.receptive_field.stride, _cell_origin(rep)
    hogs, pos = windows(code, d.cells)
    if not pos:
        raise PreimageError(f"a HOG code of {code.shape[0]}x{code.shape[1]} cells is smaller than the "
                            f"HOGgle window of {d.cells}x{d.cells} cells")
    norms = np.linalg.norm(d.hog, axis=1, keepdims=True)
    alpha = sparse_encode(hogs, d.hog / np.maximum(norms, 1e-8), algorithm="omp",
                          n_nonzero_coefs=d.sparsity) / np.maximum(norms.T, 1e-8)
    patches = alpha @ d.image
    H, W = image_size
    acc, weight = np.zeros((H, W)), np.zeros((H, W))
    n = d.patch
    for (i, j), p in zip(pos, patches):
        top, left = int(round(origin + i * stride)), int(round(origin + j * stride))
        t0, l0 = max(top, 0), max(left, 0)
        t1, l1 = min(top + n, H), min(left + n, W)
        if t1 <= t0 or l1 <= l0:
            continue
        acc[t0:t1, l0:l1] += p.reshape(n, n)[t0 - top:t1 - top, l0 - left:l1 - left]
        weight[t0:t1, l0:l1] += 1
    return np.where(weight > 0, acc / np.maximum(weight, 1), 0.0)


def to_gray255(rgb: np.ndarray) -> np.ndarray:
    return images.to_input(rgb, (0.0,))[0, 0].numpy()


def training_images() -> list[tuple[str, np.ndarray]]:
    try:
        from skimage import data
    except ImportError:
        raise PreimageError("training HOGgle needs scikit-image's bundled images: pip install scikit-image") from None
    out = []
    for name in TRAINING_IMAGES:
        im = np.asarray(getattr(data, name)())
        rgb = np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im[..., :3]
        out.append((name, to_gray255(rgb.astype(np.uint8))))
    return out
