"""What the IJCV 2016 chapters (notebooks 10–12) compute beyond one call: the two papers' recipes
side by side, the paper's variants at one layer (jitter on and off, β, C), units maximised layer by
layer with their activations in a table, and caricatures with how much each one exaggerates.

Every function returns ``InversionResult``s (or ``natural.Maximised``) whose provenance a figure's
record carries (``Chapter.record``), and builds panels and titles for ``figures.grid``.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import figures, images, representations
from ..engine.results import InversionResult
from ..errors import SettingsError
from . import natural, recipes

# The columns of notebook 10: the CVPR 2015 recipe, the IJCV 2016 recipe, and the IJCV recipe on
# Lucid's Fourier image (Adam on the spectrum, same energy and stages; not in either paper).
METHODS = {"CVPR 2015": {"recipe": "cvpr2015"}, "IJCV 2016": {"recipe": "ijcv2016"},
           "IJCV 2016, Fourier": {"recipe": "ijcv2016", "param": "fourier"}}


# ----------------------------------------------------------------------------- recipes side by side


def invert_methods(ch, layers: list[str], image_names: list[str], methods: dict[str, dict] | None = None,
                   **options) -> dict[str, dict[str, InversionResult]]:
    """``{method: {layer: result}}``: every image inverted at every layer under each of ``methods``
    ({label: keywords of ``ch.invert``}, default ``METHODS``)."""
    return {label: ch.invert(layers, image_names, **{**keywords, **options})
            for label, keywords in (methods or METHODS).items()}


def flatten(runs: dict[str, dict[str, InversionResult]]) -> dict[str, InversionResult]:
    """``{"method · layer": result}``: the runs of ``invert_methods`` as one record holds them."""
    return {f"{label} · {layer}": r for label, results in runs.items() for layer, r in results.items()}


def side_by_side(runs: dict[str, dict[str, InversionResult]], image: int = 0):
    """Panels and titles for ``grid``: one row per layer, the original image ``image`` then one
    pre-image per method, each titled with the method and its relative error."""
    panels, titles = [], []
    first = next(iter(runs.values()))
    for layer, r in first.items():
        name = r.provenance["images"][image]
        row, row_titles = [figures.originals(r)[image]], [f"{name}\n{layer}"]
        for label, results in runs.items():
            b = results[layer].index(image, 0, 0)
            row.append(results[layer].display()[b])
            row_titles.append(f"{label}\nerror {results[layer].error[b]:.3f}")
        panels.append(row)
        titles.append(row_titles)
    return panels, titles


def error_table(runs: dict[str, dict[str, InversionResult]]) -> str:
    """The mean relative error of every (layer, method), one line per layer."""
    labels = list(runs)
    layers = list(next(iter(runs.values())))
    width = max(len(label) for label in labels) + 2
    lines = ["layer     " + "".join(f"{label:>{width}}" for label in labels)]
    for layer in layers:
        lines.append(f"{layer:<10}" + "".join(f"{np.mean(runs[label][layer].error):>{width}.3f}" for label in labels))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the paper's variants at one layer


def variant_side(ch, layer: str, quick: int = 160) -> int | None:
    """The image side of the variants' figure: in the quick profile ``quick`` pixels, or the
    smallest side ``layer`` accepts if larger, where that is below the network's input (about half
    the time); else None, the network's input size."""
    if not ch.quick:
        return None
    rep = representations.get(ch.model, layer, weights=ch.weights, seed=ch.seed)
    side = max(quick, rep.min_image_size())
    return side if rep.input_size is None or side < rep.input_size else None


def ijcv_variants(ch, layer: str, image_names: list[str], betas=(1.0, 1.5, 2.0),
                  weights=recipes.IJCV_WEIGHTS, size: int | None = None) -> dict[str, InversionResult]:
    """ijcv.md §6's variants at one layer: ``{"jitter J": result, "no jitter": result}``. The
    jittered run holds β ∈ ``betas`` at C = 1 and C ∈ ``weights`` at β = 2 (the pair C = 1, β = 2,
    the recipe itself, once); the run without jitter holds the same β at C = 1."""
    pairs = [(1.0, float(b)) for b in betas] + [(float(c), recipes.IJCV_BETA) for c in weights]
    pairs = list(dict.fromkeys(pairs))
    common = dict(recipe="ijcv2016", size=size, log=None)
    jittered = ch.invert([layer], image_names, settings=lambda _: [recipes.ijcv_setting(c, b) for c, b in pairs],
                         **common)[layer]
    plain = ch.invert([layer], image_names, settings=lambda _: [recipes.ijcv_setting(1.0, float(b)) for b in betas],
                      jitter=1, **common)[layer]
    return {f"jitter {recipes.jitter_for(ch.model, layer)}": jittered, "no jitter": plain}


def setting_index(result: InversionResult, weight: float, beta: float) -> int:
    """The index of the setting with C = ``weight`` and β = ``beta`` among ``result``'s."""
    for k, s in enumerate(result.provenance["settings"]):
        if np.isclose(s["weight"], weight) and np.isclose(s["beta"], beta):
            return k
    raise SettingsError(f"no setting with C = {weight:g} and β = {beta:g} in this result")


