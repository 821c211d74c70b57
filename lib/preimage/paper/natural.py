"""Activation maximisation and caricatures (IJCV 2016 §4–5): the inversion's energy with the dot
loss −⟨w, Φ(x)⟩, for a code w that asks for one unit (maximisation) or for more of everything a
photo already excites (caricature).

Maximisation scales its unit by the largest activation the channel reaches on real images
(``neuron_maxima``, computed over the shipped photos or a folder and cached), so that one
weight C means the same for every channel; each channel is its own batch item, and several
channels make a mosaic of their images.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import images, representations
from ..atomic import atomic_path
from ..engine import optimise
from ..engine.results import InversionResult
from ..engine.schedule import Schedule, Stage
from ..errors import SettingsError, UnknownNameError
from . import recipes

MAXIMISE_ITERATIONS = {"quick": 100, "paper": 300}  # ijcv.md §4: one stage of 300 at the first rate
STATS_SIZE = 224  # photos are centre-cropped to this side where the network has no input size
# C for caricatures. The reference leaves it at 1, but there the prior outweighs the loss on a photo
# (E = 10 to 13 against a loss of −0.95 on EfficientNet-Lite0 stage3, chelsea) and the descent
# mostly smooths it: ⟨w, Φ⟩ falls to 0.83–0.97 of the photo's after 40–100 iterations. With C = 100 it
# rises to 1.3–1.5 (measured at 96 and 224 px): the photo, exaggerated.
CARICATURE_WEIGHT = 100.0


def cache_dir() -> Path:
    """$PREIMAGE_CACHE, else $XDG_CACHE_HOME/preimage, else ~/.cache/preimage."""
    if os.environ.get("PREIMAGE_CACHE"):
        return Path(os.environ["PREIMAGE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "preimage"


def _stats_images(source: str | Path | None) -> list[Path]:
    if source is None:
        return sorted(images.shipped().values())
    folder = Path(source)
    if not folder.is_dir():
        raise SettingsError(f"--stats-images {folder} is not a folder; give a folder of photos, or leave it out "
                            f"to use the shipped ones")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not found:
        raise SettingsError(f"--stats-images {folder} holds no .png or .jpg photo")
    return found


def neuron_maxima(rep, source: str | Path | None = None, *, device: str = "auto") -> np.ndarray:
    """The largest activation of each channel of ``rep``'s code over positions and photos
    (``get_neuron_stats.m``): the shipped photos, or those of the folder ``source``. Cached under
    ``cache_dir()`` by model, weights, layer and the photos' bytes."""
    paths = _stats_images(source)
    size = rep.input_size or STATS_SIZE
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.read_bytes())
    key = hashlib.sha256(json.dumps([rep.model, rep.weights, rep.trained, rep.layer, size,
                                     digest.hexdigest()]).encode()).hexdigest()[:16]
    cached = cache_dir() / "neuron-maxima" / f"{rep.model.replace(':', '_')}-{rep.layer}-{key}.npy"
    if cached.is_file():
        return np.load(cached)
    device = optimise.resolve_device(device)
    rgbs, _ = images.load_many([str(p) for p in paths], size)
    x = torch.cat([images.to_input(rgb, rep.mean) for rgb in rgbs])
    with torch.no_grad():
        codes = torch.cat([rep.to(device)(x[i:i + 4].to(device)).cpu() for i in range(0, len(x), 4)])
    maxima = _channels_last(codes).flatten(0, -2).max(0).values.double().numpy()
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, maxima)
    return maxima


def _channels_last(codes: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) maps and (N, C) vectors as (N, …, C); token codes (N, T, D) already are."""
    return codes.movedim(1, -1) if codes.dim() == 4 else codes


def check_unit_code(rep) -> None:
    if rep.model in recipes.SHALLOW_MODELS:
        raise SettingsError(f"{rep.model} has no learned units to maximise: its code is a fixed histogram of "
                            f"gradient orientations, so maximising one bin only draws an edge; use a network")


def check_recipe(recipe: str, param: str) -> None:
    """Maximisation and caricatures need the IJCV recipe, or the Fourier image's Adam."""
    if recipe == "cvpr2015" and param == "pixels":
        raise SettingsError("maximisation and caricatures follow the IJCV 2016 paper: use --recipe ijcv2016, or "
                            "--param fourier (the CVPR 2015 rates are set for its normalised inversion loss and "
                            "diverge on the dot loss)")


