"""Invert some images at some layers of one model: the loop every figure notebook shares.

All layers run as one batch through the network they share (``invert_at_layers``), or one
``invert`` call per layer where they cannot share it (e.g. torchvision:/timm: graphs); what varies
per layer (λ_TV by Fig. 6's blocks, the rates) comes from ``presets`` unless given.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from . import images as images_lib
from . import presets, representations
from .objective import Setting
from .optimise import invert, invert_at_layers
from .representations.base import weights_label
from .representations.shared import shareable
from .results import InversionResult

SettingsFor = Callable[[str], "Setting | list[Setting]"]


def load_images(names: list[str], size: int | tuple[int, int] | None) -> tuple[np.ndarray, list[str]]:
    """(N, H, W, 3) uint8 photos fitted to ``size`` (centre crop), and what loading noticed."""
    notes, rgbs = [], []
    for name in names:
        rgb, found = images_lib.load(name)
        notes += [f"{name}: {n}" for n in found]
        rgbs.append(images_lib.fit(rgb, size))
    return np.stack(rgbs), notes


def originals(result: InversionResult) -> np.ndarray:
    """(N, H, W, 3) in [0, 1]: the images ``result`` inverted (by the names it records)."""
    h, w = result.provenance["image_size"]
    rgbs, _ = load_images(result.provenance["images"], (h, w))
    return rgbs / 255.0


def invert_layers(model: str, layers: list[str], image_names: list[str], *, weights: str | None = None,
                  settings: SettingsFor | None = None, restarts: int = 1, profile: str = "quick",
                  schedule: presets.Schedule | None = None, optimizer: str = "sgd", seed: int = 0,
                  device: str = "auto", progress: bool = False, size: int | None = None,
                  batch_size: int | None = None, log: Callable[[str], None] | None = print
                  ) -> dict[str, InversionResult]:
    """``{layer: result}`` with every image inverted at every layer.

    ``settings(layer)`` gives the Setting(s) of a layer (default: λ_TV of Fig. 6's block). SGD
    runs ``schedule`` (default: the model's reference schedule) with the layer's rate scale
    (``presets.reference_schedule``, and ``presets.pixel_range_for``), Adam its own schedule,
    either as ``profile`` runs it. Images are centre-cropped to ``size`` (default: the model's input
    size). ``log`` gets one line per layer (None: silent)."""
    reps = [representations.get(model, layer, weights=weights, seed=seed) for layer in layers]
    rgbs, notes = load_images(image_names, size or reps[0].input_size)
    if log:
        for note in notes:  # conversions (grayscale, alpha, 16 bit) are said, never silent
            log(f"note: {note}")
    x0 = torch.cat([images_lib.to_input(rgb, reps[0].mean) for rgb in rgbs])
    schedules = [presets.schedule_for(profile, presets.ADAM if optimizer == "adam" else
                                      presets.reference_schedule(model, layer, schedule)) for layer in layers]
    chosen = [settings(layer) if settings else Setting(lambda_tv=presets.lambda_tv_for(model, layer))
              for layer in layers]
    common = dict(restarts=restarts, optimizer=optimizer, seed=seed, device=device, progress=progress,
                  batch_size=batch_size)
    ranges = [presets.pixel_range_for(model, layer) for layer in layers]
    if len(reps) > 1 and shareable(reps) is None:  # one run through the shared network
        runs = invert_at_layers(reps, x0, settings=chosen, schedules=schedules, pixel_range=ranges, **common)
    else:
        runs = [invert(rep, x0, settings=st, schedule=sch, pixel_range=pr, **common)
                for rep, st, sch, pr in zip(reps, chosen, schedules, ranges)]
    results = {}
    for layer, rep, result, sch in zip(layers, reps, runs, schedules):
        result.provenance["images"] = list(image_names)
        results[layer] = result
        if log:
            log(f"{rep.label}: {len(result.error)} inversions, {optimizer}, {sch.iterations} iterations, "
                f"error {np.mean(result.error):.3f} (mean)"
                + ("" if "shared_run" in result.provenance else f", {result.time_s:.1f} s"))
    if log and len(runs) > 1 and "shared_run" in runs[0].provenance:
        log(f"{len(layers)} layers inverted together in {runs[0].time_s:.1f} s")
    return results


def provenance(results: dict[str, InversionResult], **extra) -> dict:
    """What a figure built from ``results`` records: model, weights, and per layer λ, β,
    iterations, optimiser, seed, device, time and errors (plus ``extra``)."""
    first = next(iter(results.values())).provenance
    rep = first["representation"]
    weights = weights_label(rep["weights"], rep["trained"])  # titles show it
    return {**extra, "model": rep["model"], "weights": weights, "trained": rep["trained"],
            "images": first.get("images"),
            "layers": {layer: {"settings": r.provenance["settings"], "restarts": r.provenance["restarts"],
                               "optimizer": r.provenance["optimizer"], "schedule": r.provenance["schedule"],
                               "pixel_range": r.provenance["pixel_range"],
                               "iterations": r.provenance["iterations"], "seed": r.provenance["seed"],
                               "device": r.provenance["device"], "time_s": round(r.time_s, 2),
                               "error": [round(float(e), 4) for e in r.error], "items": r.items.tolist(),
                               "date": r.provenance["date"]}
                       for layer, r in results.items()},
            "versions": first["versions"]}
