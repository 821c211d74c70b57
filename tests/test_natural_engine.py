"""The engine's IJCV 2016 parts (ijcv.md §1–3) and the Fourier parameterisation: the pixel-averaged
regularisers against autograd and finite differences, AdaGrad-momentum against a hand computation,
seeded jitter, the colour-norm box, stages, start images."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from preimage import Schedule, invert
from preimage.engine.objective import Objective, Setting, pixel_alpha_norm
from preimage.engine.optimise import RunOptions, _descend, start_noise
from preimage.engine.parameterisations import Fourier, Pixels
from preimage.engine.schedule import Stage
from preimage.engine.transforms import Jitter, Rotate, Scale, Transforms, parse
from preimage.errors import SettingsError

SIGMA = 80.0
IJCV = Setting(form="ijcv2016", sigma=SIGMA, lambda_tv=(6.5 / SIGMA) ** 2, lambda_l2=(1 / SIGMA) ** 6, weight=20.0)


def run(rep, x=None, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("device", "cpu")
    return invert(rep, x, **kw)


def test_pixel_alpha_norm_is_the_norm_of_each_colour_vector():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    expected = (x.square().sum(1) ** 3).flatten(1).sum(1)  # ||x_ij||^6
    assert torch.allclose(pixel_alpha_norm(x, 6.0), expected)
    assert torch.allclose(pixel_alpha_norm(x, torch.tensor([6.0, 3.0])),
                          torch.stack([expected[0], (x[1].square().sum(0) ** 1.5).sum()]))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: pixel_alpha_norm(v, 6.0), (x,))
    assert torch.autograd.gradcheck(lambda v: pixel_alpha_norm(v, 3.0), (x,))


def _ijcv_energy(rep, target, x, window, setting):
    """E of ijcv.md §2 written out: C·||Φ(crop) − Φ0||²/||Φ0||² + λ_TV·TV/HW + λ_α·Σ||x_ij||^α/HW."""
    phi = rep(window(x))
    loss = ((phi - target) ** 2).flatten(1).sum(1) / (target ** 2).flatten(1).sum(1)
    hw = x.shape[-2] * x.shape[-1]
    dx = torch.zeros_like(x)
    dy = torch.zeros_like(x)
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    tv = (dx ** 2 + dy ** 2).flatten(1).sum(1)
    norm = (x.square().sum(1) ** 3).flatten(1).sum(1)
    return setting.weight * loss + setting.lambda_tv * tv / hw + setting.lambda_l2 * norm / hw


def test_ijcv_objective_value_and_gradient(linear_rep, small_images):
    """The closed-form fast path against the energy written out, autograd through it and finite
    differences, with a jitter window smaller than x (the regularisers see all of x)."""
    rep = linear_rep().double()
    target = rep(small_images[:1].double())
    obj = Objective(rep, target, torch.ones_like(target), [IJCV], (3, 33, 33))
    window = Transforms((Jitter(3),)).view(0, 5)
    x = (40 * torch.randn(1, 3, 35, 35, dtype=torch.float64)).requires_grad_(True)
    total, terms, grad = obj.value_and_gradient(x, window)
    expected = _ijcv_energy(rep, target, x, window, IJCV)
    assert torch.allclose(total, expected, rtol=1e-10)
    auto, = torch.autograd.grad(expected.sum(), x)
    assert torch.allclose(grad, auto, rtol=1e-8, atol=1e-14)
    # finite differences along a random direction
    d = torch.randn_like(x)
    h = 1e-3
    with torch.no_grad():
        fd = (_ijcv_energy(rep, target, x + h * d, window, IJCV) - _ijcv_energy(rep, target, x - h * d, window, IJCV)) / (2 * h)
    assert float(fd) == pytest.approx(float((grad * d).sum()), rel=1e-6)
    assert obj.rate_unit == 33 * 33  # the rate is scaled by the pixels the network sees


def test_dot_loss_is_the_plain_inner_product(linear_rep, small_images):
    rep = linear_rep()
    w = torch.randn_like(rep(small_images[:1]))
    x = small_images[1:]
    obj = Objective(rep, w, torch.ones_like(w), [IJCV], (3, 33, 33), loss="dot")
    _, terms = obj(x)
    assert torch.allclose(terms["loss"], -IJCV.weight * (rep(x) * w).sum(), rtol=1e-5)


def test_mixed_forms_are_refused(linear_rep, small_images):
    rep = linear_rep()
    t = rep(small_images[:1]).expand(2, -1, -1, -1)
    with pytest.raises(SettingsError, match="mix the forms"):
        Objective(rep, t, torch.ones_like(t), [Setting(), IJCV], (3, 33, 33))
    with pytest.raises(SettingsError, match="needs sigma"):
        Setting(form="ijcv2016")


class _Quadratic:
    """E(x) = ½||x − a||² per item: gradient x − a (a stand-in objective for the update rules)."""

    def __init__(self, a, rate_unit):
        self.a, self.rate_unit, self.image_shape = a, rate_unit, tuple(a.shape[1:])
        self.form = "ijcv2016"

    def value_and_gradient(self, x, view=None):
        d = x - self.a
        e = 0.5 * d.flatten(1).square().sum(1)
        return e, {"loss": e, "tv": 0 * e, "alpha": 0 * e}, d.detach().clone()

    def error(self, x):
        return (x - self.a).flatten(1).norm(dim=1)


def test_adagrad_momentum_update_by_hand():
    """Two iterations of G ← ρG + g², v ← ρv − g/(1/η' + √G), x ← x + v (ijcv.md §3), then the
    box scaling each pixel's colour vector to norm ≤ B."""
    torch.manual_seed(0)
    a = 10 * torch.randn(1, 3, 4, 4, dtype=torch.float64)
    x0 = 10 * torch.randn(1, 3, 4, 4, dtype=torch.float64)
    rate, unit, rho = 0.3, 16.0, 0.9
    stage = Stage(Schedule(((rate, 2),)))
    opts = RunOptions(optimizer="adagrad", progress=False)
    out = _descend(_Quadratic(a, unit), x0, [stage], Pixels(), opts, _NoBar(), 0).x
    lr = rate * unit
    g1 = x0 - a
    G = g1 ** 2
    v = -g1 / (1 / lr + G.sqrt())
    x1 = x0 + v
    g2 = x1 - a
    G = rho * G + g2 ** 2
    v = rho * v - g2 / (1 / lr + G.sqrt())
    assert torch.allclose(out, x1 + v, rtol=1e-12)
    boxed = _descend(_Quadratic(a, unit), x0, [stage], Pixels(), RunOptions(optimizer="adagrad", progress=False,
                                                                                box=5.0), _NoBar(), 0).x
    # by hand with the box after each step
    y = x0 + (-g1 / (1 / lr + (g1 ** 2).sqrt()))
    y = y * (5.0 / y.square().sum(1, keepdim=True).sqrt()).clamp(max=1)
    v1 = -g1 / (1 / lr + (g1 ** 2).sqrt())
    g2 = y - a
    G = rho * g1 ** 2 + g2 ** 2
    y = y + rho * v1 - g2 / (1 / lr + G.sqrt())
    y = y * (5.0 / y.square().sum(1, keepdim=True).sqrt()).clamp(max=1)
    assert torch.allclose(boxed, y, rtol=1e-12)


class _NoBar:
    def update(self, n):
        pass


def test_jitter_offsets_are_seeded_and_cover_every_offset():
    t = Transforms((Jitter(4),))
    offsets = [tuple(t.draws(7, i)[0]) for i in range(300)]
    assert set(offsets) == {(dy, dx) for dy in range(4) for dx in range(4)}
    assert offsets == [tuple(t.draws(7, i)[0]) for i in range(300)]
    assert offsets != [tuple(t.draws(8, i)[0]) for i in range(300)]
    x = torch.arange(2 * 7 * 9, dtype=torch.float32).view(1, 2, 7, 9)
    dy, dx = t.draws(7, 3)[0]
    assert torch.equal(t.view(7, 3)(x), x[..., dy:dy + 4, dx:dx + 6])
    assert torch.equal(t.centre(x), x[..., 1:5, 1:7])  # floor((J − 1)/2) from the corner, as the reference
    assert torch.equal(t.centre(t.pad(x)), x)
    assert t.margin == 3 and Transforms((Jitter(1),)).margin == 0


def test_transforms_parse_and_compose():
    t = Transforms(("jitter=3", "scale=1.1", "rotate=5"))
    assert t.steps == (Jitter(3), Scale(1.1), Rotate(5.0)) and t.describe() == ["jitter=3", "scale=1.1", "rotate=5"]
    x = torch.randn(2, 3, 12, 12)
    assert t.view(0, 0)(x).shape == (2, 3, 10, 10)
    assert torch.allclose(Rotate(0.0).apply(x, 0.0), x, atol=1e-5) and torch.allclose(Scale(1.0).apply(x, 1.0), x, atol=1e-5)
    assert torch.allclose(Rotate(90.0).apply(x, 90.0), torch.rot90(x, 1, (-2, -1)), atol=1e-4) or \
        torch.allclose(Rotate(90.0).apply(x, 90.0), torch.rot90(x, -1, (-2, -1)), atol=1e-4)
    for bad in ("jitter", "jitter=0", "jitter=2.5", "blur=3", "scale=10"):
        with pytest.raises(SettingsError):
            parse(bad)


def test_uniform_start_scaled_by_its_95th_percentile():
    u = start_noise((3, 40, 40), 0, 0, "uniform").double() * math.sqrt(3)
    assert float(torch.quantile(u.flatten(), 0.95)) == pytest.approx(1.0, abs=1e-6)
    assert float(u.min()) >= -1.2 and torch.equal(start_noise((3, 40, 40), 0, 0, "uniform"),
                                                   start_noise((3, 40, 40), 0, 0, "uniform"))


def test_box_holds_at_every_iterate(linear_rep, small_images):
    norms = []
    result = run(linear_rep(), small_images[:1], settings=IJCV, optimizer="adagrad", box=30.0,
                 schedule=Schedule(((0.05 * SIGMA ** 2 / 6, 12),)), transforms=["jitter=3"], every=1,
                 callback=lambda p: norms.append(float(p.x.square().sum(1).sqrt().max())))
    assert len(norms) == 12 and max(norms) <= 30.0 * (1 + 1e-6)
    assert float(np.sqrt((result.x ** 2).sum(1)).max()) <= 30.0 * (1 + 1e-6)
    assert result.provenance["box"] == 30.0 and result.provenance["stages"][0]["transforms"] == ["jitter=3"]


def test_two_stages_equal_the_stages_run_by_hand(linear_rep, small_images):
    rep = linear_rep()
    eta = 0.05 * SIGMA ** 2 / 6
    first, second = Stage(Schedule(((eta, 15),)), Transforms(("jitter=3",))), Stage(Schedule(((eta / 10, 6),)))
    common = dict(settings=IJCV, optimizer="adagrad", box=160.0, restarts=2, seed=3)
    both = run(rep, small_images, stages=[first, second], **common)
    one = run(rep, small_images, schedule=first.schedule, transforms=first.transforms, **common)
    starts = torch.as_tensor(one.x)
    # the second stage by hand, item by item (each its own start image)
    for b in range(len(one.x)):
        image, _, restart = one.items[b]
        two = run(rep, small_images[image:image + 1], schedule=second.schedule, start=starts[b:b + 1],
                  **{**common, "restarts": 1})
        k = both.index(image, 0, restart)
        assert np.allclose(both.x[k], two.x[0], atol=1e-4)
        assert np.allclose(both.energies["total"][15:, k], two.energies["total"][:, 0], rtol=1e-5)
    assert both.energies["total"].shape == (21, 4)
    assert both.provenance["iterations"] == 21 and len(both.provenance["stages"]) == 2
    # the IJCV energy decreases over the run
    assert (both.energies["total"][-1] < both.energies["total"][0]).all()


def test_start_images_are_where_the_descent_starts(linear_rep, small_images):
    rep = linear_rep()
    result = run(rep, small_images[:1], settings=IJCV, optimizer="adagrad", schedule=Schedule(((1e-9, 1),)),
                 start=small_images[1:])
    assert np.allclose(result.x, small_images[1:].numpy(), atol=1e-2)
    with pytest.raises(SettingsError, match="one image per image"):
        run(rep, small_images[:1], schedule=Schedule(((1e-9, 1),)), start=small_images)


def test_fourier_parameterisation_round_trip_and_range():
    f = Fourier((120.0, 110.0, 100.0))
    v = 0.05 * torch.randn(2, 3, 16, 9, 2, dtype=torch.float64)
    x = f.image(v, (16, 16))
    assert x.shape == (2, 3, 16, 16)
    pixels = x + torch.tensor(f.mean, dtype=torch.float64).view(1, 3, 1, 1)
    assert float(pixels.min()) >= 0 and float(pixels.max()) <= 255 and float(pixels.std()) > 5
    assert float(f.image(100 * v, (16, 16)).add(pixels - x).min()) >= 0  # any spectrum stays in range
    # the image of the recovered spectrum is the image (the spectrum of a real image has redundant parts)
    assert torch.allclose(f.image(f.variable(x), (16, 16)), x, atol=1e-6)
    # 1/f: the lowest frequencies carry the largest scale
    s = Fourier.scale((16, 16))
    assert float(s[0, 0]) == 16 and float(s[0, 1]) == 16 and float(s[8, 8]) < 2


def test_fourier_run_lowers_the_energy(linear_rep, small_images):
    result = run(linear_rep(), small_images[:1], param="fourier", optimizer="adam",
                 schedule=Schedule(((0.05, 40),)), transforms=["jitter=2"])
    e = result.energies["total"][:, 0]
    assert e[-1] < 0.5 * e[0] and result.provenance["param"] == "fourier"
    assert float(result.pixels.min()) >= 0 and float(result.pixels.max()) <= 255
    with pytest.raises(SettingsError, match="runs with optimizer adam"):
        run(linear_rep(), small_images[:1], param="fourier", schedule=Schedule(((0.05, 2),)))
    with pytest.raises(SettingsError, match="drop box"):
        run(linear_rep(), small_images[:1], param="fourier", optimizer="adam", box=160.0,
            schedule=Schedule(((0.05, 2),)))