def channel_index(rep, channel: int | str) -> tuple[int, str | None]:
    """The channel ``channel`` names (an index, or a class name at a model's last layer) and its
    class name where the model knows one."""
    n = rep.info.channels
    names = representations.categories(rep.model) if n == len(representations.categories(rep.model)) else []
    if isinstance(channel, str) and not channel.lstrip("-").isdigit():
        if not names:
            raise UnknownNameError(f"{rep.model} {rep.layer} has no class names (its {n} channels are not the "
                                   f"model's categories); give a channel number from 0 to {n - 1}")
        if channel not in names:
            close = difflib.get_close_matches(channel, names, n=5, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise UnknownNameError(f"{rep.model} has no class {channel!r}; {hint}its {len(names)} classes are "
                                   f"ImageNet's (e.g. {', '.join(names[:3])})")
        k = names.index(channel)
    else:
        k = int(channel)
        if not 0 <= k < n:
            raise SettingsError(f"channel {k} is out of range: {rep.model} {rep.layer} has {n} channels, "
                                f"0 to {n - 1}")
    return k, names[k] if names else None


def image_size(rep) -> int:
    """The side of the image a unit is maximised in (ijcv.md §4): the smallest input whose code
    is at least round(1.1·r/s) units wide (odd), r and s the field's size and stride, so that
    the centre unit's field fits with a margin; the network's input size for layers whose field
    covers it, or whose code is not a map."""
    rf = rep.receptive_field
    nominal = rep.input_size or STATS_SIZE
    if not rep.info.spatial or rf.size >= nominal:
        return nominal
    want = round(1.1 * rf.size / rf.stride)
    want += 1 - want % 2
    lo, hi = rep.min_image_size(), nominal
    while lo < hi:  # code width grows with the input side
        mid = (lo + hi) // 2
        if rep.code_shape(mid, mid)[-1] >= want:
            hi = mid
        else:
            lo = mid + 1
    return lo


def centre_unit(rep, shape: tuple[int, ...], k: int) -> tuple[int, ...]:
    """The index of channel k's centre unit in a code of ``shape``: a map's centre position, a
    token code's centre patch token (after the class token), a vector's k."""
    if len(shape) == 3:
        return k, shape[1] // 2, shape[2] // 2
    if len(shape) == 2:
        prefix, h, w = rep.tokens or (0, shape[0], 1)
        return prefix + (h // 2) * w + w // 2, k
    return (k,)


def unit_codes(rep, channels: list[int], size: int, maxima: np.ndarray) -> tuple[torch.Tensor, list[str]]:
    """One code per channel, zero except at its centre unit: (10000/r²)/max_f (ijcv.md §4), and
    a note for channels that never fired on the photos (weighed by 1 instead of 1/max_f)."""
    shape = rep.code_shape(size, size)
    codes = torch.zeros(len(channels), *shape)
    r = rep.receptive_field.size
    notes = []
    for i, k in enumerate(channels):
        top = maxima[k]
        if top <= 0:
            notes.append(f"channel {k} never fired on the statistics photos (max {top:.3g}); its weight takes "
                         f"max 1")
            top = 1.0
        codes[(i, *centre_unit(rep, shape, k))] = 10000 / r ** 2 / top
    return codes, notes


def unit_activation(rep, x: torch.Tensor, channels: list[int]) -> np.ndarray:
    """The activation of each item's unit (its channel, at the centre) on its image."""
    with torch.no_grad():
        code = rep(torch.as_tensor(x, dtype=torch.float32))
    shape = tuple(code.shape[1:])
    return np.array([float(code[(i, *centre_unit(rep, shape, k))]) for i, k in enumerate(channels)])


def one_stage(plan: recipes.Recipe, profile: str, iterations: int | None) -> dict:
    """The engine's keywords for ijcv.md §4–5: ``plan`` as one stage at its first rate, with its
    first stage's jitter, over ``iterations`` (default the profile's)."""
    first = plan.stages[0] if plan.stages else Stage(plan.schedule)
    n = iterations if iterations is not None else MAXIMISE_ITERATIONS[profile]
    options = {k: v for k, v in plan.run_options().items() if k != "schedule"}
    return {**options, "stages": [Stage(Schedule(((first.schedule.steps[0][0], n),)), first.transforms)]}


@dataclass
class Maximised:
    """Images that maximise units: ``result`` (one item per channel), each unit's activation on
    its image and the largest it reaches on the statistics photos."""

    result: InversionResult
    channels: list[int]
    names: list[str | None]
    activation: np.ndarray
    reference: np.ndarray
    notes: list[str]

    def summary(self) -> dict:
        return {"channels": self.channels, "names": self.names, "activation": self.activation.round(4).tolist(),
                "reference_max": self.reference.round(4).tolist(), "notes": self.notes}


def maximise(rep, channels: list[int | str], *, recipe: str = "ijcv2016", param: str = "pixels",
             profile: str = "paper", iterations: int | None = None, weight: float | None = None,
             stats_images: str | Path | None = None, seed: int = 0, device: str = "auto",
             progress: bool = True) -> Maximised:
    """Images that excite the centre unit of each of ``channels`` (indices, or class names at the
    last layer) of ``rep``'s layer (ijcv.md §4)."""
    check_unit_code(rep)
    check_recipe(recipe, param)
    if not channels:
        raise SettingsError("give at least one channel to maximise")
    picked = [channel_index(rep, c) for c in channels]
    ks = [k for k, _ in picked]
    plan = recipes.recipe(rep.model, rep.layer, recipe=recipe, param=param, profile=profile, weight=weight)
    size = image_size(rep)
    maxima = neuron_maxima(rep, stats_images, device=device)
    codes, notes = unit_codes(rep, ks, size, maxima)
    result = optimise.invert(rep, codes=codes, image_size=(size, size), settings=plan.setting, loss="dot",
                             seed=seed, device=device, progress=progress, **one_stage(plan, profile, iterations))
    return Maximised(result, ks, [name for _, name in picked], unit_activation(rep, result.x, ks),
                     maxima[ks], notes)


def caricature(rep, x: torch.Tensor, *, recipe: str = "ijcv2016", param: str = "pixels", profile: str = "paper",
               iterations: int | None = None, weight: float | None = None, seed: int = 0, device: str = "auto",
               progress: bool = True) -> InversionResult:
    """The photo x (1, C, H, W) pushed to excite more of what its code at ``rep``'s layer
    already holds (ijcv.md §5): w = max(Φ(x0), 0)/||max(Φ(x0), 0)||², started from x0, with
    C = ``weight`` (default ``CARICATURE_WEIGHT``)."""
    check_unit_code(rep)
    check_recipe(recipe, param)
    with torch.no_grad():
        fired = rep(torch.as_tensor(x, dtype=torch.float32)).clamp_min(0)
    norm2 = fired.flatten(1).square().sum(1)
    if bool((norm2 == 0).any()):
        raise SettingsError(f"no unit of {rep.model} {rep.layer} fires on this image (every value is <= 0), so "
                            f"there is nothing to exaggerate; choose another layer or image")
    if weight is None and recipe == "ijcv2016":
        weight = CARICATURE_WEIGHT
    plan = recipes.recipe(rep.model, rep.layer, recipe=recipe, param=param, profile=profile, weight=weight)
    w = fired / norm2.view(-1, *[1] * (fired.dim() - 1))
    return optimise.invert(rep, codes=w, image_size=tuple(x.shape[-2:]), settings=plan.setting, loss="dot",
                           start=x, seed=seed, device=device, progress=progress,
                           **one_stage(plan, profile, iterations))
