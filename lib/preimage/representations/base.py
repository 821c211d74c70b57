"""What a representation promises: a frozen module from mean-subtracted pixels to a code."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..engine.results import weights_label
from ..errors import ImageError, UnknownNameError, unknown
from .receptive_field import Geometry, ReceptiveField, receptive_fields


@dataclass(frozen=True)
class LayerInfo:
    name: str
    channels: int
    geometry: Geometry
    receptive_field: ReceptiveField
    spatial: bool = True  # False once the code is a flat vector (fully connected layers)
    # A token sequence (T, D), e.g. a ViT's: (prefix, h, w) for `prefix` tokens of no position (the
    # class token) followed by an h x w grid of patch tokens, row by row. None for other codes.
    tokens: tuple[int, int, int] | None = None


def layer_table(specs: list[tuple[str, int, Geometry, bool]]) -> list[LayerInfo]:
    """LayerInfo for a chain given (name, channels, geometry, spatial) per layer."""
    fields = receptive_fields([g for _, _, g, _ in specs])
    return [LayerInfo(n, c, g, rf, s) for (n, c, g, s), rf in zip(specs, fields)]


def find_layer(layers: list[LayerInfo], name: str, model: str, absent: dict[str, str] | None = None):
    """Index of ``name`` in ``layers``; unknown names list the valid ones (and say why a known
    layer of another variant, e.g. CaffeNet's norm1, is not here)."""
    names = [l.name for l in layers]
    if name in names:
        return names.index(name)
    if absent and name in absent:
        raise UnknownNameError(
            f"layer {name!r} does not exist in {model}: {absent[name]}; valid layers: {', '.join(names)}")
    raise unknown("layer", name, names, of=model)


class Representation(nn.Module):
    """Φ truncated at one layer: maps a batch (N, C, H, W) of mean-subtracted images in pixel
    units (0..255 scale minus ``mean``) to the code at ``layer``. Parameters are frozen: the
    inversion only differentiates with respect to the input.

    ``weights`` names where the parameters came from; ``trained`` is False for random weights,
    and every label made from this object then says "untrained".
    """

    def __init__(self, body: nn.Module, *, model: str, layer: str, layers: list[LayerInfo],
                 weights: str, trained: bool, mean: tuple[float, ...], input_size: int | None):
        super().__init__()
        self.body = body.eval()
        for p in self.body.parameters():
            p.requires_grad_(False)
        self.model = model
        self.layer = layer
        self.layers = layers
        self.layer_index = [l.name for l in layers].index(layer)
        self.weights = weights
        self.trained = trained
        self.mean = tuple(float(m) for m in mean)
        self.input_size = input_size

    @property
    def info(self) -> LayerInfo:
        return self.layers[self.layer_index]

    @property
    def receptive_field(self) -> ReceptiveField:
        return self.info.receptive_field

    @property
    def tokens(self) -> tuple[int, int, int] | None:
        """(prefix, h, w) when the code is a token sequence (see LayerInfo), else None."""
        return self.info.tokens

    @property
    def in_channels(self) -> int:
        return len(self.mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def train(self, mode: bool = True):
        # Dropout and batch statistics must never switch on during an inversion.
        return super().train(False)

    @property
    def weights_label(self) -> str:
        return weights_label(self.weights, self.trained)

    @property
    def label(self) -> str:
        return f"{self.model} {self.layer} ({self.weights_label})"

    def min_image_size(self) -> int:
        """Smallest image side this layer accepts: its receptive field, except that fully
        connected layers need the whole nominal input, and so do token sequences (their grid
        is that of the nominal input, whose number of tokens position embeddings fix)."""
        size = self.receptive_field.size
        if self.input_size is not None:
            size = min(size, self.input_size) if self.tokens is None else self.input_size
        return size

    def check_image_size(self, height: int, width: int) -> None:
        need = self.min_image_size()
        if min(height, width) < need and self.tokens is not None:
            _, h, w = self.tokens
            raise ImageError(f"a {height}x{width} image is smaller than the {need}x{need} input of {self.model}, "
                             f"whose {h}x{w} grid of patch tokens {self.layer} holds; use an image of {need}x{need}")
        if min(height, width) < need:
            earlier = [l.name for l in self.layers if l.receptive_field.size <= min(height, width)]
            hint = f" or an earlier layer ({', '.join(earlier[-3:])})" if earlier else ""
            raise ImageError(
                f"a {height}x{width} image is smaller than the receptive field of {self.model} "
                f"{self.layer} ({need} px); use an image of at least {need}x{need}{hint}")

    @torch.no_grad()
    def code_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Shape of one image's code (without the batch axis)."""
        self.check_image_size(height, width)
        p = next(self.body.parameters(), next(self.body.buffers(), None))  # HOG/DSIFT have buffers only
        x = torch.zeros(1, self.in_channels, height, width,
                        device=p.device if p is not None else "cpu",
                        dtype=p.dtype if p is not None else torch.float32)
        return tuple(self(x).shape[1:])

    def describe(self) -> dict:
        rf = self.receptive_field
        return {"model": self.model, "layer": self.layer, "weights": self.weights,
                "trained": self.trained, "mean": list(self.mean), "input_size": self.input_size,
                "receptive_field": {"size": rf.size, "stride": rf.stride, "offset": rf.offset}}
