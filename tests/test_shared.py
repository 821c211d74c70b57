"""Several layers in one run: the shared forward pass gives each layer's code, and a run at
several layers gives what separate runs give."""
import numpy as np
import pytest
import torch

from preimage import representations
from preimage.engine.objective import Setting
from preimage.engine.optimise import invert, invert_at_layers
from preimage.engine.shared import SharedTrunk, leaves, shareable
from preimage.errors import SettingsError, StopInversion
from preimage.paper import recipes

EFFNET_LAYERS = ["stem", "stage1", "stage2"]


@pytest.fixture(scope="module")
def effnet():
    return {n: representations.get("efficientnet_lite0", n, weights="random", seed=3)
            for n in [layer.name for layer in representations.layers("efficientnet_lite0")]}


def test_shared_trunk_gives_every_layers_code(effnet):
    reps = list(effnet.values())[::-1]  # any order: the trunk sorts by depth itself
    trunk = SharedTrunk(reps)
    counts = [1, 0, 2] + [1] * (len(reps) - 3)
    x = 60 * torch.randn(sum(counts), 3, 224, 224, generator=torch.Generator().manual_seed(0))
    codes = trunk(x, counts)
    start = 0
    for rep, n, code in zip(reps, counts, codes):
        alone = rep(x[start:start + n])  # batches of other sizes may round differently
        assert code.shape == alone.shape
        torch.testing.assert_close(code, alone, rtol=1e-5, atol=1e-5 * float(alone.abs().flatten().sum()) / max(alone.numel(), 1))
        start += n


def test_shared_trunk_gradient_is_the_sum_of_each_layers(effnet):
    reps = [effnet[n] for n in EFFNET_LAYERS]
    x = (60 * torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    codes = SharedTrunk(reps)(x, [1, 1, 1])
    grad, = torch.autograd.grad(sum(c.square().sum() for c in codes), x)
    for i, rep in enumerate(reps):
        xi = x[i:i + 1].detach().requires_grad_(True)
        gi, = torch.autograd.grad(rep(xi).square().sum(), xi)
        torch.testing.assert_close(grad[i:i + 1], gi, rtol=1e-4, atol=1e-4 * gi.abs().max().item())


def test_leaves_open_nested_sequentials(effnet):
    deep, shallow = effnet["stage2"], effnet["stem"]
    assert len(leaves(shallow.body)) < len(leaves(deep.body))
    assert not any(isinstance(m, torch.nn.Sequential) for m in leaves(deep.body))


def test_invert_at_layers_equals_separate_inversions(effnet):
    """Same starts, settings, rate factors and pixel boxes as one inversion per layer."""
    rgb = np.random.default_rng(0).integers(0, 256, (2, 3, 40, 40)).astype(np.float32) - 120
    x0 = torch.as_tensor(rgb)
    reps = [effnet[n] for n in EFFNET_LAYERS]
    base = recipes.CNN.shortened(6)
    schedules = [base, recipes.Schedule(tuple((r / 4, n) for r, n in base.steps)), base]
    settings = [Setting(lambda_tv=1), [Setting(lambda_tv=10), Setting(lambda_tv=10, beta=1)], Setting(lambda_tv=100)]
    ranges = [False, True, False]
    together = invert_at_layers(reps, x0, settings=settings, schedules=schedules, pixel_range=ranges,
                                restarts=2, seed=5, device="cpu", progress=False, batch_size=7)
    for rep, sch, st, pr, res in zip(reps, schedules, settings, ranges, together):
        alone = invert(rep, x0, settings=st, schedule=sch, pixel_range=pr, restarts=2, seed=5, device="cpu",
                       progress=False)
        np.testing.assert_array_equal(res.items, alone.items)
        np.testing.assert_allclose(res.x, alone.x, rtol=1e-3, atol=1e-3 * np.abs(alone.x).max())
        np.testing.assert_allclose(res.error, alone.error, rtol=1e-3)
        np.testing.assert_allclose(res.energies["total"], alone.energies["total"], rtol=1e-3)
        assert res.provenance["schedule"] == alone.provenance["schedule"]
        assert res.provenance["pixel_range"] == pr and res.provenance["shared_run"] == EFFNET_LAYERS
    assert together[1].x.min() >= -max(reps[1].mean) - 1e-3  # the boxed layer stayed in 0..255


def test_invert_at_layers_refuses_what_cannot_share(effnet, linear_rep):
    x0 = torch.zeros(1, 3, 40, 40)
    reps = [effnet["stem"], effnet["stage1"]]
    with pytest.raises(SettingsError, match="not the same network"):
        invert_at_layers([effnet["stem"], linear_rep()], x0, progress=False)
    uneven = recipes.Schedule(((1.0, 3), (0.5, 3)))
    with pytest.raises(SettingsError, match="stage1.*rates scaled"):
        invert_at_layers(reps, x0, schedules=[recipes.CNN.shortened(6), uneven], progress=False)
    quarter = recipes.Schedule(tuple((r / 4, n) for r, n in recipes.ADAM.steps))
    with pytest.raises(SettingsError, match="adam cannot run layers with different learning rates"):
        invert_at_layers(reps, x0, optimizer="adam", schedules=[recipes.ADAM, quarter], progress=False)
    with pytest.raises(SettingsError, match="one settings, schedule and pixel_range per layer"):
        invert_at_layers(reps, x0, settings=[Setting()], progress=False)
    other = representations.get("efficientnet_lite0", "stage1", weights="random", seed=3)
    assert shareable([effnet["stem"], other, effnet["stage2"]]) is None
    with torch.no_grad():
        next(other.parameters())[0, 0, 0, 0] += 1  # same label, other weights
    assert "same weights" in shareable([effnet["stem"], other, effnet["stage2"]])


def test_a_callback_stops_a_shared_run(effnet):
    x0 = 60 * torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    seen = []

    def stop(progress):
        seen.append(progress.x.shape[0])
        raise StopInversion

    results = invert_at_layers([effnet[n] for n in EFFNET_LAYERS], x0, schedules=recipes.CNN.shortened(20),
                               callback=stop, every=5, progress=False)
    assert seen == [3]
    assert all(r.provenance["stopped_early"] and r.provenance["iterations_run"] == 5 for r in results)
