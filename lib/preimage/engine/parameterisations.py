"""What the descent moves: the pixels themselves (both papers), or a Fourier spectrum with 1/f
scaling and decorrelated colours (Lucid's parameterisation, beyond the papers).

A parameterisation maps its variable v to the image x (mean-subtracted pixels) and back:
``image(v, size)`` and ``variable(x)``. Descending on a 1/f-scaled spectrum moves coarse
structure as fast as fine detail, where descending on pixels moves fine detail first; the
decorrelated colour basis does the same for colour.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import SettingsError

# The square root of ImageNet's colour correlation (Lucid's measurement), rows R, G, B; the
# columns are the decorrelated basis: luminance first, then two colour-opponent axes.
COLOUR_CORRELATION_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
SPECTRUM_START = 0.01  # std of the start spectrum (Lucid's): a nearly flat grey image
PIXEL_RMS = 68.9  # a typical pixel's RMS: Adam on pixels takes its rates in this unit


class Pixels:
    """The image itself is the variable."""

    name = "pixels"
    adam_unit = PIXEL_RMS

    def image(self, v: torch.Tensor, size=None) -> torch.Tensor:
        return v

    def variable(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class Fourier:
    """x = 255·sigmoid(C·irfft2(s ⊙ v)) − mean: v the spectrum of each colour channel in the
    decorrelated basis C (3 channels; other counts are not decorrelated), s = 1/max(f, 1/n) the
    1/f scale (f in cycles per pixel, n the longer side), the sigmoid keeping every pixel within
    0..255."""

    name = "fourier"
    adam_unit = 1.0  # Adam's rates are for the spectrum itself (Lucid's 0.05)

    def __init__(self, mean: tuple[float, ...]):
        self.mean = tuple(float(m) for m in mean)
        c = COLOUR_CORRELATION_SQRT / np.linalg.norm(COLOUR_CORRELATION_SQRT, axis=0).max()
        self.colour = torch.tensor(c if len(self.mean) == 3 else np.eye(len(self.mean)), dtype=torch.float64)

    @staticmethod
    def scale(size: tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
        h, w = size
        f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
        return torch.tensor(1 / np.maximum(f, 1 / max(h, w)), device=device, dtype=dtype)

    def _mean(self, x):
        return torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)

    def image(self, v: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        spectrum = torch.view_as_complex(v) * self.scale(size, v.device, v.dtype)
        # "ortho" makes a unit coefficient a unit pixel: the start's spread does not depend on the size
        z = torch.fft.irfft2(spectrum, s=size, norm="ortho")
        z = torch.einsum("rc,bchw->brhw", self.colour.to(z), z)
        return 255 * torch.sigmoid(z) - self._mean(z)

    def variable(self, x: torch.Tensor) -> torch.Tensor:
        """The spectrum whose image is x (pixels clamped into the sigmoid's open range)."""
        p = ((x + self._mean(x)) / 255).clamp(1e-3, 1 - 1e-3)
        z = torch.einsum("cr,brhw->bchw", torch.linalg.inv(self.colour).to(x), torch.logit(p))
        spectrum = torch.fft.rfft2(z, norm="ortho") / self.scale(tuple(x.shape[-2:]), x.device, x.dtype)
        return torch.view_as_real(spectrum).contiguous()

    def start(self, channels: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """A random start spectrum of one item."""
        h, w = size
        return SPECTRUM_START * torch.randn(channels, h, w // 2 + 1, 2, generator=generator, dtype=torch.float64)


PARAMETERISATIONS = ("pixels", "fourier")


def get(name: str, mean: tuple[float, ...]):
    if name == "pixels":
        return Pixels()
    if name == "fourier":
        return Fourier(mean)
    raise SettingsError(f"unknown parameterisation {name!r}; valid ones: {', '.join(PARAMETERISATIONS)}")
