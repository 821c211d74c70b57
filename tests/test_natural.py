"""The IJCV 2016 recipe, activation maximisation and caricatures (ijcv.md §1–5) on the offline
trained EfficientNet-Lite0, through the API and the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import preimage
from preimage import check_record, images, representations
from preimage.apps.cli import main
from preimage.engine.transforms import Jitter
from preimage.errors import SettingsError, UnknownNameError
from preimage.paper import natural, recipes

MODEL = "efficientnet_lite0"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- the recipe


def test_ijcv_recipe_constants():
    """ijcv.md §1–3: λ_α = (1/σ)^α, λ_TV = (6.5/σ)^β, rate 0.05·σ²/α for 300 iterations jittered
    by stride/4, then a tenth for 50 without, AdaGrad, box 2σ; C and β as asked."""
    r = preimage.recipe(MODEL, "stage3", recipe="ijcv2016")
    s = r.setting
    assert (s.form, s.weight, s.sigma, s.alpha, s.beta) == ("ijcv2016", 1.0, 80.0, 6.0, 2.0)
    assert s.lambda_l2 == pytest.approx(80.0 ** -6) and s.lambda_tv == pytest.approx((6.5 / 80) ** 2)
    eta = 0.05 * 80 ** 2 / 6
    assert r.schedule.steps == ((pytest.approx(eta), 300), (pytest.approx(eta / 10), 50))
    (first, second) = r.stages
    assert first.transforms.steps == (Jitter(2),) and second.transforms.steps == ()  # stage3: stride 8
    assert (first.schedule.iterations, second.schedule.iterations) == (300, 50)
    assert (r.optimizer, r.box, r.pixel_range) == ("adagrad", 160.0, False)
    assert preimage.recipe(MODEL, "logits", recipe="ijcv2016").jitter == 8  # stride 32
    assert preimage.recipe(MODEL, "stem", recipe="ijcv2016").jitter == 1  # stride 2: round(0.5) = 0 -> 1
    variant = preimage.recipe(MODEL, "stage3", recipe="ijcv2016", weight=20, beta=1.5, profile="quick")
    assert variant.setting.weight == 20 and variant.setting.lambda_tv == pytest.approx((6.5 / 80) ** 1.5)
    assert variant.schedule.iterations == 100
    d = variant.describe()
    assert d["recipe"] == "ijcv2016" and d["jitter"] == 2 and d["stages"][0]["transforms"] == ["jitter=2"]


def test_cvpr_recipe_is_unchanged_by_default():
    r = preimage.recipe(MODEL, "stage3")
    assert (r.name, r.optimizer, r.stages, r.box, r.param) == ("cvpr2015", "sgd", (), None, "pixels")
    assert r.setting == preimage.Setting(lambda_tv=10.0) and r.schedule == recipes.CNN
    assert r.run_options() == {"optimizer": "sgd", "pixel_range": False, "box": None, "param": "pixels",
                               "schedule": recipes.CNN}


def test_fourier_recipe_runs_adam_on_the_spectrum():
    for name in recipes.RECIPES:
        r = preimage.recipe(MODEL, "stage3", recipe=name, param="fourier")
        assert r.optimizer == "adam" and r.box is None and r.pixel_range is False
        assert r.schedule.steps[0][0] == 0.05
    with pytest.raises(SettingsError, match="Adam on the spectrum"):
        preimage.recipe(MODEL, "stage3", param="fourier", optimizer="sgd")


def test_recipe_bad_input():
    with pytest.raises(SettingsError, match="networks.*--recipe cvpr2015"):
        preimage.recipe("hog", "hog", recipe="ijcv2016")
    with pytest.raises(SettingsError, match="belongs to the ijcv2016 recipe"):
        preimage.recipe(MODEL, "stage3", weight=20)
    with pytest.raises(UnknownNameError, match="ijcv2016"):
        preimage.recipe(MODEL, "stage3", recipe="ijcv2015")


def test_ijcv_inversion_reconstructs(tmp_path):
    """The two-stage IJCV recipe on the trained network gets close to the code at a middle layer,
    and a larger C gets closer (the paper's trade-off)."""
    rep = representations.get(MODEL, "stage3")
    x = images.to_input(images.fit(images.load("chelsea")[0], 96), rep.mean)
    plan = preimage.recipe(MODEL, "stage3", recipe="ijcv2016", iterations=60)
    settings = [recipes.ijcv_setting(1.0), recipes.ijcv_setting(100.0)]
    result = preimage.invert(rep, x, settings=settings, device="cpu", progress=False, **plan.run_options())
    assert result.error[1] < result.error[0] < 0.8 and result.error[1] < 0.5
    assert result.provenance["stages"][0]["transforms"] == ["jitter=2"] and result.provenance["box"] == 160.0
    assert [s["form"] for s in result.provenance["settings"]] == ["ijcv2016", "ijcv2016"]


# ----------------------------------------------------------------------------- maximisation


def test_maximised_unit_beats_its_largest_activation_on_the_photos():
    rep = representations.get(MODEL, "stage3")
    found = natural.maximise(rep, [0, 5, 17], profile="quick", iterations=60, device="cpu", progress=False)
    assert found.result.x.shape == (3, 3, natural.image_size(rep), natural.image_size(rep))
    assert (found.reference > 0).all()
    assert (found.activation > found.reference).all(), found.summary()
    # the activation is measured on the result: the same numbers from the image itself
    assert np.allclose(natural.unit_activation(rep, torch.as_tensor(found.result.x), [0, 5, 17]),
                       found.activation)


def test_neuron_maxima_over_the_photos_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("PREIMAGE_CACHE", str(tmp_path))
    rep = representations.get(MODEL, "stage2")
    maxima = natural.neuron_maxima(rep, device="cpu")
    rgbs, _ = images.load_many([str(p) for p in sorted(images.shipped().values())], 224)
    with torch.no_grad():
        direct = torch.cat([rep(images.to_input(rgb, rep.mean)) for rgb in rgbs]).amax((0, 2, 3))
    assert np.allclose(maxima, direct.double().numpy(), rtol=1e-5)
    assert len(list(tmp_path.rglob("*.npy"))) == 1
    monkeypatch.setattr(type(rep), "forward", lambda *_: pytest.fail("recomputed instead of read from the cache"))
    assert np.array_equal(natural.neuron_maxima(rep, device="cpu"), maxima)


def test_image_size_fits_the_field_with_a_margin():
    rep = representations.get(MODEL, "stage3")  # field 67, stride 8: a code at least 9 wide
    side = natural.image_size(rep)
    assert rep.code_shape(side, side)[-1] >= 9
    assert side == rep.min_image_size() or rep.code_shape(side - 1, side - 1)[-1] < 9
    assert natural.image_size(representations.get(MODEL, "logits")) == 224


def test_class_neurons_by_name_and_bad_channels():
    rep = representations.get(MODEL, "logits")
    assert natural.channel_index(rep, "black swan") == (100, "black swan")
    assert natural.channel_index(rep, "7") == (7, "cock")
    with pytest.raises(UnknownNameError, match="did you mean 'black swan'"):
        natural.channel_index(rep, "blak swan")
    with pytest.raises(SettingsError, match="channel 1000 is out of range.*1000 channels, 0 to 999"):
        natural.channel_index(rep, 1000)
    with pytest.raises(UnknownNameError, match="no class names.*0 to 39"):
        natural.channel_index(representations.get(MODEL, "stage3"), "goose")
    with pytest.raises(SettingsError, match="no learned units"):
        natural.maximise(representations.get("hog"), [0])


# ----------------------------------------------------------------------------- caricatures


def test_caricature_exaggerates_what_the_layer_sees():
    rep = representations.get(MODEL, "stage3")
    x = images.to_input(images.fit(images.load("chelsea")[0], 96), rep.mean)
    result = natural.caricature(rep, x, profile="quick", iterations=40, device="cpu", progress=False)
    with torch.no_grad():
        fired = rep(x).clamp_min(0)
        w = fired / fired.square().sum()
        before, after = float((w * rep(x)).sum()), float((w * rep(torch.as_tensor(result.x))).sum())
    assert before == pytest.approx(1.0, rel=1e-5)  # ⟨max(Φ0, 0), Φ0⟩ = ||max(Φ0, 0)||²
    assert after > 1.2 * before
    assert result.provenance["start"] == "images"
    # it is still the photo: closer to it than to another photo
    other = images.to_input(images.fit(images.load("astronaut")[0], 96), rep.mean).numpy()
    assert np.abs(result.x - x.numpy()).mean() < np.abs(result.x - other).mean()


# ----------------------------------------------------------------------------- command line


def test_cli_maximise_writes_the_mosaic_and_the_activations(capsys, tmp_path):
    out = tmp_path / "max"
    code, stdout, err = run(capsys, "maximise", "--model", MODEL, "--layer", "stage3", "--channels", "0,5",
                            "--iters", "30", "--device", "cpu", "--out", out)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"maximised.png", "result.json", "result.npz"}
    rec = json.loads((out / "result.json").read_text())
    assert check_record(rec) == []
    assert rec["channels"] == [0, 5] and len(rec["activation"]) == 2 and len(rec["reference_max"]) == 2
    assert rec["recipe"]["recipe"] == "ijcv2016" and rec["recipe"]["jitter"] == 2
    side = natural.image_size(representations.get(MODEL, "stage3"))
    assert images.load(str(out / "maximised.png"))[0].shape == (side, 2 * side + 2, 3)  # two tiles, a gap
    assert "channel 5: activation" in stdout


