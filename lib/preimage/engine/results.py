"""InversionResult (reconstructions, energy curves, errors, provenance; saved as npz + json) and
the one provenance schema every JSON the project writes follows.

A record (``record``) says what made a result, a figure or a table: the model and weights, the
images, the profile, and per run (``describe_run``, one per layer or method) the representation,
λ, β, schedule, iterations, optimiser, seed, device, time and errors, with the versions, the date
and the machine. ``check_record`` lists what a record lacks; the tests run it on every JSON the
command line and the notebooks write.
"""
from __future__ import annotations

import datetime
import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__, images
from ..atomic import atomic_path, write_json

TERMS = ("loss", "tv", "alpha", "total")
SCHEMA = "preimage-provenance-1"
KINDS = ("result", "figure", "table", "item")
# What every record and every run in it holds (name: type); records may hold more.
RECORD_FIELDS = {"schema": str, "kind": str, "model": str, "weights": str, "trained": bool, "images": (list, type(None)),
                 "profile": (str, type(None)), "runs": dict, "versions": dict, "written": str, "machine": str}
RUN_FIELDS = {"representation": dict, "label": str, "image_size": list, "settings": list, "schedule": list,
              "iterations": int, "optimizer": str, "seed": int, "device": str, "pixel_range": bool,
              "time_s": (int, float), "error": list, "date": str}
REPRESENTATION_FIELDS = {"model": str, "layer": (str, type(None)), "weights": str, "trained": bool}
SETTING_FIELDS = {"lambda_tv": (int, float), "beta": (int, float), "lambda_l2": (int, float), "alpha": (int, float)}


def versions() -> dict:
    import torch

    return {"preimage": __version__, "torch": torch.__version__, "python": platform.python_version()}


def weights_label(weights: str, trained: bool) -> str:
    """How titles and records name the weights: random ones always say "untrained"."""
    return weights if trained else f"{weights} weights, untrained"


def describe_run(rep, **fields) -> dict:
    """An InversionResult's ``provenance``: the representation and every setting of the run."""
    if fields.get("shared_run") is None:
        fields.pop("shared_run", None)  # present only for layers inverted together (time_s is the run's)
    return {"representation": rep.describe(), "label": rep.label, **fields, "versions": versions(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def record(runs: Mapping[str, "InversionResult | dict"], *, kind: str, image_names: list[str] | None = None,
           profile: str | None = None, **extra) -> dict:
    """The provenance record of a result, figure or table made from ``runs`` ({name: an
    InversionResult, or a run already described as one}): what every JSON the project writes holds."""
    described = {name: r.run_record() if isinstance(r, InversionResult) else dict(r) for name, r in runs.items()}
    reps = [r["representation"] for r in described.values()]
    models = list(dict.fromkeys(r["model"] for r in reps))
    weights = list(dict.fromkeys(weights_label(r["weights"], r["trained"]) for r in reps))
    if image_names is None:
        image_names = next((r.get("images") for r in described.values() if r.get("images")), None)
    out = {"schema": SCHEMA, "kind": kind, "model": ", ".join(models), "weights": "; ".join(weights),
           "trained": all(r["trained"] for r in reps),
           "images": list(image_names) if image_names is not None else None,
           "profile": profile, "runs": described, **extra, "versions": versions(),
           "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": f"{platform.node()} ({platform.machine()})"}
    problems = check_record(out)
    if problems:
        raise ValueError(f"provenance record does not follow {SCHEMA}: {'; '.join(problems)}")
    return out


def check_record(rec) -> list[str]:
    """What ``rec`` lacks to follow the schema (empty when it follows it)."""
    if not isinstance(rec, dict):
        return [f"a record is a JSON object, not {type(rec).__name__}"]
    problems = _missing(rec, RECORD_FIELDS, "record")
    if rec.get("schema") not in (None, SCHEMA):
        problems.append(f"schema is {rec.get('schema')!r}, not {SCHEMA!r}")
    if isinstance(rec.get("kind"), str) and rec["kind"] not in KINDS:
        problems.append(f"kind {rec['kind']!r} is none of {', '.join(KINDS)}")
    runs = rec.get("runs")
    if isinstance(runs, dict):
        if not runs:
            problems.append("runs is empty")
        for name, run in runs.items():
            if not isinstance(run, dict):
                problems.append(f"run {name} is not an object")
                continue
            problems += _missing(run, RUN_FIELDS, f"run {name}")
            if isinstance(run.get("representation"), dict):
                problems += _missing(run["representation"], REPRESENTATION_FIELDS, f"run {name} representation")
            for i, setting in enumerate(run.get("settings") or []):
                problems += _missing(setting, SETTING_FIELDS, f"run {name} setting {i}")
    return problems


def _missing(obj: dict, fields: dict, where: str) -> list[str]:
    out = []
    for key, kind in fields.items():
        if key not in obj:
            out.append(f"{where} has no {key}")
        elif not isinstance(obj[key], kind) or (kind is int and isinstance(obj[key], bool)):
            out.append(f"{where}: {key} is {type(obj[key]).__name__}")
    return out


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

    def run_record(self) -> dict:
        """This run as a record holds it: its provenance with its time, errors and items."""
        return {**self.provenance, "time_s": float(self.time_s),
                "error": [round(float(e), 6) for e in self.error], "items": self.items.tolist()}

    def save(self, stem: str | Path, extra: dict | None = None) -> tuple[Path, Path]:
        """Write ``stem.npz`` (arrays) and ``stem.json`` (its ``record``, with ``extra`` keys),
        each atomically."""
        stem = Path(stem)
        npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
        with atomic_path(npz) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, x=self.x, error=self.error, items=self.items,
                                    **{f"energy_{k}": v for k, v in self.energies.items()})
        extra = dict(extra or {})
        write_json(js, record({self.provenance["label"]: self}, kind="result", image_names=self.provenance.get("images"),
                              profile=extra.pop("profile", None), **extra))
        return npz, js

    @classmethod
    def load(cls, stem: str | Path) -> "InversionResult":
        stem = Path(stem)
        run = next(iter(json.loads(stem.with_suffix(".json").read_text())["runs"].values()))
        with np.load(stem.with_suffix(".npz")) as z:
            energies = {k[len("energy_"):]: z[k] for k in z.files if k.startswith("energy_")}
            x, error, items = z["x"], z["error"], z["items"]
        provenance = {k: v for k, v in run.items() if k not in ("time_s", "error", "items")}
        return cls(x=x, mean=tuple(run["representation"]["mean"]), energies=energies, error=error, items=items,
                   time_s=run["time_s"], provenance=provenance)
