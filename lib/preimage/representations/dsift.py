"""CNN-DSIFT: dense SIFT as a differentiable torch module (the authors' ``dsift_net.m``).

Input: a batch (N, 1, H, W) of grayscale images, 255·gray − 128. Output: (N, 128, h, w), one
SIFT descriptor per grid position. The steps, exactly as the reference network (the paper, §5):

1. Central differences gx = (I[y, x+1] − I[y, x−1])/2, gy = (I[y+1, x] − I[y−1, x])/2 without
   padding (the map is (H−2)×(W−2)); x runs along columns, y down the rows.
2. Bilinear orientation binning into 8 directed orientations t_k = 2πk/8 (angle measured from
   +x towards +y, i.e. clockwise on screen): plane k = |g| · max(0, 1 − |θ − t_k|/(π/4)), θ the
   gradient angle. The reference writes this as n·max(0, 1 − (8/2π)·acos(d_k/n)) with
   d_k = cos(t_k)gx + sin(t_k)gy and n = sqrt(Σ_k d_k²/4) = |g|: the same function; we compute
   θ with atan2, which keeps the derivative finite where d_k/n = ±1 (the reference clamps
   1 − cs² in its hand-written backward instead).
3. Spatial binning: each plane convolved with the separable triangle a·aᵀ,
   a = 1 − |((1..2b) − (2b+1)/2)/b| (2b taps, weights at half-pixel offsets, sum b), stride b,
   no padding. Cell p is centred on image pixel p·b + b + 0.5 (a half-pixel position).
4. Descriptors: 4×4 cells taken every 3 cells (a step of 3b pixels: 15 for b = 5, 24 for
   b = 8), each cell (i, j) multiplied by exp(−((i−2.5)² + (j−2.5)²)/(2·1.5²)), i, j = 1..4
   (a Gaussian of 1.5 bins evaluated at the bin centres). Channel (i, j, o) is
   ``(i·4 + j)·8 + o`` for row bin i, column bin j, orientation o (0-based): the reference's
   loop order and also VLFeat's native layout (orientation fastest, then x, then y).
5. y = h / sqrt(1e-6 + Σ h²) over the 128 values (MatConvNet ``normalize`` with
   [256, 1e-6, 1, 0.5]: the 256-channel window covers all 128), then min(y, 0.2). No
   renormalisation after the clamp (VLFeat renormalises; the reference network does not).

Geometry: the receptive field of a descriptor is 5b+2 pixels (27 for b = 5, 42 for b = 8);
descriptor (r, c) is centred on pixel (2.5b + 0.5 + 3b·r, 2.5b + 0.5 + 3b·c), 0-based; an
H×W image gives floor((floor((H−2−2b)/b) + 1 − 4)/3) + 1 rows (3×3 for 64×64 at b = 5, 1×1 at
b = 8). An image smaller than the receptive field has no descriptor and is refused.

Relation to VLFeat's ``vl_dsift`` (measured in tests/test_dsift.py against cyvlfeat 0.7.1 on
libvlfeat 0.9.21, 'chelsea' in grayscale; relative error ‖a − b‖/‖b‖ per descriptor):
- Spatial binning: VLFeat's triangle has 2b−1 taps centred on a pixel (1 − |x|/b at integer
  x); the reference's has 2b taps centred between pixels. Both sample one continuous
  triangle, and the reference's cell equals, exactly, the mean of VLFeat's cells at the 4
  surrounding pixels. VLFeat's frame grid (with bounds starting at b, step 3b) is therefore
  half a pixel up-left of ours (centres 2.5b + 3b·k against our 2.5b + 0.5 + 3b·k); no VLFeat
  option removes that.
- Window: VLFeat's default (``fast=False``) is a Gaussian of σ = window_size·b pixels
  (window_size 2) evaluated per pixel; ``fast=True`` uses per-bin weights, the mean of that
  Gaussian over each bin's taps. The reference uses per-bin weights exp(−d²/(2·1.5²)) at the
  bin centres: neither VLFeat mode reproduces it exactly.
- Orientation: VLFeat computes θ with a cubic atan2 approximation (error up to 0.0061 rad)
  and |g| with a fast inverse square root; we use exact functions. Same angle convention
  (atan2(gy, gx), y down) and the same bilinear split between the two nearest of 8 bins.
- Border: VLFeat uses one-sided differences on the outermost pixels and pads by continuity;
  the reference never reaches the border (no padding), so only interior frames compare.
- Normalisation: VLFeat divides by ‖h‖ + FLT_EPSILON, clamps at 0.2 and renormalises;
  cyvlfeat returns min(512·v, 255) even for float descriptors. Its ``norm=True`` column is
  Σh/256 (measured), not the L2 norm. No image smoothing in either (vl_phow smooths, dsift
  does not).
- Measured: our orientation planes + VLFeat's binning, window and normalisation reproduce
  vl_dsift(fast=True) to 5e-5 (max) with VLFeat's atan2 swapped in, 1e-2 with the exact one.
  Our own output against vl_dsift(fast=True, window_size=1.5), averaged over the 4 frame
  grids around ours, VLFeat's renormalisation undone: median 0.032, max 0.067 (b = 5);
  0.033, 0.042 (b = 8). Against VLFeat's defaults at the nearest grid: median 0.165 (b = 5),
  0.143 (b = 8) — a different window, hence a different descriptor.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ImageError
from .base import LayerInfo, Representation, find_layer
from .receptive_field import Geometry, receptive_fields

NUM_ORIENTATIONS = 8  # directed; the reference's numOrientations = 4 undirected
NUM_BINS = 4  # spatial bins per side
DESCRIPTOR_STEP = 3  # descriptors every 3 cells
WINDOW_SIGMA = 1.5  # Gaussian window, in bins
NORM_EPS = 1e-6  # y = h / sqrt(NORM_EPS + Σh²)
CLAMP = 0.2
CHANNELS = NUM_BINS * NUM_BINS * NUM_ORIENTATIONS
MEAN = (128.0,)
BIN_SIZES = {"dsift5": 5, "dsift8": 8}  # CVPR 2015 uses 5, IJCV 2016 uses 8


def geometry_chain(bin_size: int) -> list[Geometry]:
    """Derivative (3×3, no padding), triangular pooling (2b, stride b), 4×4 bins every 3 bins.
    The orientation binning, normalisation and clamp are pointwise."""
    return [Geometry(3, 1, 0), Geometry(2 * bin_size, bin_size, 0),
            Geometry(NUM_BINS, DESCRIPTOR_STEP, 0)]


def _layer(name: str, bin_size: int) -> LayerInfo:
    chain = geometry_chain(bin_size)
    return LayerInfo(name, CHANNELS, chain[-1], receptive_fields(chain)[-1], True)


# Alternatives, not a chain: each is a whole DSIFT with its own bin size.
LAYERS = [_layer(name, b) for name, b in BIN_SIZES.items()]


def triangle(bin_size: int) -> torch.Tensor:
    """The reference's 1-D triangle a = 1 − |((1..2b) − (2b+1)/2)/b| (2b taps, sum b)."""
    m = torch.arange(1, 2 * bin_size + 1, dtype=torch.float64)
    return 1 - ((m - (2 * bin_size + 1) / 2) / bin_size).abs()


