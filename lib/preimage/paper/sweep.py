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
from ..engine.objective import Setting, sigma
from ..engine.optimise import invert, invert_at_layers, resolve_device
from ..engine.results import TERMS, InversionResult
from ..engine.schedule import Schedule
from ..engine.shared import shareable
from . import recipes, reuse

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
    chosen = [_as_list(settings(layer) if settings else r.setting) for layer, r in zip(layers, plans)]
    common = dict(restarts=restarts, seed=seed, device=device, progress=progress, batch_size=batch_size)
    described = [[st.describe(sigma(*x0.shape[1:])) for st in ss] for ss in chosen]
    store = reuse.Store() if reuse.enabled() else None
    every = [(g, n, s, r) for g in range(len(reps)) for n in range(len(x0)) for s in range(len(chosen[g]))
             for r in range(restarts)]
    digests = [reuse.digest(x) for x in x0] if store else []
    keys = {(g, n, s, r): reuse.item_key(reps[g], digests[n], described[g][s], _recipe_key(plans[g]), seed, r,
                                         resolve_device(device)) for g, n, s, r in every} if store else {}
    found = {k: item for k, key in keys.items() if (item := store.load(key)) is not None}
    missing = [k for k in every if k not in found]
    # what runs: every image with an item missing, and per layer every setting with one missing
    todo_images = sorted({n for _, n, _, _ in missing})
    todo = {g: sorted({s for h, _, s, _ in missing if h == g}) for g in sorted({g for g, *_ in missing})}
    runs = {}
    if todo:
        sub = list(todo)
        fresh = _run([reps[g] for g in sub], x0[todo_images], [[chosen[g][s] for s in todo[g]] for g in sub],
                     [plans[g] for g in sub], common)
        runs = dict(zip(sub, fresh))
        for g, result in runs.items():
            for b, (n, s, r) in enumerate(result.items):
                k = (g, todo_images[n], todo[g][s], r)
                found[k] = reuse.Item(result.x[b], {t: e[:, b] for t, e in result.energies.items()},
                                      float(result.error[b]), result.provenance)
                if store:
                    store.save(keys[k], found[k])
    results = {}
    for g, (layer, rep, plan) in enumerate(zip(layers, reps, plans)):
        order = [(g, n, s, r) for n in range(len(x0)) for s in range(len(chosen[g])) for r in range(restarts)]
        fresh = runs.get(g)
        result = InversionResult(
            x=np.stack([found[k].x for k in order]), mean=rep.mean,
            energies={t: np.stack([found[k].energies[t] for k in order], axis=1) for t in TERMS},
            error=np.array([found[k].error for k in order], dtype=np.float32),
            items=np.array([k[1:] for k in order], dtype=np.int64), time_s=fresh.time_s if fresh else 0.0,
            provenance={**(fresh or found[order[0]]).provenance, "settings": described[g], "restarts": restarts,
                        "images": list(image_names), "recipe": plan.describe()})
        reused = sum(1 for k in order if fresh is None or k[1] not in todo_images or k[2] not in todo[g])
        if reused:
            result.provenance["reused_items"] = reused  # read back (paper.reuse), not computed in this run
        results[layer] = result
        if log:
            log(f"{rep.label}: {len(result.error)} inversions, {plan.name} recipe, {plan.param}, {plan.optimizer}, "
                f"{plan.schedule.iterations} iterations, error {np.mean(result.error):.3f} (mean)"
                + (f", {reused} read back" if reused else "")
                + ("" if fresh is None or "shared_run" in fresh.provenance else f", {result.time_s:.1f} s"))
    shared = [r for r in runs.values() if "shared_run" in r.provenance]
    if log and shared:
        log(f"{len(shared)} layers inverted together in {shared[0].time_s:.1f} s")
    return results


def _as_list(settings) -> list[Setting]:
    return [settings] if isinstance(settings, Setting) else list(settings)


def _recipe_key(plan: recipes.Recipe) -> dict:
    """What of a recipe an item's numbers depend on (its setting is keyed on its own)."""
    return {k: v for k, v in plan.describe().items() if k not in ("profile", "lambda_tv")}


def _run(reps, x0, chosen, plans, common) -> list[InversionResult]:
    """One run through the shared network where the layers can share it, else one per layer."""
    # stages, transformations, a box or another parameterisation: each layer runs on its own
    plain = all(not r.stages and r.box is None and r.param == "pixels" for r in plans)
    if len(reps) > 1 and plain and shareable(reps) is None:
        return invert_at_layers(reps, x0, settings=chosen, schedules=[r.schedule for r in plans],
                                pixel_range=[r.pixel_range for r in plans], optimizer=plans[0].optimizer, **common)
    return [invert(rep, x0, settings=st, **r.run_options(), **common) for rep, st, r in zip(reps, chosen, plans)]
