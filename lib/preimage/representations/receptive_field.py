"""Receptive-field geometry: size, stride and offset of every layer, from kernel/stride/padding.

Offsets are the input coordinate (0-based pixel centre) of the centre of the first output
unit's field; unit k of a layer is centred at ``offset + k * stride``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Geometry:
    """How one layer maps positions: a ``kernel`` x ``kernel`` window moved by ``stride``, after
    ``padding``. Pointwise layers (ReLU, LRN) are ``Geometry()``; a fully connected layer on an
    s x s map is ``Geometry(kernel=s)``."""

    kernel: int = 1
    stride: int = 1
    padding: int = 0


POINTWISE = Geometry()  # ReLU, LRN, a 1x1 convolution: positions map one to one


def compose(geometries: list[Geometry]) -> Geometry:
    """One Geometry equivalent to a chain (e.g. the convolutions of a stage of several blocks)."""
    kernel, stride, padding = 1, 1, 0
    for g in geometries:
        kernel += (g.kernel - 1) * stride
        padding += g.padding * stride
        stride *= g.stride
    return Geometry(kernel, stride, padding)


@dataclass(frozen=True)
class ReceptiveField:
    size: int
    stride: int
    offset: float

    def box(self, index: int) -> tuple[float, float]:
        """Input-pixel interval [start, end) covered by output unit ``index`` along one axis."""
        centre = self.offset + index * self.stride
        return centre - (self.size - 1) / 2, centre + (self.size + 1) / 2


def receptive_fields(geometries: list[Geometry]) -> list[ReceptiveField]:
    """The receptive field after each layer of a chain, for an input pixel's field (1, 1, 0)."""
    size, stride, offset = 1, 1, 0.0
    out = []
    for g in geometries:
        size = size + (g.kernel - 1) * stride
        offset = offset + ((g.kernel - 1) / 2 - g.padding) * stride
        stride = stride * g.stride
        out.append(ReceptiveField(size, stride, offset))
    return out


def central_box(field: ReceptiveField, code_size: tuple[int, int], n: int) -> tuple[float, float, float, float]:
    """(top, left, bottom, right) in input pixels of the union of the fields of the central
    ``n`` x ``n`` units of an (h, w) code map, as the paper's Fig. 9 draws it (not clipped to
    the image)."""
    (h, w) = code_size
    top, left = (h - n) // 2, (w - n) // 2
    (y0, _), (_, y1) = field.box(top), field.box(top + n - 1)
    (x0, _), (_, x1) = field.box(left), field.box(left + n - 1)
    return y0, x0, y1, x1
