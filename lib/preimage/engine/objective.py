"""The objective of §1: normalised masked feature loss + α-norm + V^β total variation, in the
two forms the papers give it.

Everything is per batch item, so a batch of images × restarts × settings is as many
independent problems, and summing the per-item energies gives each item its own gradient.
In pixel units (x = mean-subtracted image, 0..255 scale), the CVPR 2015 form is

    E(x) = C·loss(Φ(x), Φ0) + [ (λ_TV/2)·TV_β(x) + (λ_L2/2)·Σ|x|^α ] / σ²

which in the paper's variable u = x/σ reads loss + λ_Vβ·σ^(β−2)·R_Vβ(u) + λ_α·R_α(u) with
λ_Vβ = λ_TV/2 and λ_α = (λ_L2/2)·σ^(α−2) (C = 1 in the paper). The IJCV 2016 form averages the
regularisers over the H×W pixels of x and takes the α-norm of each pixel's colour vector:

    E(x) = C·loss(Φ(x), Φ0) + λ_TV·TV_β(x)/HW + λ_L2·Σ_ij ||x_ij||^α / HW
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..errors import CodeError, SettingsError

SIGMA_227 = 27098.1157  # norm of a typical mean-subtracted 227x227x3 image (reference code)
LAMBDA_L2 = 8e-10
ALPHA = 6.0
BETA = 2.0
TV_CLAMP = 1e-5  # the reference clamps the inner magnitude in the derivative when β < 2
LOSSES = ("l2", "l1", "inner", "dot")
FORMS = ("cvpr2015", "ijcv2016")


def sigma(channels: int, height: int, width: int) -> float:
    """σ for an image of this size: the reference's constant for 3x227x227, scaled with the
    square root of the number of values (the reference used only 227x227)."""
    return SIGMA_227 * math.sqrt(channels * height * width / (3 * 227 * 227))


@dataclass(frozen=True)
class Setting:
    """What can differ between the items of one batch: the regulariser and the feature mask.

    ``neigh``: keep only the central N×N positions of the code. ``group``: keep the first (1)
    or second (2) half of the channels. ``channels``: keep any set of channel indices.
    ``form``: how the regularisers are weighed (module docstring); ``weight``: C, the loss's
    weight against them (the IJCV paper's ``objectiveWeight``); ``sigma``: in the ijcv2016 form,
    the typical pixel norm that scales the random start (80 in the paper; the cvpr2015 form
    takes σ from the image size and leaves this None)."""

    lambda_tv: float = 1.0
    beta: float = BETA
    lambda_l2: float = LAMBDA_L2
    alpha: float = ALPHA
    neigh: int | None = None
    group: int | None = None
    channels: tuple[int, ...] | None = None
    form: str = "cvpr2015"
    weight: float = 1.0
    sigma: float | None = None

    def __post_init__(self):
        if self.form not in FORMS:
            raise SettingsError(f"unknown form {self.form!r}; valid forms: {', '.join(FORMS)}")
        if isinstance(self.weight, bool) or not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight)
                                                 and self.weight > 0):
            raise SettingsError(f"weight (C) must be a finite number > 0, not {self.weight!r}")
        if (self.form == "ijcv2016") != (self.sigma is not None):
            raise SettingsError("the ijcv2016 form needs sigma, the typical pixel norm of its start (80 in the paper), "
                                "and the cvpr2015 form takes none (its σ follows the image size)")
        if self.sigma is not None and (isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float))
                                       or not math.isfinite(self.sigma) or self.sigma <= 0):
            raise SettingsError(f"sigma must be a finite number > 0, not {self.sigma!r}")
        for name in ("lambda_tv", "lambda_l2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise SettingsError(f"{name} must be a finite number >= 0, not {v!r}")
        for name in ("beta", "alpha"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise SettingsError(f"{name} must be a finite number > 0, not {v!r} "
                                    f"(the paper uses beta 2, or 1 for the spikes figure, alpha 6)")
        if self.neigh is not None and (isinstance(self.neigh, bool) or not isinstance(self.neigh, int)
                                       or self.neigh < 1):
            raise SettingsError(f"neigh must be a positive integer (the paper uses 5), not {self.neigh!r}")
        if self.group not in (None, 1, 2):
            raise SettingsError(f"group must be 1 or 2 (first or second half of the channels), not {self.group!r}")
        if self.group is not None and self.channels is not None:
            raise SettingsError("give either group or channels, not both")
        if self.channels is not None:
            object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    @property
    def lambda_vbeta(self) -> float:
        return self.lambda_tv / 2

    def lambda_alpha(self, sigma_: float) -> float:
        return self.lambda_l2 / 2 * sigma_ ** (self.alpha - 2)

    def describe(self, sigma_: float) -> dict:
        d = asdict(self)
        if self.form == "cvpr2015":
            d.update(lambda_vbeta=self.lambda_vbeta, lambda_alpha=self.lambda_alpha(sigma_), sigma=sigma_)
        return d


def mask(code_shape: tuple[int, ...], setting: Setting, layer: str = "this layer", *,
         tokens: tuple[int, int, int] | None = None) -> torch.Tensor:
    """A 0/1 tensor of ``code_shape`` keeping the features ``setting`` selects.

    ``tokens`` (prefix, h, w): the code is a token sequence (T, D) of ``prefix`` tokens of no
    position (a ViT's class token) followed by an h x w grid of patch tokens, row by row. Then
    ``neigh`` keeps the central n x n patch tokens and drops the prefix tokens, and ``group``
    and ``channels`` select among the D features of every token."""
    m = torch.ones(code_shape)
    channels = code_shape[-1] if tokens else code_shape[0]
    if setting.neigh is not None:
        m = m * _neigh_keep(code_shape, setting.neigh, layer, tokens)
    if setting.group is not None:
        half = channels // 2
        index = range(half) if setting.group == 1 else range(half, channels)
        m = m * _channel_keep(code_shape, index, tokens)
    if setting.channels is not None:
        bad = [c for c in setting.channels if not 0 <= c < channels]
        if bad:
            what = f"the tokens of {layer} ({channels} features each)" if tokens else f"{layer} ({channels} channels)"
            raise SettingsError(f"channel indices {bad} out of range for {what}")
        m = m * _channel_keep(code_shape, setting.channels, tokens)
    return m


def _neigh_keep(code_shape, n: int, layer: str, tokens) -> torch.Tensor:
    """1 at the central n x n positions of a map (C, h, w), or patch tokens of a token code."""
    if tokens:
        prefix, h, w = tokens
        if len(code_shape) != 2 or code_shape[0] != prefix + h * w:
            raise SettingsError(f"the code of {layer} has shape {code_shape}, not the {prefix} + {h}x{w} tokens "
                                f"of its grid at the network's input size; use an image of that size")
        what = "grid of patch tokens"
    elif len(code_shape) == 1:
        raise SettingsError(f"neigh needs a spatial code, but {layer} is a flat vector of {code_shape[0]} "
                            f"values; use a convolutional layer or drop neigh")
    elif len(code_shape) != 3:
        raise SettingsError(f"neigh needs a spatial code, but the code of {layer} has shape {code_shape}, "
                            f"neither a map nor known tokens; drop neigh")
    else:
        (h, w), what = code_shape[1:], "map"
    if n > min(h, w):
        raise SettingsError(f"neigh {n} is larger than the {h}x{w} {what} of {layer}; use neigh <= {min(h, w)}")
    keep = torch.zeros(h, w)
    top, left = (h - n) // 2, (w - n) // 2
    keep[top:top + n, left:left + n] = 1
    return torch.cat([torch.zeros(prefix), keep.flatten()]).unsqueeze(1) if tokens else keep


def _channel_keep(code_shape, index, tokens=None) -> torch.Tensor:
    """1 at the channels ``index``: along the first axis, or the last (the features) of tokens."""
    keep = torch.zeros(code_shape[-1] if tokens else code_shape[0])
    keep[list(index)] = 1
    return keep if tokens else keep.view(-1, *([1] * (len(code_shape) - 1)))


class _PowClamped(torch.autograd.Function):
    """v^p with the derivative's v clamped below at ``eps`` (finite at v = 0 when p < 1)."""

    @staticmethod
    def forward(ctx, v, p, eps):
        ctx.save_for_backward(v, p)
        ctx.eps = eps
        return v.pow(p)

    @staticmethod
    def backward(ctx, grad):
        v, p = ctx.saved_tensors
        return grad * p * v.clamp_min(ctx.eps).pow(p - 1), None, None


def _tv2_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TV_2 per item and its gradient g = 2·(4x − the 4 neighbours), the border replicated (no
    difference past it); the value is the quadratic form's ½⟨x, g⟩. A handful of passes over
    the image for the paper's usual β = 2, where the general path takes a dozen and a power."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    g = x.mul(8)
    for neighbour in (p[..., 1:-1, 2:], p[..., 1:-1, :-2], p[..., 2:, 1:-1], p[..., :-2, 1:-1]):
        g.sub_(neighbour, alpha=2)
    return 0.5 * torch.linalg.vecdot(x.flatten(1), g.flatten(1)), g


class _TVQuadratic(torch.autograd.Function):
    """TV_2 per item, with the gradient ``_tv2_parts`` gives."""

    @staticmethod
    def forward(ctx, x):
        value, g = _tv2_parts(x)
        ctx.save_for_backward(g)
        return value

    @staticmethod
    def backward(ctx, grad):
        g, = ctx.saved_tensors
        return grad.view(-1, 1, 1, 1) * g


def _power(a: torch.Tensor, k: float) -> torch.Tensor:
    """a^k, by multiplications for small whole k (α = 6 gives k = 5): pow costs ~40 of them."""
    if k != int(k) or not 1 <= k <= 16:
        return a.pow(k)
    result, base, k = None, a, int(k)
    while k:
        if k & 1:
            result = base if result is None else result * base
        k >>= 1
        if k:
            base = base * base
    return result


def _abs_power_parts(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ|x|^α per item and sign(x)·|x|^(α−1) (the gradient over α). For an even whole α = 2k
    (the paper's 6) that is ||x^k||², a fused norm, and x^(2k−1) = x^k·x^(k−1): three
    multiplications in all for α = 6, with no |x| or sign to take."""
    if alpha == int(alpha) and alpha % 2 == 0 and alpha <= 16:
        lower = _power(x, alpha // 2 - 1)
        half = lower * x
        return torch.linalg.vector_norm(half.flatten(1), dim=1).square(), half * lower
    a = x.abs()
    p = _power(a, alpha - 1)
    return torch.linalg.vecdot(p.flatten(1), a.flatten(1)), torch.copysign(p, x)


def _pixel_power_parts(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_ij ||x_ij||^α per item, the norm over each pixel's channels, and x·||x_ij||^(α−2) (the
    gradient over α)."""
    n = x.square().sum(1, keepdim=True)
    # below α = 2 the power is negative: clamped, as TV_β's, so that a black pixel stays finite
    lower = torch.ones_like(n) if alpha == 2 else _power(n if alpha > 2 else n.clamp_min(TV_CLAMP), alpha / 2 - 1)
    return (lower * n).flatten(1).sum(1), x * lower


def pixel_alpha_norm(x: torch.Tensor, alpha) -> torch.Tensor:
    """Σ_ij ||x_ij||^α per item, the norm taken over each pixel's colour vector (IJCV 2016);
    ``alpha``: one number for all items, or one per item."""
    if not torch.is_tensor(alpha):
        return _PowerSum.apply(x, float(alpha), _pixel_power_parts)
    a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    return x.square().sum(1, keepdim=True).pow(a / 2).flatten(1).sum(1)


class _PowerSum(torch.autograd.Function):
    """A sum of powers per item for one α, from ``parts`` (``_abs_power_parts``: Σ|x|^α;
    ``_pixel_power_parts``: Σ_ij ||x_ij||^α), with the gradient α times the part it returns."""

    @staticmethod
    def forward(ctx, x, alpha: float, parts):
        value, signed = parts(x, alpha)
        ctx.save_for_backward(signed)
        ctx.alpha = alpha
        return value

    @staticmethod
    def backward(ctx, grad):
        signed, = ctx.saved_tensors
        return (grad * ctx.alpha).view(-1, *([1] * (signed.dim() - 1))) * signed, None, None


def tv_beta(x: torch.Tensor, beta) -> torch.Tensor:
    """TV_β per item: Σ_{c,i,j} (dx² + dy²)^(β/2), forward differences, zero past the border.
    ``beta``: one number for all items, or one per item."""
    if not torch.is_tensor(beta) and float(beta) == 2.0 and x.dim() == 4:
        return _TVQuadratic.apply(x)
    dx = torch.zeros_like(x)
    dy = torch.zeros_like(x)
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    v = dx * dx + dy * dy
    p = (torch.as_tensor(beta, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.dim() - 1))) / 2).expand_as(v)
    return _PowClamped.apply(v, p, TV_CLAMP).flatten(1).sum(1)


def alpha_norm(x: torch.Tensor, alpha) -> torch.Tensor:
    """Σ |x|^α per item; ``alpha``: one number for all items, or one per item."""
    if not torch.is_tensor(alpha):
        return _PowerSum.apply(x, float(alpha), _abs_power_parts)
    a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.dim() - 1)))
    return x.abs().pow(a).flatten(1).sum(1)