def test_cli_caricature_and_ijcv_invert(capsys, tmp_path):
    code, _, err = run(capsys, "caricature", "chelsea", "--model", MODEL, "--layer", "stage3", "--size", "96",
                       "--iters", "10", "--device", "cpu", "--out", tmp_path / "car")
    assert code == 0, err
    assert (tmp_path / "car" / "caricature.png").is_file()
    code, _, err = run(capsys, "invert", "chelsea", "--model", MODEL, "--layer", "stage3", "--size", "96",
                       "--recipe", "ijcv2016", "--weight", "20", "--param", "fourier", "--transform", "scale=1.05",
                       "--iters", "10", "--device", "cpu", "--out", tmp_path / "inv")
    assert code == 0, err
    rec = json.loads((tmp_path / "inv" / "result.json").read_text())
    (r,) = rec["runs"].values()
    assert rec["recipe"]["recipe"] == "ijcv2016" and rec["recipe"]["param"] == "fourier"
    assert r["param"] == "fourier" and r["optimizer"] == "adam" and r["settings"][0]["weight"] == 20
    assert r["stages"][0]["transforms"] == ["jitter=2", "scale=1.05"]


@pytest.mark.parametrize("argv, message", [
    (["maximise", "--model", MODEL, "--layer", "stage3", "--channel", "40"], "channel 40 is out of range"),
    (["maximise", "--model", MODEL, "--layer", "logits", "--channel", "blak swan"], "did you mean 'black swan'"),
    (["maximise", "--model", "hog", "--layer", "hog", "--channel", "0"], "no learned units"),
    (["maximise", "--model", MODEL, "--layer", "stage3"], "give --channel"),
    (["invert", "astronaut", "--model", "hog", "--recipe", "ijcv2016"], "--recipe cvpr2015"),
    (["invert", "astronaut", "--model", MODEL, "--layer", "stage3", "--weight", "20"], "belongs to the ijcv2016"),
    (["invert", "astronaut", "--model", MODEL, "--layer", "stage3", "--transform", "blur=2"], "jitter=PIXELS"),
])
def test_cli_bad_input_one_line_exit_2(capsys, tmp_path, argv, message):
    code, _, err = run(capsys, *argv, "--out", tmp_path / "out")
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_maximisation_with_fourier_images_under_either_recipe():
    """--param fourier works in maximisation under both recipes: the unit fires above its largest
    activation on the photos. The CVPR recipe on pixels is refused (its rates diverge on the dot loss)."""
    rep = representations.get(MODEL, "stage3")
    for name in recipes.RECIPES:
        found = natural.maximise(rep, [5], recipe=name, param="fourier", profile="quick", iterations=60,
                                 device="cpu", progress=False)
        assert found.activation[0] > found.reference[0], (name, found.summary())
        assert found.result.provenance["param"] == "fourier"
        assert found.result.provenance["settings"][0]["form"] == name
    with pytest.raises(SettingsError, match="use --recipe ijcv2016, or --param fourier"):
        natural.maximise(rep, [5], recipe="cvpr2015")
    with pytest.raises(SettingsError, match="use --recipe ijcv2016, or --param fourier"):
        natural.caricature(rep, torch.zeros(1, 3, 96, 96), recipe="cvpr2015")


def test_maximising_a_vit_token_feature_targets_the_centre_patch_token():
    """On a ViT (random weights), the unit of a token code is the centre patch token, after the
    class token, and maximising it raises it."""
    rep = representations.get("timm:vit_tiny_patch16_224", "blocks.0.norm1", weights="random")
    assert rep.tokens == (1, 14, 14)
    assert natural.centre_unit(rep, (197, 192), 5) == (1 + 7 * 14 + 7, 5)
    codes, _ = natural.unit_codes(rep, [5], natural.image_size(rep), np.ones(192))
    assert codes.shape == (1, 197, 192) and torch.nonzero(codes).tolist() == [[0, 1 + 7 * 14 + 7, 5]]
