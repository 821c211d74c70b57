"""CNN-HOG and CNN-HOGb: HOG (UoCTTI variant, cell size 8, 9 orientations) as a differentiable
torch module, after the authors' ``hog_net.m`` (the paper, §5).

Input: a batch (N, 1, H, W) of ``255·gray − 128`` (grayscale, pixel units, mean 128 removed).
Output: (N, 27, H//8, W//8) for ``hog``/``hogb``, (N, 31, H//8, W//8) for ``hog31``/``hogb31``;
e.g. (27, 8, 8) per 64×64 image. One cell's receptive field is 34 px (3-px derivative, 16-px
pooling at stride 8, 2×2 blocks, then the 2×2 blocks around the cell), stride 8, cell i centred
on pixel 8i + 3.5; ``Representation.check_image_size`` therefore rejects images under 34×34
(the module itself would run from 16×16, one block, up).

The recipe, step by step:

1. 18 directional derivatives d_k = cos(t_k)·dx + sin(t_k)·dy, t_k = π·k/9, k = 0..17, with
   central differences dx = (I[y, x+1] − I[y, x−1])/2, dy = (I[y+1, x] − I[y−1, x])/2 (y points
   down, so angles turn clockwise on screen) and zero padding of one pixel.
2. Orientation binning with n = sqrt(Σ_k d_k²/9) (= the gradient's magnitude |g|):
   HOG: one-hot on arg-max_k d_k (first index on ties); HOGb: w_k = max(0, 1 − (9/π)·θ_k) with
   θ_k = acos(d_k/n), the angle between the gradient and direction k. Output n·w_k.
3. Bilinear spatial pooling with the 16×16 filter a·aᵀ, a = 1 − |((1..16) − 8.5)/8|, stride 8,
   zero padding 4. Cell (i, j) is centred on pixel (8i + 3.5, 8j + 3.5) (0-based) and the grid
   has floor(H/8) × floor(W/8) cells.

   Implementation of 2-3 (same numbers as the literal recipe, to float rounding; checked by the
   tests): at most two of a pixel's 18 values n·w_k are non-zero, so only those are formed.
   With q = (9/π)·atan2(dy, dx) mod 18, HOGb gives n·(1 − frac q) to bin floor q and n·frac q
   to the next bin — exactly max(0, 1 − (9/π)·acos(d_k/n)) for all k, without acos's loss of
   precision near 1 and with a finite derivative (the reference's backward regularises acos'
   with sqrt(1.0000001 − cs²)); HOG evaluates d_k for the two bins around q only, with the same
   arithmetic as for all 18, and takes the larger (the first on a tie). The pooling scatters
   each pixel's values into its two nearest cells along x (weight 1 − |x − (8j + 3.5)|/8) and
   applies a along y, so no (N, 18, H, W) tensor exists (several times faster than 18 dense
   channels: docs/benchmarks/notes.md).
   Derivatives: where the gradient is exactly zero, n·w = 0 and its derivative is taken as 0
   (as the reference's max(n, 1e-10) does); at a gradient exactly on a bin centre (a kink of
   w) HOGb uses the one-sided derivative; HOG's arg-max is piecewise constant, so its
   derivative flows through n only, as in the reference.
4. 27 values per cell: the 18 directed bins and 9 undirected ones (bin k + bin k+9).
5. Every 2×2 block of cells is divided by the L2 norm of its 36 undirected values, floored at
   1e-6; every value (directed and undirected alike) is then clamped at 0.2.
6. Each cell collects 0.5 × the sum of its values in the (up to) 4 blocks containing it; at the
   border, missing blocks count as zero (the reference's zero-padded 2×2 convolution).
7. ``hog31``/``hogb31`` add VLFeat's 4 texture dimensions: for each of the 4 blocks around the
   cell (upper-left, upper-right, lower-left, lower-right; missing ones zero), (1/√18) × the sum
   over the 9 undirected orientations of the cell's clamped normalised values in that block.

Agreement with VLFeat (``cyvlfeat.hog.hog(gray0to255, 8)``, UoCTTI; checked by
tests/test_hog.py). Layout, orientation order and direction are the same as ours: 18 directed
bins (bin k at angle π·k/9 from +x towards +y, y pointing down), 9 undirected, then 4 texture
dims (blocks upper-left, upper-right, lower-left, lower-right of the cell). Differences:

- Grid: our cell (i, j) is VLFeat's cell (i, j) — both centre cell i on pixel 8i + 3.5 and use
  the same bilinear weights. VLFeat's grid is floor((H + 4)/8) × floor((W + 4)/8) cells, ours
  floor(H/8) × floor(W/8): VLFeat has one more row (column), at the bottom (right), when
  H mod 8 ≥ 4 (W mod 8 ≥ 4); compare ``vl[:h, :w]`` with ours.
- Interior cells (rows 2..h−3, columns 2..w−3 of our grid) agree. Relative error
  ||ours − vl||/||vl|| over them, float32: HOG 8e-8 on the noisy cat photo (300×451) and on a
  uniform random texture (101×130); HOGb (VLFeat's ``bilinear_interpolation=True``, which
  applies to UoCTTI too, whatever cyvlfeat's docstring says) 1.3e-5 and 1.1e-5 (per-cell
  median 5e-6); texture dims 28..31: 8e-8 (HOG), 3e-6 (HOGb). On a piecewise-constant image,
  where many gradients lie within 1e-3 rad of a bin centre, HOGb differs by 1.5e-4: that is
  VLFeat's float32 ``acosf`` (cos θ rounds to 1 below θ ≈ 3e-4 rad); against a float64 port
  of VLFeat's binning our histograms agree to 1e-6.
- The outer ring of cells always differs (up to ~60-90% per cell), the second ring by up to a
  few percent: (a) VLFeat computes no gradient on the one-pixel image border, we use the
  reference's zero padding (a frame of gray 128, hence strong gradients in the border pixels);
  (b) at the grid border VLFeat clamps the block indices (the cell's own norms stand in for
  missing neighbours), where the reference counts missing blocks as zero, also in the texture
  dims; (c) VLFeat's extra last row/column adds the blocks our last row/column lacks. The second
  ring differs through the blocks it shares with the first; at the bottom (right) it agrees
  when H mod 8 (W mod 8) is 5, 6 or 7, since our last cell then sees no border pixel.
- Magnitude: VLFeat's gradient is I[x+1] − I[x−1] (twice ours) and its block norm is
  sqrt(Σ + 1e-4) instead of max(sqrt(Σ), 1e-6). Both cancel in the normalisation except for
  these constants, negligible on the 0..255 scale (VLFeat's 1e-4 shows on 0..1 input).
- Ties: a gradient exactly half-way between two bins (common: a purely vertical gradient, i.e.
  I[x−1] = I[x+1], lies between bins 4 and 5) goes to the lower bin here, in the reference
  (first maximum) and in VLFeat (strict > over 9 signed scores), so HOG agrees without added
  noise too: 7e-8 on the cat photo's 8-bit green channel and on horizontal stripes.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ImageError
from .base import LayerInfo, Representation, find_layer
from .receptive_field import Geometry, receptive_fields

NO = 9  # undirected orientations
CELL = 8  # cell size (pixels)
CLAMP = 0.2
NORM_FLOOR = 1e-6
MEAN = (128.0,)
WEIGHTS_LABEL = "none (hand-designed)"

# derivative 3x3 pad 1; bilinear pooling 16x16 stride 8 pad 4; 2x2 blocks on the cell grid;
# 2x2 decomposition of blocks back to cells, pad 1.
CHAIN = [Geometry(3, 1, 1), Geometry(2 * CELL, CELL, CELL // 2), Geometry(2, 1, 0), Geometry(2, 1, 1)]
_RF = receptive_fields(CHAIN)[-1]  # 34 px, stride 8, offset 3.5


def _layers(prefix: str) -> list[LayerInfo]:
    return [LayerInfo(prefix, 3 * NO, CHAIN[-1], _RF, True),
            LayerInfo(prefix + "31", 3 * NO + 4, CHAIN[-1], _RF, True)]


HOG_LAYERS = _layers("hog")
HOGB_LAYERS = _layers("hogb")


class _SafeSqrt(torch.autograd.Function):
    """sqrt with derivative 0 at 0 (instead of inf, which times 0 gives NaN)."""

    @staticmethod
    def forward(ctx, v):
        r = v.sqrt()
        ctx.save_for_backward(r)
        return r

    @staticmethod
    def backward(ctx, grad):
        (r,) = ctx.saved_tensors
        return torch.where(r > 0, grad / (2 * r).clamp_min(torch.finfo(r.dtype).tiny), torch.zeros_like(grad))


class HogNet(nn.Module):
    """255·gray − 128 (N, 1, H, W) → HOG cells (N, 27 or 31, H//8, W//8)."""

    def __init__(self, bilinear: bool = False, texture: bool = False):
        super().__init__()
        self.bilinear = bilinear
        self.texture = texture
        # float32 buffers (exact for a; float64 would not move to every device, e.g. MPS)
        t = torch.arange(2 * NO, dtype=torch.float64) * math.pi / NO
        self.register_buffer("cos", t.cos().float(), persistent=False)
        self.register_buffer("sin", t.sin().float(), persistent=False)
        a = 1 - ((torch.arange(1, 2 * CELL + 1, dtype=torch.float64) - (2 * CELL + 1) / 2) / CELL).abs()
        self.register_buffer("a", a.float(), persistent=False)

    @property
    def dims(self) -> int:
        return 3 * NO + (4 if self.texture else 0)

    def extra_repr(self) -> str:
        return f"bilinear={self.bilinear}, texture={self.texture}"

    def orientations(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Steps 1-2 as (bin, value) pairs, each (N, H, W): pixel (y, x) puts ``value`` in
        orientation ``bin``; summed, they are the per-pixel histograms n·w_k.

        At most two of the 18 n·w_k are non-zero at a pixel, so only those are formed. HOGb:
        with q = (9/π)·atan2(dy, dx) mod 18, n·(1 − frac q) goes to bin floor q and n·frac q to
        the next one, which is max(0, 1 − (9/π)·acos(d_k/n)) for every k. HOG: n goes to the
        arg-max of d_k, which is one of the two bins around q; both are evaluated with the same
        arithmetic as all 18, and ties go to the first index as with a full arg-max."""
        dt, dev = x.dtype, x.device  # buffers follow the input (the module has no parameters)
        p = F.pad(x[:, 0], (1, 1, 1, 1))
        gx = (p[:, 1:-1, 2:] - p[:, 1:-1, :-2]) / 2
        gy = (p[:, 2:, 1:-1] - p[:, :-2, 1:-1]) / 2
        n = _SafeSqrt.apply(gx * gx + gy * gy)  # = sqrt(Σ_k d_k²/9)
        zero = n == 0  # no direction: n·w = 0; keep atan2's derivative finite there
        phi = torch.atan2(torch.where(zero, torch.zeros_like(gy), gy), torch.where(zero, torch.ones_like(gx), gx))
        q = torch.remainder(phi * (NO / math.pi), 2 * NO)
        low = q.detach().floor()
        lo = low.long() % (2 * NO)
        hi = (lo + 1) % (2 * NO)
        if self.bilinear:
            frac = q - low  # at an exact bin centre (a kink) this gives the one-sided derivative
            return [(lo, n * (1 - frac)), (hi, n * frac)]
        with torch.no_grad():
            cos, sin = self.cos.to(dev, dt), self.sin.to(dev, dt)
            d_lo = cos[lo] * gx + sin[lo] * gy
            d_hi = cos[hi] * gx + sin[hi] * gy
            best = torch.where((d_hi > d_lo) | ((d_hi == d_lo) & (hi < lo)), hi, lo)
        return [(best, n)]

    def binning(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel orientation histograms n·w_k, (N, 18, H, W) (for inspection and tests)."""
        N, _, H, W = x.shape
        h = torch.zeros(N, 2 * NO, H, W, dtype=x.dtype, device=x.device)
        for b, v in self.orientations(x):
            h = h.scatter_add(1, b[:, None], v[:, None])
        return h

    def _pool_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Bilinear pooling along the last axis: the 16-tap filter a at stride 8 with zero
        padding 4; window k spans the padded 8-sample chunks k and k+1."""
        a = self.a.to(t.device, t.dtype)
        k = t.shape[-1] // CELL
        t = F.pad(t, (CELL // 2, CELL // 2))[..., :CELL * (k + 1)].unflatten(-1, (k + 1, CELL))
        return (t[..., :k, :] @ a[:CELL]) + (t[..., 1:, :] @ a[CELL:])

    def cell_histograms(self, x: torch.Tensor) -> torch.Tensor:
        """Steps 1-3: (N, 18, H//8, W//8), the per-pixel histograms pooled with a·aᵀ (16×16,
        stride 8, zero padding 4). Along x the pooling is a scatter of each pixel's (at most
        two) values into its two nearest cells — pixel x is 1 − |x − (8k + 3.5)|/8 of cell
        k — so that no (N, 18, H, W) tensor is formed; along y it is the filter itself."""
        N, _, H, W = x.shape
        w = W // CELL
        centre = (torch.arange(W, device=x.device, dtype=torch.float32) - (CELL - 1) / 2) / CELL
        k0 = centre.floor()
        f = (centre - k0).to(x.dtype)
        k0 = k0.long()
        t = torch.zeros(N, H, 2 * NO * w, dtype=x.dtype, device=x.device)
        contributions = self.orientations(x)
        for kx, wx in ((k0, 1 - f), (k0 + 1, f)):
            valid = (kx >= 0) & (kx < w)
            wx, kx = torch.where(valid, wx, torch.zeros_like(wx)), kx.clamp(0, w - 1)
            for b, v in contributions:
                t = t.scatter_add(-1, b * w + kx, v * wx)
        t = t.unflatten(-1, (2 * NO, w)).permute(0, 2, 3, 1)  # (N, 18, w, H)
        return self._pool_rows(t).transpose(-1, -2)  # (N, 18, H//8, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ImageError(f"HOG takes grayscale images (N, 1, H, W), not {tuple(x.shape)}")
        if min(x.shape[2:]) < 2 * CELL:
            raise ImageError(f"a {x.shape[2]}x{x.shape[3]} image is smaller than one HOG block "
                             f"({2 * CELL}x{2 * CELL} px)")
        h = self.cell_histograms(x)  # (N, 18, H//8, W//8)
        # 4. 18 directed + 9 undirected per cell
        cells = torch.cat([h, h[:, :NO] + h[:, NO:]], 1)  # (N, 27, h, w)
        # 5. block norms over the 36 undirected values of each 2x2 block, floored
        s = (cells[:, 2 * NO:] ** 2).sum(1, keepdim=True)
        s = s[:, :, :-1, :-1] + s[:, :, 1:, :-1] + s[:, :, :-1, 1:] + s[:, :, 1:, 1:]
        inv = 1 / _SafeSqrt.apply(s.clamp_min(NORM_FLOOR ** 2))  # = 1 / max(norm, 1e-6)
        inv = F.pad(inv, (1, 1, 1, 1))  # missing blocks at the border: factor 0
        hh, ww = cells.shape[-2:]
        factors = (inv[:, :, :hh, :ww], inv[:, :, :hh, 1:], inv[:, :, 1:, :ww], inv[:, :, 1:, 1:])
        # 5-6. normalise by each of the 4 blocks, clamp, average
        clamped = [(cells * f).clamp_max(CLAMP) for f in factors]
        out = 0.5 * (clamped[0] + clamped[1] + clamped[2] + clamped[3])
        if not self.texture:
            return out
        # 7. VLFeat's texture dims: one per block (UL, UR, LL, LR)
        tex = [c[:, 2 * NO:].sum(1, keepdim=True) / math.sqrt(2 * NO) for c in clamped]
        return torch.cat([out, *tex], 1)


def _build(model: str, layers: list[LayerInfo], layer: str, bilinear: bool) -> Representation:
    index = find_layer(layers, layer, model)
    body = HogNet(bilinear=bilinear, texture=layers[index].channels == 3 * NO + 4)
    return Representation(body, model=model, layer=layer, layers=layers, weights=WEIGHTS_LABEL,
                          trained=True, mean=MEAN, input_size=None)


def build_hog(layer: str = "hog", weights=None, seed: int = 0) -> Representation:
    """CNN-HOG (one-hot orientation assignment). ``weights`` and ``seed`` are ignored: HOG has
    no learned parameters."""
    return _build("hog", HOG_LAYERS, layer, bilinear=False)


def build_hogb(layer: str = "hogb", weights=None, seed: int = 0) -> Representation:
    """CNN-HOGb (bilinear orientation assignment). ``weights`` and ``seed`` are ignored."""
    return _build("hogb", HOGB_LAYERS, layer, bilinear=True)


def hog_cells(image_gray255, variant: str = "hog", dims: int = 27) -> np.ndarray:
    """HOG cells (h, w, dims) float32 of one grayscale image (H, W) on the 0..255 scale."""
    if variant not in ("hog", "hogb"):
        raise ValueError(f"variant must be 'hog' or 'hogb', not {variant!r}")
    if dims not in (27, 31):
        raise ValueError(f"dims must be 27 or 31, not {dims!r}")
    im = torch.as_tensor(np.asarray(image_gray255) if not torch.is_tensor(image_gray255) else image_gray255)
    if im.dim() != 2:
        raise ImageError(f"hog_cells takes one grayscale image (H, W), not shape {tuple(im.shape)}")
    net = HogNet(bilinear=variant == "hogb", texture=dims == 31)
    with torch.no_grad():
        out = net(im.detach().to("cpu", torch.float32)[None, None] - MEAN[0])
    return out[0].permute(1, 2, 0).numpy()
