"""The objective of method.md §1 and the feature masks of §3, checked against hand computations
and finite differences."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from preimage.engine.objective import (
    LAMBDA_L2,
    SIGMA_227,
    Objective,
    Setting,
    alpha_norm,
    feature_loss,
    mask,
    relative_error,
    sigma,
    tv_beta,
)
from preimage.errors import CodeError, SettingsError
from preimage.representations import Representation
from preimage.representations.base import layer_table
from preimage.representations.receptive_field import Geometry


def identity_rep(channels: int = 1) -> Representation:
    """Φ(x) = x, so the feature loss can be computed by hand."""
    return Representation(nn.Identity(), model="identity", layer="id",
                          layers=layer_table([("id", channels, Geometry(), True)]), weights="none",
                          trained=True, mean=(0.0,) * channels, input_size=None)


def tv_reference(x: torch.Tensor, beta: float) -> torch.Tensor:
    """An independent, loop-based TV_β per item (zero difference past the last row/column)."""
    out = []
    for item in x.double():
        total = 0.0
        C, H, W = item.shape
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    dx = item[c, i, j + 1] - item[c, i, j] if j + 1 < W else 0.0
                    dy = item[c, i + 1, j] - item[c, i, j] if i + 1 < H else 0.0
                    total += float(dx * dx + dy * dy) ** (beta / 2)
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


# ----------------------------------------------------------------------------- TV_β and α-norm


def test_tv_on_hand_computed_2x2():
    # [[a, b], [c, d]] = [[0, 3], [4, 0]]:
    #   (0,0): dx = b-a = 3, dy = c-a = 4      -> squared 25, magnitude 5
    #   (0,1): dx = 0 (past the last column), dy = d-b = -3 -> 9, 3
    #   (1,0): dx = d-c = -4, dy = 0 (past the last row)   -> 16, 4
    #   (1,1): both 0                                      -> 0, 0
    x = torch.tensor([[[[0.0, 3.0], [4.0, 0.0]]]])
    assert tv_beta(x, 2.0).item() == pytest.approx(25 + 9 + 16)
    assert tv_beta(x, 1.0).item() == pytest.approx(5 + 3 + 4)
    # β = 3: 25^1.5 + 9^1.5 + 16^1.5
    assert tv_beta(x, 3.0).item() == pytest.approx(125 + 27 + 64)


def test_tv_on_hand_computed_3x3_two_channels():
    # Channel 0 is a vertical step: only the horizontal differences from column 0 to 1 are
    # non-zero (2 each, 3 rows); the last column's difference past the border is 0.
    # Channel 1 is a horizontal ramp 0, 1, 2 downwards: vertical differences 1 in rows 0 and 1.
    x = torch.zeros(1, 2, 3, 3)
    x[0, 0, :, 1:] = 2.0
    x[0, 1] = torch.tensor([0.0, 1.0, 2.0]).view(3, 1)
    # β = 2: channel 0: 3 · 2² = 12, channel 1: 6 · 1² = 6
    assert tv_beta(x, 2.0).item() == pytest.approx(18)
    # β = 1: channel 0: 3 · 2 = 6, channel 1: 6 · 1 = 6
    assert tv_beta(x, 1.0).item() == pytest.approx(12)


def test_tv_sums_over_channels_not_across_them():
    # A channel-wise constant image has zero TV even if channels differ from each other.
    x = torch.tensor([1.0, -5.0, 40.0]).view(1, 3, 1, 1).expand(1, 3, 6, 7).contiguous()
    assert tv_beta(x, 2.0).item() == 0.0
    assert tv_beta(x, 1.0).item() == 0.0


@pytest.mark.parametrize("beta", [1.0, 2.0, 1.5])
def test_tv_matches_loop_reference_on_random_images(beta):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(tv_beta(x, beta), tv_reference(x, beta), rtol=1e-10)


@pytest.mark.parametrize("shape", [(2, 3, 9, 7), (1, 1, 1, 5), (3, 2, 2, 2)])
def test_one_beta_and_alpha_for_all_items_equal_the_per_item_path(shape):
    """tv_beta(x, 2.0) and alpha_norm(x, 6.0) take fast paths (a 3x3 convolution, a saved power);
    they must give the per-item path's values and gradients."""
    x = _random_point(7, shape).mul(50).requires_grad_(True)
    each = torch.full((shape[0],), 1.0, dtype=x.dtype)
    pairs = [(lambda t: tv_beta(t, 2.0), lambda t: tv_beta(t, 2 * each))]
    pairs += [(lambda t, a=a: alpha_norm(t, a), lambda t, a=a: alpha_norm(t, a * each)) for a in (6.0, 3.0, 2.5, 12.0)]
    for fast, general in pairs:
        w = torch.arange(1.0, shape[0] + 1, dtype=x.dtype)  # a different weight per item
        v_fast, v_general = fast(x), general(x)
        torch.testing.assert_close(v_fast, v_general, rtol=1e-10, atol=0)
        g_fast, = torch.autograd.grad((w * v_fast).sum(), x)
        g_general, = torch.autograd.grad((w * v_general).sum(), x)
        torch.testing.assert_close(g_fast, g_general, rtol=1e-10, atol=1e-10 * g_general.abs().max().item())


