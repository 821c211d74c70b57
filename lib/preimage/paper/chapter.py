"""What every figure notebook sets up first: the network actually used (``auto`` resolved, said
aloud), the layers standing in for the paper's names, where the figures go, and one call each to
invert and to save a figure with its provenance record."""
from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from .. import figures, representations
from ..engine.results import InversionResult, record
from ..errors import SettingsError, unknown
from . import recipes, sweep


@dataclass
class Chapter:
    """The setup of notebook ``name``: ``model`` and ``weights`` as resolved, the ``profile``,
    the folder ``out`` its figures go to, and ``layers`` {the paper's layer name: the layer used}
    with a note per stand-in (``stand_ins``)."""

    name: str
    model: str | None
    weights: str | None
    profile: str
    out: Path
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    layers: dict[str, str] = field(default_factory=dict)
    stand_ins: list[str] = field(default_factory=list)

    @property
    def quick(self) -> bool:
        """The quick profile: 2 CPU cores and CI, so fewer images and restarts, same layers."""
        return self.profile == "quick"

    def layer_names(self) -> list[str]:
        return [info.name for info in representations.layers(self.model)]

    def invert(self, layers: list[str], images: list[str], **options) -> dict[str, InversionResult]:
        """``sweep.invert_layers`` with this chapter's model, weights, profile, seed and device."""
        options = {"weights": self.weights, "profile": self.profile, "seed": self.seed, "device": self.device,
                   "progress": self.progress, **options}
        return sweep.invert_layers(self.model, list(layers), list(images), **options)

    def record(self, results: dict, **extra) -> dict:
        """The provenance record of a figure made from ``results`` ({layer: InversionResult})."""
        return record(results, kind="figure", profile=self.profile, stand_ins=self.stand_ins, **extra)

    def save(self, fig, name: str, record: dict) -> list[Path]:
        """Write ``out/name``.png, .pdf and .json (``record``, from ``self.record``)."""
        paths = figures.save(fig, self.out / name, record)
        print("wrote " + ", ".join(str(p) for p in paths))
        return paths


OVERRIDES = "PREIMAGE_NOTEBOOK_PARAMETERS"


def apply_overrides(parameters: MutableMapping) -> dict:
    """Replace names in ``parameters`` (a notebook's globals()) with those of the JSON object in
    $PREIMAGE_NOTEBOOK_PARAMETERS, and print them: what papermill's injected cell does, for a
    runner that executes the stored notebook as it is (nbval, in the test suite), so that its
    figures go to a temporary folder. Returns the names replaced."""
    text = os.environ.get(OVERRIDES)
    if not text:
        return {}
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as e:
        raise SettingsError(f"${OVERRIDES} is not JSON ({e}); give an object such as "
                            f'{{"output_dir": "/tmp/figures"}}, or unset it') from None
    if not isinstance(overrides, dict):
        raise SettingsError(f"${OVERRIDES} must be a JSON object of parameter names, not {text!r}")
    parameters.update(overrides)
    print(f"parameters set by ${OVERRIDES}: " + ", ".join(f"{k}={v!r}" for k, v in overrides.items()))
    return overrides


def chapter(name: str, parameters: MutableMapping, paper_layers: list[str] = (), network: bool = True) -> Chapter:
    """Set up notebook ``name`` from its ``parameters`` (the names its parameters cell defines:
    model, weights, profile, output_dir, seed, device, progress; a notebook passes ``globals()``,
    and ``apply_overrides`` may change them there): check the profile, resolve ``model`` 'auto'
    (AlexNet with ImageNet weights where they can be had, else the offline EfficientNet-Lite0,
    with a warning) unless the chapter uses no network (``network`` False), find the layer
    standing in for each of ``paper_layers`` (CaffeNet's names), and print what was chosen."""
    apply_overrides(parameters)
    model, weights = parameters.get("model", "auto"), parameters.get("weights", "auto")
    profile, output_dir = parameters.get("profile", "quick"), parameters.get("output_dir", "../figures")
    seed, device = parameters.get("seed", 0), parameters.get("device", "auto")
    progress = parameters.get("progress", True)
    if profile not in recipes.PROFILES:
        raise unknown("profile", profile, recipes.PROFILES)
    if not network:
        return Chapter(name, None, None, profile, Path(output_dir) / name, seed, device, progress)
    if model == "auto":  # the network auto picks, with its weights unless the notebook names others
        model, auto_weights = representations.resolve_auto()
        weights = auto_weights if weights == "auto" else weights
    names = [info.name for info in representations.layers(model)]
    layers, notes = {}, []
    for paper_name in paper_layers:
        layers[paper_name], note = recipes.paper_layer(model, paper_name, names)
        if note:
            notes.append(note)
    print(f"model {model}, weights {weights}, profile {profile}")
    for paper_name, layer in layers.items():
        print(f"{paper_name} -> {layer}" + ("" if layer == paper_name else f"  ({layer} stands in for CaffeNet's "
                                                                              f"{paper_name})"))
    return Chapter(name, model, weights, profile, Path(output_dir) / name, seed, device, progress, layers, notes)
