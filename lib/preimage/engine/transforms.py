"""Random transformations of the image before the network sees it, drawn afresh every iteration.

Jitter is the IJCV 2016 paper's (§3): the image is kept ``amount − 1`` pixels larger than the
network's input and a random window of it is fed each iteration, so that no detail can rely on
one exact alignment with the network's stride. Scale and rotation are the other "transformation
robustness" of feature-visualisation libraries (Lucid). A ``Transforms`` is a seeded, ordered
list of them: its draws depend only on (seed, iteration), never on what else shares the batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SettingsError


@dataclass(frozen=True)
class Jitter:
    """A random window, ``amount − 1`` pixels smaller than the image in each direction: offsets
    (dy, dx) drawn uniformly from {0, …, amount − 1}²."""

    amount: int

    def __post_init__(self):
        if isinstance(self.amount, bool) or not isinstance(self.amount, (int, np.integer)) or self.amount < 1:
            raise SettingsError(f"jitter must be a whole number of pixels >= 1 (1: none), not {self.amount!r}")

    @property
    def margin(self) -> int:
        return self.amount - 1

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        return tuple(int(v) for v in rng.integers(0, self.amount, 2))

    def apply(self, x: torch.Tensor, offset: tuple[int, int]) -> torch.Tensor:
        dy, dx = offset
        return x[..., dy:x.shape[-2] - self.margin + dy, dx:x.shape[-1] - self.margin + dx]

    def describe(self) -> str:
        return f"jitter={self.amount}"


@dataclass(frozen=True)
class Scale:
    """Zoom about the centre by a factor drawn log-uniformly from [1/factor, factor]; the size
    is kept (bilinear, the border repeated)."""

    factor: float

    def __post_init__(self):
        if isinstance(self.factor, bool) or not (isinstance(self.factor, (int, float)) and 1 <= self.factor <= 4):
            raise SettingsError(f"scale must be a factor from 1 to 4 (1.1: zoom by up to 10 %), not {self.factor!r}")

    margin = 0

    def draw(self, rng: np.random.Generator) -> float:
        return float(self.factor ** rng.uniform(-1, 1))

    def apply(self, x: torch.Tensor, s: float) -> torch.Tensor:
        return _affine(x, 1 / s, 0.0)

    def describe(self) -> str:
        return f"scale={self.factor:g}"


@dataclass(frozen=True)
class Rotate:
    """Rotation about the centre by an angle drawn uniformly from [−degrees, degrees]."""

    degrees: float

    def __post_init__(self):
        if isinstance(self.degrees, bool) or not (isinstance(self.degrees, (int, float)) and 0 <= self.degrees <= 180):
            raise SettingsError(f"rotate must be an angle from 0 to 180 degrees, not {self.degrees!r}")

    margin = 0

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(-self.degrees, self.degrees))

    def apply(self, x: torch.Tensor, angle: float) -> torch.Tensor:
        return _affine(x, 1.0, math.radians(angle))

    def describe(self) -> str:
        return f"rotate={self.degrees:g}"


def _affine(x: torch.Tensor, zoom: float, angle: float) -> torch.Tensor:
    """x resampled through a rotation by ``angle`` and a zoom of 1/``zoom`` about its centre."""
    c, s = math.cos(angle) * zoom, math.sin(angle) * zoom
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


KINDS = {"jitter": (Jitter, int), "scale": (Scale, float), "rotate": (Rotate, float)}


def parse(spec: str):
    """One transformation from ``jitter=8``, ``scale=1.1`` or ``rotate=5``."""
    name, _, value = spec.partition("=")
    if name not in KINDS or not value:
        raise SettingsError(f"cannot read the transformation {spec!r}; write jitter=PIXELS, scale=FACTOR or "
                            f"rotate=DEGREES, e.g. jitter=8")
    cls, kind = KINDS[name]
    try:
        return cls(kind(value))
    except ValueError:
        raise SettingsError(f"{name} needs a {'whole ' if kind is int else ''}number, not {value!r}") from None


@dataclass(frozen=True)
class Transforms:
    """An ordered list of transformations, applied in turn; the image is ``margin`` pixels
    larger than what the network sees."""

    steps: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "steps", tuple(parse(s) if isinstance(s, str) else s for s in self.steps))
        for s in self.steps:
            if not isinstance(s, (Jitter, Scale, Rotate)):
                raise SettingsError(f"{s!r} is not a transformation; use Jitter, Scale or Rotate")

    @property
    def margin(self) -> int:
        return sum(s.margin for s in self.steps)

    def draws(self, seed: int, iteration: int) -> list:
        """What each transformation draws at ``iteration`` of a run seeded with ``seed``."""
        rng = np.random.default_rng([seed, iteration])
        return [s.draw(rng) for s in self.steps]

    def view(self, seed: int, iteration: int):
        """The function x → what the network sees at this iteration (None: x itself)."""
        if not self.steps:
            return None
        draws = self.draws(seed, iteration)

        def apply(x):
            for step, d in zip(self.steps, draws):
                x = step.apply(x, d)
            return x
        return apply

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        """The centred window of x the network's size (the result of a jittered run)."""
        m = self.margin
        if not m:
            return x
        return x[..., m // 2:x.shape[-2] - m + m // 2, m // 2:x.shape[-1] - m + m // 2]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """x placed at the centre of a zero image ``margin`` larger (a start image: the margin
        starts at the mean colour)."""
        m = self.margin
        return F.pad(x, (m // 2, m - m // 2, m // 2, m - m // 2)) if m else x

    def describe(self) -> list[str]:
        return [s.describe() for s in self.steps]