@pytest.mark.parametrize("kind", ["l2", "inner"])
def test_feature_loss_gradient_matches_finite_differences(kind):
    phi0 = _random_point(8, (3, 4, 2, 5))
    m = torch.rand(phi0.shape, generator=torch.Generator().manual_seed(9), dtype=phi0.dtype)  # weights, not 0/1
    phi = _random_point(10, phi0.shape).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: feature_loss(p, phi0, m, kind), (phi,), eps=1e-6, atol=1e-7, rtol=1e-6)
    # the loss is the definition: Σ m·d² / Σ m·Φ0² per item
    d, t = (phi - phi0).flatten(1), phi0.flatten(1)
    expected = (m.flatten(1) * d * d).sum(1) if kind == "l2" else -(m.flatten(1) * phi.flatten(1) * t).sum(1)
    torch.testing.assert_close(feature_loss(phi, phi0, m, kind), expected / (m.flatten(1) * t * t).sum(1))


@pytest.mark.parametrize("kind", ["l2", "l1", "inner"])
def test_no_mask_is_the_all_ones_mask(kind):
    """m None takes the loss's fused path; its value and gradient are those of a mask of ones."""
    phi0 = _random_point(8, (3, 4, 2, 5))
    phi = _random_point(10, phi0.shape).requires_grad_(True)
    ones = torch.ones_like(phi0)
    torch.testing.assert_close(feature_loss(phi, phi0, None, kind), feature_loss(phi, phi0, ones, kind))
    g_none, = torch.autograd.grad(feature_loss(phi, phi0, None, kind).sum(), phi)
    g_ones, = torch.autograd.grad(feature_loss(phi, phi0, ones, kind).sum(), phi)
    torch.testing.assert_close(g_none, g_ones)
    if kind != "l1":
        assert torch.autograd.gradcheck(lambda p: feature_loss(p, phi0, None, kind), (phi,), eps=1e-6, atol=1e-7,
                                        rtol=1e-6)


def test_alpha_norm_hand_computed():
    x = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]]], dtype=torch.float64)
    assert alpha_norm(x, 6.0).item() == pytest.approx(1 + 64 + 0.5 ** 6)
    # |x|, not x: an odd α still counts negative values positively.
    assert alpha_norm(x, 3.0).item() == pytest.approx(1 + 8 + 0.125)


