"""Inversions computed once: an item (one image, setting and restart at one layer) that a chapter
asks for is read back when any chapter computed it before, instead of being computed again.

An item is known by everything its numbers depend on: the representation (model, weights, layer),
the input image's bytes, the setting, the recipe (schedule, optimiser, pixel range, stages,
parameterisation), the seed and restart, the device kind, torch's version and the library's own
source. Items start from noise fixed by (seed, restart) alone, so an item does not depend on what
else shared its batch, to float32 reordering. Figures 7, 8, 11 and 6 and chapter 10 ask for some
of the same items (e.g. fc8 at λ_TV = 100, restart 0, on chelsea).

They are stored in $PREIMAGE_CACHE/inversions (see ``natural.cache_dir``); $PREIMAGE_REUSE=0
turns reuse off.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path, write_json
from ..engine.results import TERMS
from .natural import cache_dir

ENV = "PREIMAGE_REUSE"


@functools.cache
def library_version() -> str:
    """A hash of the package's source: a change anywhere in it makes every stored item stale."""
    h = hashlib.sha256()

    def walk(folder, prefix: str) -> None:
        for item in sorted(folder.iterdir(), key=lambda t: t.name):
            if item.is_dir():
                walk(item, f"{prefix}{item.name}/")
            elif item.name.endswith(".py"):
                h.update(f"{prefix}{item.name}".encode())
                h.update(item.read_bytes())
    walk(importlib.resources.files("preimage"), "")
    return h.hexdigest()[:16]


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip() != "0"


def digest(image: torch.Tensor) -> str:
    """A hash of one input image's values."""
    return hashlib.sha256(image.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


def item_key(rep, image: str, setting: dict, recipe: dict, seed: int, restart: int, device: torch.device) -> str:
    """The name of one item: a hash of everything its reconstruction depends on (``image``: the
    input's ``digest``)."""
    what = {"representation": rep.describe(), "image": image, "setting": setting, "recipe": recipe, "seed": seed,
            "restart": restart, "device": device.type, "torch": torch.__version__, "library": library_version()}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class Item:
    """One stored reconstruction: the image (C, H, W), its energies per term (iterations,), its
    error, and the provenance of the run that computed it."""

    x: np.ndarray
    energies: dict[str, np.ndarray]
    error: float
    provenance: dict


class Store:
    """Items on disk, one .npz and one .json per key, each written atomically."""

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder is not None else cache_dir() / "inversions"

    def load(self, key: str) -> Item | None:
        npz, js = self.folder / f"{key}.npz", self.folder / f"{key}.json"
        try:
            with np.load(npz) as z:
                arrays = {k: z[k] for k in z.files}
            provenance = json.loads(js.read_text())
        except (OSError, ValueError, KeyError):  # absent, or half of a pair another process is writing
            return None
        return Item(arrays["x"], {t: arrays[f"energy_{t}"] for t in TERMS}, float(arrays["error"]), provenance)

    def save(self, key: str, item: Item) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / f"{key}.json", item.provenance)
        with atomic_path(self.folder / f"{key}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, x=item.x, error=np.float32(item.error),
                         **{f"energy_{t}": v for t, v in item.energies.items()})