def variant_rows(variants: dict[str, InversionResult], betas=(1.0, 1.5, 2.0), weights=recipes.IJCV_WEIGHTS,
                 image: int = 0):
    """Panels and titles for ``grid`` from ``ijcv_variants``: a row over β with jitter, one over β
    without, one over C (with jitter, β = 2), each after the original, each titled with its error."""
    (jitter_label, jittered), (plain_label, plain) = variants.items()
    original = figures.originals(jittered)[image]
    name = jittered.provenance["images"][image]
    rows = [(f"{jitter_label}, C = 1", [(jittered, 1.0, b, f"β = {b:g}") for b in betas]),
            (f"{plain_label}, C = 1", [(plain, 1.0, b, f"β = {b:g}") for b in betas]),
            (f"{jitter_label}, β = {recipes.IJCV_BETA:g}", [(jittered, c, recipes.IJCV_BETA, f"C = {c:g}")
                                                             for c in weights])]
    panels, titles = [], []
    for label, cells in rows:
        row, row_titles = [original], [f"{name}\n{label}"]
        for r, c, b, title in cells:
            i = r.index(image, setting_index(r, c, b), 0)
            row.append(r.display()[i])
            row_titles.append(f"{title}\nerror {r.error[i]:.3f}")
        panels.append(row)
        titles.append(row_titles)
    return panels, titles


# ----------------------------------------------------------------------------- activation maximisation


def maximise_layers(ch, channels: dict[str, list], **options) -> dict[str, natural.Maximised]:
    """``{layer: natural.maximise(...)}`` for each layer of ``ch.model`` and its ``channels``, with
    the chapter's profile, seed, device and progress (``options`` go to ``natural.maximise``)."""
    common = {"profile": ch.profile, "seed": ch.seed, "device": ch.device, "progress": ch.progress, **options}
    return {layer: natural.maximise(representations.get(ch.model, layer, weights=ch.weights, seed=ch.seed),
                                    list(chosen), **common)
            for layer, chosen in channels.items()}


def ratio(found: natural.Maximised) -> np.ndarray:
    """Each unit's activation on its image over its largest on the photos (NaN where it never fired)."""
    ref = np.asarray(found.reference, dtype=float)
    return np.where(ref > 0, np.asarray(found.activation, dtype=float) / np.where(ref > 0, ref, 1.0), np.nan)


def activation_table(found: dict[str, natural.Maximised]) -> str:
    """One line per unit: layer, channel (and class name), its activation on its image, its largest
    activation on the statistics photos, and their ratio."""
    lines = [f"{'layer':<8} {'channel':<22} {'on its image':>12} {'max on photos':>14} {'ratio':>7}"]
    for layer, f in found.items():
        for k, name, act, ref, q in zip(f.channels, f.names, f.activation, f.reference, ratio(f)):
            unit = f"{k} {name}" if name else str(k)
            lines.append(f"{layer:<8} {unit:<22} {act:>12.2f} {ref:>14.2f} "
                         + (f"{q:>6.1f}×" if np.isfinite(q) else f"{'never fired':>7}"))
    return "\n".join(lines)


def mosaic_panels(found: dict[str, natural.Maximised]):
    """Panels and titles for ``grid``: one row, a mosaic of each layer's units (each image min–max
    stretched), titled with the layer, its channels, the image side and the median ratio."""
    panels, titles = [], []
    for layer, f in found.items():
        side = f.result.x.shape[-1]
        first, last = min(f.channels), max(f.channels)
        panels.append(figures.mosaic(f.result.display()))
        titles.append(f"{layer}: channels {first}–{last}\n{side} px each, median {np.nanmedian(ratio(f)):.1f}× "
                      f"the photos' max")
    return [panels], [titles]


def class_report(rep, found: natural.Maximised) -> str:
    """For units of a class layer (``rep``'s, whose channels are the model's categories): the
    probability the network gives each class on its own image, the class's rank there, and the
    network's top class."""
    names = representations.categories(rep.model)
    if rep.info.channels != len(names):
        raise SettingsError(f"{rep.model} {rep.layer} is not a class layer: its {rep.info.channels} channels are not "
                            f"the model's {len(names)} categories")
    with torch.no_grad():
        p = torch.softmax(rep(torch.as_tensor(found.result.x, dtype=torch.float32)).flatten(1).double(), 1)
    lines = [f"{'class':<18} {'p(class)':>9} {'rank':>5}   top class"]
    for i, k in enumerate(found.channels):
        rank = int((p[i] > p[i, k]).sum()) + 1
        top = int(p[i].argmax())
        lines.append(f"{names[k]:<18} {float(p[i, k]):>9.3f} {rank:>5}   {names[top]} ({float(p[i, top]):.3f})")
    return "\n".join(lines)