def _random_point(seed, shape=(2, 3, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_tv_gradient_matches_finite_differences(beta):
    x = _random_point(2)
    # For β = 1 make sure no difference magnitude is near zero (except the bottom-right corner,
    # whose magnitude is identically 0 and does not depend on x), where TV is not differentiable.
    dx = torch.zeros_like(x)
    dy = torch.zeros_like(x)
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    mag = (dx * dx + dy * dy).sqrt()[..., :-1, :].flatten().tolist() + \
        (dx * dx + dy * dy).sqrt()[..., -1, :-1].flatten().tolist()
    assert min(mag) > 1e-2
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: tv_beta(t, beta), (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_tv_gradient_matches_own_central_differences():
    # An independent FD check (not via gradcheck) of ∂TV_1/∂x at a few entries.
    x = _random_point(3, (1, 2, 4, 4))
    x.requires_grad_(True)
    tv_beta(x, 1.0).sum().backward()
    h = 1e-6
    for idx in [(0, 0, 0, 0), (0, 1, 2, 3), (0, 0, 3, 1), (0, 1, 3, 3), (0, 0, 1, 2)]:
        xp, xm = x.detach().clone(), x.detach().clone()
        xp[idx] += h
        xm[idx] -= h
        fd = (tv_reference(xp, 1.0) - tv_reference(xm, 1.0)).item() / (2 * h)
        assert x.grad[idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("alpha", [6.0, 2.5])
def test_alpha_norm_gradient_matches_finite_differences(alpha):
    x = _random_point(4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: alpha_norm(t, alpha), (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_tv_beta1_gradient_finite_on_flat_image():
    # Where all differences are zero, β = 1 has an infinite derivative of the square root; the
    # reference clamps the inner magnitude at 1e-5, so the gradient must be finite (here zero).
    x = torch.full((1, 3, 4, 4), 7.0, requires_grad=True)
    tv_beta(x, 1.0).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad, torch.zeros_like(x))
    # One changed pixel: the gradient is finite everywhere and non-zero around the pixel.
    y = torch.zeros(1, 1, 5, 5)
    y[0, 0, 2, 2] = 1.0
    y.requires_grad_(True)
    tv_beta(y, 1.0).sum().backward()
    assert torch.isfinite(y.grad).all()
    assert y.grad[0, 0, 2, 2] > 0


def test_tv_and_alpha_per_item_parameters():
    x = _random_point(5, (3, 2, 4, 5))
    betas = torch.tensor([1.0, 2.0, 1.5], dtype=torch.float64)
    batched = tv_beta(x, betas)
    for b in range(3):
        assert batched[b].item() == pytest.approx(tv_beta(x[b:b + 1], float(betas[b])).item(), rel=1e-12)
        assert batched[b].item() == pytest.approx(tv_reference(x[b:b + 1], float(betas[b])).item(), rel=1e-10)
    alphas = torch.tensor([6.0, 2.0, 1.0], dtype=torch.float64)
    a = alpha_norm(x, alphas)
    for b in range(3):
        assert a[b].item() == pytest.approx(x[b].abs().pow(float(alphas[b])).sum().item(), rel=1e-12)


# ----------------------------------------------------------------------------- σ and λ_α


def test_sigma_reference_value_and_scaling():
    assert sigma(3, 227, 227) == pytest.approx(27098.1157, abs=1e-9)
    assert SIGMA_227 == 27098.1157
    # Scales with the square root of the number of values.
    assert sigma(3, 454, 454) == pytest.approx(2 * 27098.1157)
    assert sigma(3, 227, 908) == pytest.approx(2 * 27098.1157)
    assert sigma(1, 227, 227) == pytest.approx(27098.1157 / math.sqrt(3))
    # ... and is ≈ 68.9·sqrt(3HW), the RMS of a typical pixel value (method.md §1).
    assert sigma(3, 100, 60) == pytest.approx(68.9 * math.sqrt(3 * 100 * 60), rel=1e-3)


def test_lambda_alpha_default_at_227():
    s = Setting()
    assert s.lambda_l2 == LAMBDA_L2 == 8e-10
    assert s.alpha == 6 and s.beta == 2 and s.lambda_tv == 1
    lam = s.lambda_alpha(sigma(3, 227, 227))
    assert lam == pytest.approx(2.16e8, rel=3e-3)
    assert lam == pytest.approx(8e-10 / 2 * 27098.1157 ** 4, rel=1e-12)
    assert s.lambda_vbeta == 0.5
    assert Setting(lambda_tv=100).lambda_vbeta == 50
    d = s.describe(sigma(3, 227, 227))
    assert d["lambda_vbeta"] == 0.5 and d["lambda_alpha"] == pytest.approx(lam) and d["beta"] == 2


# ----------------------------------------------------------------------------- the whole objective


def test_objective_hand_computed_tiny_example():
    rep = identity_rep()
    x = torch.tensor([[[[0.0, 3.0], [4.0, 0.0]]]], dtype=torch.float64)
    target = torch.tensor([[[[1.0, 2.0], [2.0, 0.0]]]], dtype=torch.float64)
    setting = Setting(lambda_tv=10.0, lambda_l2=0.5, alpha=2.0, beta=2.0)
    obj = Objective(rep, target, torch.ones_like(target), [setting], (1, 2, 2))
    total, terms = obj(x)
    s2 = sigma(1, 2, 2) ** 2
    assert s2 == pytest.approx(27098.1157 ** 2 * 4 / (3 * 227 * 227))
    loss = ((0 - 1) ** 2 + (3 - 2) ** 2 + (4 - 2) ** 2 + 0) / (1 + 4 + 4 + 0)  # 6/9
    tv = 10.0 / 2 * 50 / s2  # TV_2 of this image is 50 (see test_tv_on_hand_computed_2x2)
    alpha = 0.5 / 2 * (0 + 9 + 16 + 0) / s2
    assert terms["loss"].item() == pytest.approx(loss)
    assert terms["tv"].item() == pytest.approx(tv)
    assert terms["alpha"].item() == pytest.approx(alpha)
    assert total.item() == pytest.approx(loss + tv + alpha)
    assert obj.error(x).item() == pytest.approx(math.sqrt(loss))


def test_objective_in_paper_variable():
    # E in pixel units equals loss + λ_Vβ σ^(β−2) R_Vβ(u) + λ_α R_α(u) with u = x/σ (method.md §1).
    rep = identity_rep(3)
    g = torch.Generator().manual_seed(6)
    x = 60 * torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64)
    target = 60 * torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64)
    setting = Setting(lambda_tv=10.0)
    obj = Objective(rep, target, torch.ones_like(target), [setting], (3, 8, 8))
    total, terms = obj(x)
    s = sigma(3, 8, 8)
    u = x / s
    paper = (terms["loss"] + setting.lambda_vbeta * s ** (setting.beta - 2) * tv_beta(u, 2.0)
             + setting.lambda_alpha(s) * alpha_norm(u, 6.0))
    assert total.item() == pytest.approx(paper.item(), rel=1e-10)


def test_objective_each_item_has_its_own_settings():
    rep = identity_rep(2)
    g = torch.Generator().manual_seed(7)
    x = 50 * torch.randn(3, 2, 6, 6, generator=g, dtype=torch.float64)
    target = 50 * torch.randn(3, 2, 6, 6, generator=g, dtype=torch.float64)
    settings = [Setting(lambda_tv=1.0, beta=2.0), Setting(lambda_tv=100.0, beta=1.0, lambda_l2=1e-6),
                Setting(lambda_tv=0.0, alpha=2.0, group=2)]
    masks = torch.stack([mask((2, 6, 6), s) for s in settings]).double()
    total, terms = Objective(rep, target, masks, settings, (2, 6, 6))(x)
    for b, s in enumerate(settings):
        alone, alone_terms = Objective(rep, target[b:b + 1], masks[b:b + 1], [s], (2, 6, 6))(x[b:b + 1])
        assert total[b].item() == pytest.approx(alone.item(), rel=1e-12)
        for k in ("loss", "tv", "alpha"):
            assert terms[k][b].item() == pytest.approx(alone_terms[k].item(), rel=1e-12, abs=1e-300)
    # The three items really are weighted differently.
    assert terms["tv"][2].item() == 0.0
    s2 = sigma(2, 6, 6) ** 2
    assert terms["tv"][1].item() == pytest.approx(100 / 2 * tv_reference(x[1:2], 1.0).item() / s2, rel=1e-10)
    assert terms["alpha"][2].item() == pytest.approx(LAMBDA_L2 / 2 * (x[2] ** 2).sum().item() / s2, rel=1e-10)
    # Item 2 only sees the second channel.
    d = (x[2, 1] - target[2, 1])
    assert terms["loss"][2].item() == pytest.approx(((d * d).sum() / (target[2, 1] ** 2).sum()).item())


@pytest.mark.parametrize("alpha", [6.0, 2.0, 4.0, 3.0, 2.5])
def test_value_and_gradient_in_closed_form_match_autograd_of_the_general_path(alpha):
    """β = 2 and one α: the regularisers' gradients are added in closed form. They must match
    autograd through the general path (β and α as per-item tensors: differences and pow)."""
    rep = identity_rep(2)
    g = torch.Generator().manual_seed(11)
    x = (50 * torch.randn(3, 2, 7, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
    target = 50 * torch.randn(3, 2, 7, 6, generator=g, dtype=torch.float64)
    settings = [Setting(alpha=alpha), Setting(lambda_tv=30.0, lambda_l2=1e-6, alpha=alpha, group=1),
                Setting(lambda_tv=0.0, alpha=alpha)]
    masks = torch.stack([mask((2, 7, 6), st) for st in settings]).double()
    obj = Objective(rep, target, masks, settings, (2, 7, 6))
    total, terms, grad = obj.value_and_gradient(x)
    s2 = sigma(2, 7, 6) ** 2
    tv = torch.tensor([st.lambda_tv / 2 for st in settings], dtype=x.dtype) / s2 * tv_beta(x, torch.full((3,), 2.0))
    a = torch.tensor([st.lambda_l2 / 2 for st in settings], dtype=x.dtype) / s2 * alpha_norm(x, torch.full((3,), alpha))
    reference = feature_loss(x, target, masks) + tv + a
    torch.testing.assert_close(total, reference, rtol=1e-10, atol=0)
    torch.testing.assert_close(terms["tv"], tv, rtol=1e-10, atol=0)
    torch.testing.assert_close(terms["alpha"], a, rtol=1e-10, atol=0)
    expected, = torch.autograd.grad(reference.sum(), x)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12 * expected.abs().max().item())


def test_value_and_gradient_without_a_closed_form_is_autograd_of_the_objective():
    rep = identity_rep(1)
    g = torch.Generator().manual_seed(12)
    x = (50 * torch.randn(2, 1, 5, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    target = 50 * torch.randn(2, 1, 5, 5, generator=g, dtype=torch.float64)
    obj = Objective(rep, target, torch.ones_like(target), [Setting(), Setting(beta=1.0)], (1, 5, 5))
    total, terms, grad = obj.value_and_gradient(x)
    expected_total, _ = obj(x)
    expected, = torch.autograd.grad(expected_total.sum(), x)
    torch.testing.assert_close(total, expected_total)
    torch.testing.assert_close(grad, expected)


def test_objective_gradient_per_item_is_independent():
    rep = identity_rep(1)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 1, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 1, 5, 5, generator=g, dtype=torch.float64)
    obj = Objective(rep, target, torch.ones_like(target), [Setting(lambda_tv=1e6), Setting(beta=1.0)],
                    (1, 5, 5))
    assert torch.autograd.gradcheck(lambda t: obj(t)[0], (x,), eps=1e-6, atol=1e-6, rtol=1e-5)
    total, _ = obj(x)
    g0, = torch.autograd.grad(total[0], x)
    assert torch.equal(g0[1], torch.zeros_like(g0[1]))


def test_objective_rejects_all_zero_masked_target():
    rep = identity_rep(2)
    target = torch.zeros(1, 2, 3, 3)
    target[0, 0] = 1.0  # only channel 0 is non-zero; group 2 keeps channel 1
    with pytest.raises(CodeError, match="all zero"):
        Objective(rep, target, mask((2, 3, 3), Setting(group=2))[None], [Setting(group=2)], (2, 3, 3))
    with pytest.raises(SettingsError, match="unknown loss"):
        Objective(rep, target, torch.ones_like(target), [Setting()], (2, 3, 3), loss="l3")


# ----------------------------------------------------------------------------- losses


def test_l2_l1_inner_losses_hand_example():
    phi = torch.tensor([[1.0, -2.0, 3.0, 0.0]])
    phi0 = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    m = torch.ones_like(phi)
    # l2: ((−1)² + 0 + 2² + 1²) / (4 + 4 + 1 + 1) = 6/10
    assert feature_loss(phi, phi0, m, "l2").item() == pytest.approx(0.6)
    # l1: (1 + 0 + 2 + 1) / (2 + 2 + 1 + 1) = 4/6
    assert feature_loss(phi, phi0, m, "l1").item() == pytest.approx(4 / 6)
    # inner: −(2 + 4 + 3 + 0) / 10
    assert feature_loss(phi, phi0, m, "inner").item() == pytest.approx(-0.9)
    assert relative_error(phi, phi0, m).item() == pytest.approx(math.sqrt(0.6))
    # With the last two features masked out:
    m2 = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert feature_loss(phi, phi0, m2, "l2").item() == pytest.approx(1 / 8)
    assert feature_loss(phi, phi0, m2, "l1").item() == pytest.approx(1 / 4)
    assert feature_loss(phi, phi0, m2, "inner").item() == pytest.approx(-6 / 8)
    with pytest.raises(SettingsError, match="valid losses: l2, l1, inner"):
        feature_loss(phi, phi0, m, "cosine")


def test_objective_with_l1_and_inner_losses():
    rep = identity_rep()
    x = torch.tensor([[[[0.0, 3.0], [4.0, 0.0]]]], dtype=torch.float64)
    target = torch.tensor([[[[1.0, 2.0], [2.0, -1.0]]]], dtype=torch.float64)
    m = torch.ones_like(target)
    _, t1 = Objective(rep, target, m, [Setting()], (1, 2, 2), loss="l1")(x)
    assert t1["loss"].item() == pytest.approx((1 + 1 + 2 + 1) / (1 + 2 + 2 + 1))
    _, ti = Objective(rep, target, m, [Setting()], (1, 2, 2), loss="inner")(x)
    assert ti["loss"].item() == pytest.approx(-(0 + 6 + 8 + 0) / (1 + 4 + 4 + 1))


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("h,w,n", [(7, 7, 3), (8, 8, 5), (13, 9, 5), (6, 6, 6), (5, 5, 1)])
def test_neigh_mask_keeps_central_n_by_n(h, w, n):
    m = mask((4, h, w), Setting(neigh=n))
    assert m.shape == (4, h, w)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    # All channels kept identically; exactly n·n positions, contiguous.
    assert torch.equal(m, m[:1].expand_as(m))
    kept = m[0].nonzero()
    assert len(kept) == n * n
    rows, cols = kept[:, 0], kept[:, 1]
    assert rows.max() - rows.min() == n - 1 and cols.max() - cols.min() == n - 1
    # Central: the margins on either side differ by at most one.
    top, bottom = rows.min().item(), h - 1 - rows.max().item()
    left, right = cols.min().item(), w - 1 - cols.max().item()
    assert abs(top - bottom) <= 1 and abs(left - right) <= 1


def test_neigh_mask_exact_positions():
    m = mask((2, 7, 9), Setting(neigh=3))
    expected = torch.zeros(7, 9)
    expected[2:5, 3:6] = 1
    assert torch.equal(m[0], expected) and torch.equal(m[1], expected)


def test_group_masks_keep_halves_of_channels():
    m1 = mask((16, 3, 3), Setting(group=1))
    m2 = mask((16, 3, 3), Setting(group=2))
    assert torch.equal(m1[:8], torch.ones(8, 3, 3)) and torch.equal(m1[8:], torch.zeros(8, 3, 3))
    assert torch.equal(m2[:8], torch.zeros(8, 3, 3)) and torch.equal(m2[8:], torch.ones(8, 3, 3))
    # Flat codes (fully connected layers) too.
    f = mask((10,), Setting(group=2))
    assert f.tolist() == [0] * 5 + [1] * 5


def test_channel_index_mask_and_combination_with_neigh():
    m = mask((6, 5, 5), Setting(channels=(0, 4)))
    assert [bool(m[c].all()) for c in range(6)] == [True, False, False, False, True, False]
    assert not m[[1, 2, 3, 5]].any()
    both = mask((6, 5, 5), Setting(channels=[3], neigh=1))
    assert both.sum().item() == 1 and both[3, 2, 2].item() == 1
    assert Setting(channels=[1, 2]).channels == (1, 2)  # normalised to a hashable tuple


def test_mask_errors():
    with pytest.raises(SettingsError, match="neigh 9 is larger than the 5x5 map"):
        mask((3, 5, 5), Setting(neigh=9))
    with pytest.raises(SettingsError, match="flat vector"):
        mask((100,), Setting(neigh=3))
    with pytest.raises(SettingsError, match=r"channel indices \[7\] out of range"):
        mask((6, 5, 5), Setting(channels=(1, 7)))


@pytest.mark.parametrize("setting,outside,inside", [
    (Setting(neigh=3), (0, 0, 0), (0, 3, 3)),
    (Setting(group=1), (5, 3, 3), (2, 0, 6)),
    (Setting(group=2), (0, 3, 3), (7, 6, 0)),
    (Setting(channels=(2,)), (3, 3, 3), (2, 1, 1)),
])
def test_masked_out_features_do_not_count(setting, outside, inside):
    shape = (8, 7, 7)
    g = torch.Generator().manual_seed(9)
    phi0 = torch.randn(1, *shape, generator=g)
    phi = torch.randn(1, *shape, generator=g)
    m = mask(shape, setting)[None]
    assert m[(0, *outside)] == 0 and m[(0, *inside)] == 1
    base = feature_loss(phi, phi0, m).item()
    for changed_at, changes in ((outside, False), (inside, True)):
        p = phi.clone()
        p[(0, *changed_at)] += 10.0
        t = phi0.clone()
        t[(0, *changed_at)] += 3.0
        assert (feature_loss(p, phi0, m).item() != base) == changes
        # Changing the target at a masked-out position changes neither the loss nor ||mΦ0||.
        assert (feature_loss(phi, t, m).item() != base) == changes


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kwargs,name", [
    (dict(lambda_tv=-1.0), "lambda_tv"),
    (dict(lambda_tv=float("nan")), "lambda_tv"),
    (dict(lambda_tv=float("inf")), "lambda_tv"),
    (dict(lambda_l2=-1e-10), "lambda_l2"),
    (dict(lambda_l2=float("nan")), "lambda_l2"),
    (dict(beta=0.0), "beta"),
    (dict(beta=-2.0), "beta"),
    (dict(beta=float("nan")), "beta"),
    (dict(alpha=0), "alpha"),
    (dict(group=3), "group"),
    (dict(group=0), "group"),
    (dict(neigh=0), "neigh"),
    (dict(neigh=2.5), "neigh"),
    (dict(group=1, channels=(0,)), "group"),
    (dict(lambda_tv="10"), "lambda_tv"),
])
def test_setting_validation(kwargs, name):
    with pytest.raises(SettingsError, match=name):
        Setting(**kwargs)


def test_valid_settings_accepted():
    Setting(lambda_tv=0, lambda_l2=0, beta=1, alpha=6, neigh=5, group=2)
    Setting(lambda_tv=100.0, beta=1.0, channels=(0, 1, 2))
