"""Invert some images at some layers of one model: the loop every figure notebook shares.

All layers run as one batch through the network they share (``invert_at_layers``), or one
``invert`` call per layer where they cannot share it (e.g. torchvision:/timm: graphs); what varies
per layer (λ_TV by Fig. 6's blocks, the rates, the pixel range) comes from ``recipes.recipe``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .. import images, representations
from ..engine.objective import Setting
from ..engine.optimise import invert, invert_at_layers
from ..engine.results import InversionResult
from ..engine.schedule import Schedule
from ..engine.shared import shareable
from . import recipes

SettingsFor = Callable[[str], "Setting | list[Setting]"]


def invert_layers(model: str, layers: list[str], image_names: list[str], *, weights: str | None = None,
                  settings: SettingsFor | None = None, restarts: int = 1, profile: str = "quick",
                  schedule: Schedule | None = None, optimizer: str | None = None, seed: int = 0,
                  device: str = "auto", progress: bool = False, size: int | None = None,
                  batch_size: int | None = None, log: Callable[[str], None] | None = print,
                  recipe: str = "cvpr2015", param: str = "pixels", weight: float | None = None,
                  beta: float | None = None, transforms=(), jitter: int | None = None
                  ) -> dict[str, InversionResult]:
    """``{layer: result}`` with every image inverted at every layer.

    ``settings(layer)`` gives the Setting(s) of a layer (default: the recipe's, λ_TV of Fig. 6's
    block). Each layer runs its ``recipes.recipe(model, layer, profile=profile, optimizer=optimizer,
    schedule=schedule, recipe=recipe, param=param, weight=weight, beta=beta, transforms=transforms,
    jitter=jitter)``:
    ``schedule`` replaces the model's reference schedule (Fig. 9's). Images are centre-cropped to
    ``size`` (default: the model's input size). ``log`` gets one line per layer (None: silent)."""
    reps = [representations.get(model, layer, weights=weights, seed=seed) for layer in layers]
    rgbs, notes = images.load_many(image_names, size or reps[0].input_size)
    if log:
        for note in notes:  # conversions (grayscale, alpha, 16 bit) are said, never silent
            log(f"note: {note}")
    x0 = torch.cat([images.to_input(rgb, reps[0].mean) for rgb in rgbs])
    plans = [recipes.recipe(model, layer, profile=profile, optimizer=optimizer, schedule=schedule, recipe=recipe,
                            param=param, weight=weight, beta=beta, transforms=transforms, jitter=jitter)
             for layer in layers]
    schedules = [r.schedule for r in plans]
    chosen = [settings(layer) if settings else r.setting for layer, r in zip(layers, plans)]
    common = dict(restarts=restarts, seed=seed, device=device, progress=progress, batch_size=batch_size)
    ranges = [r.pixel_range for r in plans]
    # stages, transformations, a box or another parameterisation: each layer runs on its own
    plain = all(not r.stages and r.box is None and r.param == "pixels" for r in plans)
    if len(reps) > 1 and plain and shareable(reps) is None:  # one run through the shared network
        runs = invert_at_layers(reps, x0, settings=chosen, schedules=schedules, pixel_range=ranges,
                                optimizer=plans[0].optimizer, **common)
    else:
        runs = [invert(rep, x0, settings=st, **r.run_options(), **common) for rep, st, r in zip(reps, chosen, plans)]
    results = {}
    for layer, rep, result, plan in zip(layers, reps, runs, plans):
        result.provenance["images"] = list(image_names)
        result.provenance["recipe"] = plan.describe()
        results[layer] = result
        if log:
            log(f"{rep.label}: {len(result.error)} inversions, {plan.name} recipe, {plan.param}, {plan.optimizer}, "
                f"{plan.schedule.iterations} iterations, "
                f"error {np.mean(result.error):.3f} (mean)"
                + ("" if "shared_run" in result.provenance else f", {result.time_s:.1f} s"))
    if log and len(runs) > 1 and "shared_run" in runs[0].provenance:
        log(f"{len(layers)} layers inverted together in {runs[0].time_s:.1f} s")
    return results