def window() -> torch.Tensor:
    """The 4×4 per-bin Gaussian weights exp(−((i−2.5)² + (j−2.5)²)/(2·1.5²)), i, j = 1..4."""
    i = torch.arange(1, NUM_BINS + 1, dtype=torch.float64)
    d2 = (i.view(-1, 1) - 2.5) ** 2 + (i.view(1, -1) - 2.5) ** 2
    return torch.exp(-d2 / (2 * WINDOW_SIGMA ** 2))


def receptive_field_size(bin_size: int) -> int:
    return receptive_fields(geometry_chain(bin_size))[-1].size


class DenseSift(nn.Module):
    """Dense SIFT with bin size ``bin_size`` pixels (see the module docstring).

    ``atan2`` computes the gradient angle (``torch.atan2``; the tests swap in VLFeat's
    approximation to show that it is the only difference in the orientation binning). The
    stages are exposed for tests: ``orientation_planes``, ``cells``, ``histograms``
    (before normalisation) and ``forward``.
    """

    def __init__(self, bin_size: int, atan2: Callable = torch.atan2):
        super().__init__()
        if not isinstance(bin_size, int) or bin_size < 1:
            raise ValueError(f"bin_size must be a positive integer, not {bin_size!r}")
        self.bin_size = bin_size
        self.atan2 = atan2
        self.min_size = receptive_field_size(bin_size)
        # Kept in float64 and cast to the input's dtype and device at each call: float64 inputs
        # get the exact weights (0.1, 0.3, ... are not float32 numbers), and an input on another
        # device than the module (Representation.code_shape probes on the CPU) still works.
        self.register_buffer("triangle", triangle(bin_size), persistent=False)
        self.register_buffer("window", window(), persistent=False)

    def extra_repr(self) -> str:
        return f"bin_size={self.bin_size}"

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ImageError(f"DSIFT takes a batch of grayscale images (N, 1, H, W), not {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            raise ImageError(f"a {h}x{w} image is smaller than one DSIFT descriptor with bin size "
                             f"{self.bin_size} ({self.min_size} px); use an image of at least "
                             f"{self.min_size}x{self.min_size}")

    def orientation_planes(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 8, H−2, W−2): the gradient magnitude split bilinearly between the two nearest of
        the 8 directed orientations."""
        gx = (x[:, :, 1:-1, 2:] - x[:, :, 1:-1, :-2]) / 2
        gy = (x[:, :, 2:, 1:-1] - x[:, :, :-2, 1:-1]) / 2
        n2 = gx * gx + gy * gy
        # Where the gradient is exactly zero the planes are zero; the substitutes keep sqrt and
        # atan2 (and their derivatives) finite there.
        nonzero = n2 > 0
        n = torch.sqrt(torch.where(nonzero, n2, torch.ones_like(n2))) * nonzero
        theta = self.atan2(torch.where(nonzero, gy, torch.zeros_like(gy)),
                           torch.where(nonzero, gx, torch.ones_like(gx)))
        # Bilinear assignment between the two nearest orientations: t in [0, 8) bins, weight
        # 1 − r on bin floor(t) and r on the next one (mod 8): the same numbers as the
        # reference's max(0, 1 − (8/2π)·acos(cos(θ − t_k))), with 2 nonzero planes per pixel.
        t = torch.remainder(theta * (NUM_ORIENTATIONS / (2 * math.pi)), NUM_ORIENTATIONS)
        k = t.detach().floor()
        r = t - k
        k = k.long() % NUM_ORIENTATIONS
        planes = torch.zeros(x.shape[0], NUM_ORIENTATIONS, *n.shape[2:], dtype=x.dtype, device=x.device)
        return planes.scatter_add(1, k, n * (1 - r)).scatter_add(1, (k + 1) % NUM_ORIENTATIONS, n * r)

    def _pooling_matrix(self, length: int, like: torch.Tensor) -> torch.Tensor:
        """(cells, length): row p holds the triangle on samples p·b .. p·b + 2b − 1."""
        b = self.bin_size
        cells = (length - 2 * b) // b + 1
        m = torch.zeros(cells, length, dtype=like.dtype, device=like.device)
        rows = torch.arange(cells, device=like.device).repeat_interleave(2 * b)
        cols = rows * b + torch.arange(2 * b, device=like.device).repeat(cells)
        m[rows, cols] = self.triangle.to(like).repeat(cells)
        return m

    def cells(self, planes: torch.Tensor) -> torch.Tensor:
        """(N, 8, h1, w1): triangular spatial pooling, 2b×2b, stride b, no padding. The
        separable filter a·aᵀ is applied as two matrix products, much faster than a 2b×2b
        convolution on CPU."""
        rows = self._pooling_matrix(planes.shape[-2], planes)
        cols = self._pooling_matrix(planes.shape[-1], planes)
        return rows @ planes @ cols.T

    def histograms(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 128, h, w): the Gaussian-weighted descriptors before normalisation; channel
        (i·4 + j)·8 + o is cell (i, j) of the 4×4 block, orientation o. (Slicing rather than a
        convolution: exact on GPUs too, where convolutions may run in TF32.)"""
        self._check(x)
        cells = self.cells(self.orientation_planes(x))
        h1, w1 = cells.shape[-2:]
        h = (h1 - NUM_BINS) // DESCRIPTOR_STEP + 1
        w = (w1 - NUM_BINS) // DESCRIPTOR_STEP + 1
        weights = self.window.to(cells)
        blocks = [cells[:, :, i:i + DESCRIPTOR_STEP * (h - 1) + 1:DESCRIPTOR_STEP,
                        j:j + DESCRIPTOR_STEP * (w - 1) + 1:DESCRIPTOR_STEP] * weights[i, j]
                  for i in range(NUM_BINS) for j in range(NUM_BINS)]
        return torch.cat(blocks, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.histograms(x)
        y = h * torch.rsqrt(NORM_EPS + (h * h).sum(1, keepdim=True))
        return torch.clamp(y, max=CLAMP)


def build(layer: str = "dsift5", weights=None, seed: int = 0) -> Representation:
    """CNN-DSIFT with bin size 5 ('dsift5', the CVPR paper's) or 8 ('dsift8', the IJCV
    paper's). ``weights`` and ``seed`` are accepted and ignored: DSIFT is hand-designed."""
    find_layer(LAYERS, layer, "dsift")
    return Representation(DenseSift(BIN_SIZES[layer]), model="dsift", layer=layer, layers=LAYERS,
                          weights="none (hand-designed)", trained=True, mean=MEAN, input_size=None)