def regularise(x: torch.Tensor, grad: torch.Tensor, tv_weight: torch.Tensor, l2_weight: torch.Tensor,
               alpha: float, cvpr: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TV_2 and the α-norm of ``x`` per item (Σ|x|^α, ``cvpr``; else Σ_ij ||x_ij||^α), and
    ``grad`` with their weighted gradients added: in place, except under torch.compile, where
    a sum fuses into the loop that uses it and writing ``grad`` back would cost a pass."""
    tv, g_tv = _tv2_parts(x)
    value, signed = (_abs_power_parts if cvpr else _pixel_power_parts)(x, alpha)
    w_tv, w_alpha = tv_weight.view(-1, 1, 1, 1), (alpha * l2_weight).view(-1, 1, 1, 1)
    if torch.compiler.is_compiling():
        return tv, value, grad + g_tv * w_tv + signed * w_alpha
    return tv, value, grad.addcmul_(g_tv, w_tv).addcmul_(signed, w_alpha)


class _MaskedSquares(torch.autograd.Function):
    """Σ m·d² per item (d = Φ − Φ0; m None: every feature kept), keeping m·d for the gradient
    2·m·d: a few passes over the code where autograd's product of three tensors takes about
    eight. Without a mask the sum is a fused norm, which makes no temporary the size of the code
    (at conv1 the code is larger than the image, and these passes were most of the engine's
    work beyond the network's: measured)."""

    @staticmethod
    def forward(ctx, phi, phi0, m):
        d = (phi - phi0).flatten(1)
        if m is None:
            ctx.save_for_backward(d)
            value = torch.linalg.vector_norm(d, dim=1).square()
        else:
            md = d * m.flatten(1)
            ctx.save_for_backward(md)
            value = torch.linalg.vecdot(md, d)
        ctx.shape = phi.shape
        return value

    @staticmethod
    def backward(ctx, grad):
        md, = ctx.saved_tensors
        return (md * (2 * grad).unsqueeze(1)).view(ctx.shape), None, None


def target_norm2(phi0: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """||mΦ0||² per item (m weighting the squares; None: every feature), the l2 and inner
    losses' denominator."""
    t = phi0.flatten(1)
    if m is None:
        return torch.linalg.vector_norm(t, dim=1).square()
    return torch.linalg.vecdot(m.flatten(1) * t, t)


def feature_loss(phi: torch.Tensor, phi0: torch.Tensor, m: torch.Tensor | None, kind: str = "l2",
                 norm2: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item loss normalised by the masked target: l2 ||m(Φ−Φ0)||²/||mΦ0||², l1 the same with
    1-norms, inner −⟨mΦ, Φ0⟩/||mΦ0||²; and dot −⟨mΦ, w⟩ with the target w taken as it is (the
    IJCV paper's activation maximisation and caricatures build w already scaled). ``m`` None keeps
    every feature. ``norm2``: ``target_norm2(phi0, m)`` where it is known."""
    t = phi0.flatten(1)
    if kind == "l1":
        d = (phi - phi0).flatten(1).abs()
        if m is None:
            return d.sum(1) / t.abs().sum(1)
        m2 = m.flatten(1)
        return (m2 * d).sum(1) / (m2 * t.abs()).sum(1)
    if kind not in LOSSES:
        raise SettingsError(f"unknown loss {kind!r}; valid losses: {', '.join(LOSSES)}")
    kept = phi.flatten(1) if m is None else m.flatten(1) * phi.flatten(1)
    if kind == "dot":
        return -torch.linalg.vecdot(kept, t)
    norm2 = target_norm2(phi0, m) if norm2 is None else norm2
    if kind == "l2":
        return _MaskedSquares.apply(phi, phi0, m) / norm2
    return -torch.linalg.vecdot(kept, t) / norm2


def relative_error(phi: torch.Tensor, phi0: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """||m(Φ(x)−Φ0)|| / ||mΦ0|| per item."""
    return feature_loss(phi, phi0, m, "l2").sqrt()


def _one_or_each(values: list[float], device, dtype) -> float | torch.Tensor:
    return float(values[0]) if len(set(values)) == 1 else torch.tensor(values, device=device, dtype=dtype)


class Objective:
    """E(x) for a batch: item b has target ``targets[b]``, mask ``masks[b]`` and ``settings[b]``.

    With a ``SharedTrunk`` as the representation, the batch holds ``counts[g]`` items of each
    of its layers in turn, and ``targets`` and ``masks`` are lists with one tensor per layer.
    ``image_shape`` is the (C, H, W) the network sees; the image x being optimised may be larger
    (a jitter margin) when a ``view`` of it is what the network sees."""

    def __init__(self, representation, targets, masks, settings: list[Setting],
                 image_shape: tuple[int, int, int], loss: str = "l2", counts: list[int] | None = None):
        if loss not in LOSSES:
            raise SettingsError(f"unknown loss {loss!r}; valid losses: {', '.join(LOSSES)}")
        forms = {s.form for s in settings}
        if len(forms) > 1:
            raise SettingsError(f"the settings of one run mix the forms {', '.join(sorted(forms))}; "
                                f"run each form on its own")
        if counts is None:
            targets, masks = [targets], [masks]
        # an all-ones mask (no neigh, group or channels) is dropped: the loss then skips its passes
        masks = [None if bool((m == 1).all()) else m for m in masks]
        self.norms2 = [target_norm2(t, m) for t, m in zip(targets, masks)]
        for norm2, rep in zip(self.norms2, getattr(representation, "representations", [representation])):
            if bool((norm2 == 0).any()):
                raise CodeError(f"the target code of {rep.layer} is all zero under the mask, so the "
                                f"normalised loss is undefined; choose another layer, image or mask")
        dev, dt = targets[0].device, targets[0].dtype
        self.rep, self.targets, self.masks, self.loss, self.counts = representation, targets, masks, loss, counts
        self.form = forms.pop()
        self.image_shape = tuple(image_shape)
        self.sigma = sigma(*image_shape)
        _, h, w = image_shape
        # how a rate of the schedule maps to pixels: the CVPR rates are for u = x/σ, the IJCV ones
        # for regularisers averaged over the pixels (scaled back by their number)
        self.rate_unit = self.sigma ** 2 if self.form == "cvpr2015" else float(h * w)
        # one number when the items agree (the usual case): the fast paths of tv_beta and alpha_norm
        self.beta = _one_or_each([s.beta for s in settings], dev, dt)
        self.alpha = _one_or_each([s.alpha for s in settings], dev, dt)
        per_item = (lambda v: torch.tensor(v, device=dev, dtype=dt))  # noqa: E731
        self.loss_weight = None if all(s.weight == 1 for s in settings) else per_item([s.weight for s in settings])
        if self.form == "cvpr2015":
            self.tv_weight = per_item([s.lambda_tv / 2 / self.sigma ** 2 for s in settings])
            self.l2_weight = per_item([s.lambda_l2 / 2 / self.sigma ** 2 for s in settings])
        else:  # divided by the pixels of x when it is known (weights)
            self.tv_weight = per_item([s.lambda_tv for s in settings])
            self.l2_weight = per_item([s.lambda_l2 for s in settings])

    def _codes(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.rep(x)] if self.counts is None else self.rep(x, self.counts)

    def _per_item(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        return torch.cat([feature_loss(phi, t, m, kind, n) for phi, t, m, n
                          in zip(self._codes(x), self.targets, self.masks, self.norms2)])

    def _loss(self, x: torch.Tensor, view) -> torch.Tensor:
        """C times the loss on what the network sees."""
        loss = self._per_item(x if view is None else view(x), self.loss)
        return loss if self.loss_weight is None else loss * self.loss_weight

    def weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """λ_TV and λ_α per item, as they multiply TV_β and the α-norm of ``x``."""
        if self.form == "cvpr2015":
            return self.tv_weight, self.l2_weight
        pixels = x.shape[-2] * x.shape[-1]
        return self.tv_weight / pixels, self.l2_weight / pixels

    def _alpha_norm(self, x: torch.Tensor) -> torch.Tensor:
        return (alpha_norm if self.form == "cvpr2015" else pixel_alpha_norm)(x, self.alpha)

    def __call__(self, x: torch.Tensor, view=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """E per item and its terms; ``view`` (x → the network's input, e.g. a jitter crop)
        chooses what the loss sees, the regularisers always see all of x."""
        loss = self._loss(x, view)
        return self.weigh(x, loss, tv_beta(x, self.beta), self._alpha_norm(x))

    def weigh(self, x, loss, tv, alpha) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """E and its terms from the loss and the unweighted TV_β and α-norm."""
        tv_weight, l2_weight = self.weights(x)
        tv, alpha = tv_weight * tv, l2_weight * alpha
        return loss + tv + alpha, {"loss": loss, "tv": tv, "alpha": alpha}

    @property
    def closed_form(self) -> bool:
        """One β = 2 and one α for the batch (the paper's settings): the regularisers' gradients
        then have a closed form (``regularisers``)."""
        return not torch.is_tensor(self.beta) and self.beta == 2.0 and not torch.is_tensor(self.alpha)

    def loss_and_gradient(self, x: torch.Tensor, view=None) -> tuple[torch.Tensor, torch.Tensor]:
        """C times the loss per item, and the gradient of its sum."""
        loss = self._loss(x, view)
        grad, = torch.autograd.grad(loss.sum(), x)
        return loss, grad

    def value_and_gradient(self, x: torch.Tensor, view=None
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """``self(x, view)`` and the gradient of its sum. Where ``closed_form``, the regularisers'
        gradients are added in closed form into the loss's, a few passes over the image fewer
        than autograd through them (docs/benchmarks/notes.md)."""
        if not self.closed_form or x.dim() != 4:
            total, terms = self(x, view)
            grad, = torch.autograd.grad(total.sum(), x)
            return total, terms, grad
        loss, grad = self.loss_and_gradient(x, view)
        with torch.no_grad():
            tv_weight, l2_weight = self.weights(x)
            tv, alpha, grad = regularise(x, grad, tv_weight, l2_weight, self.alpha, self.form == "cvpr2015")
        return *self.weigh(x, loss, tv, alpha), grad

    @torch.no_grad()
    def error(self, x: torch.Tensor) -> torch.Tensor:
        """||m(Φ(x)−Φ0)|| / ||mΦ0|| per item."""
        return self._per_item(x, "l2").sqrt()