def unit_panels(found: natural.Maximised, per_row: int = 4):
    """Panels and titles for ``grid``: one image per unit, titled with its class name (or channel),
    its activation and its largest activation on the photos."""
    panels = list(found.result.display())
    titles = [f"{name or f'channel {k}'}\n{act:.1f} (photos: {ref:.1f})"
              for k, name, act, ref in zip(found.channels, found.names, found.activation, found.reference)]
    return figures.chunks(panels, per_row), figures.chunks(titles, per_row)


# ----------------------------------------------------------------------------- caricatures


def exaggeration(rep, x0: torch.Tensor, x) -> np.ndarray:
    """⟨w, Φ(x)⟩ per item with w = max(Φ(x0), 0)/‖max(Φ(x0), 0)‖², the caricature's own code: 1 at
    the photo x0 itself, larger the more x excites what the layer saw in it."""
    with torch.no_grad():
        fired = rep(torch.as_tensor(x0, dtype=torch.float32)).clamp_min(0).flatten(1)
        code = rep(torch.as_tensor(x, dtype=torch.float32)).flatten(1)
    return ((fired * code).sum(1) / fired.square().sum(1)).double().numpy()


def caricatures(ch, layers: list[str], image_names: list[str], *, size: int | None = None,
                **options) -> dict[str, InversionResult]:
    """``{layer: natural.caricature(...)}`` of the photos ``image_names`` at each of ``layers``, with
    the chapter's profile, seed, device and progress (``options`` go to ``natural.caricature``,
    e.g. ``weight``). Each result's provenance adds the photos' names, ``exaggeration`` (⟨w, Φ⟩ of
    the caricature, 1 at the photo) and ``change`` (the mean absolute change of its pixels from the
    photo's, in grey levels)."""
    common = {"profile": ch.profile, "seed": ch.seed, "device": ch.device, "progress": ch.progress, **options}
    out = {}
    for layer in layers:
        rep = representations.get(ch.model, layer, weights=ch.weights, seed=ch.seed)
        rgbs, _ = images.load_many(list(image_names), size or rep.input_size or natural.STATS_SIZE)
        x0 = torch.cat([images.to_input(rgb, rep.mean) for rgb in rgbs])
        r = natural.caricature(rep, x0, **common)
        r.provenance["images"] = list(image_names)
        r.provenance["exaggeration"] = [round(float(v), 4) for v in exaggeration(rep, x0, r.x)]
        r.provenance["change"] = [round(float(v), 2) for v in np.abs(r.x - x0.numpy()).mean((1, 2, 3))]
        out[layer] = r
    return out


def class_layer(model: str) -> str | None:
    """The last layer of ``model`` when its channels are the model's categories (the logits), else None."""
    last = representations.layers(model)[-1]
    names = representations.categories(model)
    return last.name if names and last.channels == len(names) else None


def class_shift(ch, results: dict[str, InversionResult], k: int = 2) -> str:
    """What the network takes each photo and each of its caricatures (``results``, from
    ``caricatures``) for: its top ``k`` classes with their probabilities, one line per image."""
    layer = class_layer(ch.model)
    if layer is None:
        raise SettingsError(f"{ch.model} has no class layer: its last layer's channels are not categories")
    rep = representations.get(ch.model, layer, weights=ch.weights, seed=ch.seed)
    names = representations.categories(ch.model)
    first = next(iter(results.values()))
    h, w = first.provenance["image_size"]
    rgbs, _ = images.load_many(first.provenance["images"], (h, w))
    shown = {"photo": torch.cat([images.to_input(rgb, rep.mean) for rgb in rgbs])}
    shown.update({f"{name}": torch.as_tensor(r.x, dtype=torch.float32) for name, r in results.items()})
    lines = []
    with torch.no_grad():
        for label, x in shown.items():
            p = torch.softmax(rep(x).flatten(1).double(), 1)
            top = p.topk(k, 1)
            for i, image in enumerate(first.provenance["images"]):
                classes = ", ".join(f"{names[int(c)]} {float(q):.2f}" for q, c in zip(top.values[i], top.indices[i]))
                lines.append((i, f"{image:<10} {label:<8} {classes}"))
    return "\n".join(line for _, line in sorted(lines, key=lambda t: t[0]))


def caricature_rows(results: dict[str, InversionResult]):
    """Panels and titles for ``grid``: one row per photo, the photo then its caricature at each
    layer (min–max stretched), titled with ⟨w, Φ⟩ (1 at the photo) and the mean pixel change."""
    first = next(iter(results.values()))
    photos = figures.originals(first)
    panels, titles = [], []
    for i, name in enumerate(first.provenance["images"]):
        row, row_titles = [photos[i]], [name]
        for layer, r in results.items():
            row.append(r.display()[i])
            row_titles.append(f"{layer}: ⟨w, Φ⟩ × {r.provenance['exaggeration'][i]:.2f}\n"
                              f"change {r.provenance['change'][i]:.0f} grey levels")
        panels.append(row)
        titles.append(row_titles)
    return panels, titles
