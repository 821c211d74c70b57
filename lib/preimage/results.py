"""InversionResult: reconstructions, energy curves, errors and provenance; saved as npz + json."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import images
from .atomic import atomic_path, write_json

TERMS = ("loss", "tv", "alpha", "total")


@dataclass
class InversionResult:
    """Item b of a batch is (image ``items[b, 0]``, setting ``items[b, 1]``, restart ``items[b, 2]``).

    ``x``: reconstructions, mean-subtracted, (B, C, H, W). ``energies[term]``: (iterations, B)
    for loss, tv, alpha and total, evaluated before each update. ``error``: final relative error
    ||Φ(x*)−Φ0|| / ||Φ0|| under each item's mask. ``provenance``: every setting of the run."""

    x: np.ndarray
    mean: tuple[float, ...]
    energies: dict[str, np.ndarray]
    error: np.ndarray
    items: np.ndarray
    time_s: float
    provenance: dict = field(default_factory=dict)

    @property
    def pixels(self) -> np.ndarray:
        """(B, H, W, C) raw pixels, 0..255 scale, unclipped."""
        return images.to_pixels(self.x, self.mean)

    def display(self) -> np.ndarray:
        """(B, H, W, C) in [0, 1], each image min-max stretched as in the paper's figures."""
        return images.stretch(self.pixels)

    def index(self, image: int = 0, setting: int = 0, restart: int = 0) -> int:
        """Batch position of one (image, setting, restart) item."""
        hits = np.flatnonzero((self.items == (image, setting, restart)).all(1))
        if not len(hits):
            raise IndexError(f"no item (image={image}, setting={setting}, restart={restart}) in this result")
        return int(hits[0])

    def summary(self) -> dict:
        return {"error": self.error.tolist(), "time_s": self.time_s,
                "settings": self.provenance.get("settings"), "items": self.items.tolist(),
                "mean": list(self.mean), "provenance": self.provenance}

    def save(self, stem: str | Path, extra: dict | None = None) -> tuple[Path, Path]:
        """Write ``stem.npz`` (arrays) and ``stem.json`` (errors, time, provenance, and ``extra``
        keys on top), each atomically."""
        stem = Path(stem)
        npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
        with atomic_path(npz) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, x=self.x, error=self.error, items=self.items,
                                    **{f"energy_{k}": v for k, v in self.energies.items()})
        write_json(js, {**self.summary(), **(extra or {})})
        return npz, js

    @classmethod
    def load(cls, stem: str | Path) -> "InversionResult":
        stem = Path(stem)
        meta = json.loads(stem.with_suffix(".json").read_text())
        with np.load(stem.with_suffix(".npz")) as z:
            energies = {k[len("energy_"):]: z[k] for k in z.files if k.startswith("energy_")}
            x, error, items = z["x"], z["error"], z["items"]
        return cls(x=x, mean=tuple(meta["mean"]), energies=energies, error=error, items=items,
                   time_s=meta["time_s"], provenance=meta["provenance"])
