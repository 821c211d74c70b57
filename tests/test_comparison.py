"""What notebooks 10–12 build on (``paper.comparison``): the recipes side by side, the IJCV
variants at one layer (jitter off, β, C), the tables and panels of maximised units, and caricatures
with their exaggeration, on the offline trained EfficientNet-Lite0 at small sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from preimage import check_record, figures, images, representations
from preimage.engine.results import InversionResult
from preimage.errors import SettingsError
from preimage.paper import comparison, natural, recipes
from preimage.paper.chapter import chapter

MODEL = "efficientnet_lite0"


@pytest.fixture
def ch(tmp_path):
    params = {"model": MODEL, "weights": "imagenet", "profile": "quick", "output_dir": str(tmp_path), "seed": 0,
              "device": "cpu", "progress": False}
    return chapter("99_comparison", params)


def test_recipes_side_by_side_in_one_record(ch):
    runs = comparison.invert_methods(ch, ["stem"], ["chelsea"], size=32, log=None)
    assert list(runs) == list(comparison.METHODS)
    assert [r["stem"].provenance["recipe"]["recipe"] for r in runs.values()] == ["cvpr2015", "ijcv2016", "ijcv2016"]
    assert runs["IJCV 2016, Fourier"]["stem"].provenance["recipe"]["param"] == "fourier"
    panels, titles = comparison.side_by_side(runs)
    assert len(panels) == 1 and len(panels[0]) == 4 and panels[0][1].shape == (32, 32, 3)
    assert titles[0][0] == "chelsea\nstem"
    assert titles[0][2] == f"IJCV 2016\nerror {runs['IJCV 2016']['stem'].error[0]:.3f}"
    flat = comparison.flatten(runs)
    assert list(flat) == ["CVPR 2015 · stem", "IJCV 2016 · stem", "IJCV 2016, Fourier · stem"]
    record = ch.record(flat, figure="test")
    assert check_record(record) == [] and record["runs"]["IJCV 2016 · stem"]["settings"][0]["weight"] == 1.0
    table = comparison.error_table(runs).splitlines()
    assert len(table) == 2 and table[1].split()[0] == "stem"
    assert float(table[1].split()[1]) == pytest.approx(runs["CVPR 2015"]["stem"].error[0], abs=5e-4)


def test_the_ijcv_recipe_without_jitter_keeps_its_stages(ch):
    plan = recipes.recipe(MODEL, "stage4", recipe="ijcv2016", profile="quick", transforms=["scale=1.1"])
    plain = recipes.recipe(MODEL, "stage4", recipe="ijcv2016", profile="quick", transforms=["scale=1.1"], jitter=1)
    assert plan.jitter == 4 and plain.jitter == 1 and plain.describe()["jitter"] == 1
    assert [st.schedule for st in plain.stages] == [st.schedule for st in plan.stages]
    assert plain.stages[0].transforms.describe() == ["jitter=1", "scale=1.1"]
    assert (plain.setting, plain.box, plain.optimizer) == (plan.setting, plan.box, plan.optimizer)
    with pytest.raises(SettingsError, match="jitter belongs to the ijcv2016 recipe"):
        recipes.recipe(MODEL, "stage4", jitter=2)
    on = ch.invert(["stage3"], ["chelsea"], recipe="ijcv2016", size=67, log=None)["stage3"]
    off = ch.invert(["stage3"], ["chelsea"], recipe="ijcv2016", jitter=1, size=67, log=None)["stage3"]
    assert on.provenance["stages"][0]["transforms"] == ["jitter=2"] and off.provenance["recipe"]["jitter"] == 1
    assert not np.allclose(on.x, off.x)


def test_variants_share_the_recipe_item_and_lay_out_three_rows(ch):
    variants = comparison.ijcv_variants(ch, "stage3", ["chelsea"], betas=(1.0, 2.0), weights=(1.0, 100.0), size=67)
    assert list(variants) == ["jitter 2", "no jitter"]
    jittered, plain = variants.values()
    assert [(s["weight"], s["beta"]) for s in jittered.provenance["settings"]] == [(1, 1), (1, 2), (100, 2)]
    assert [(s["weight"], s["beta"]) for s in plain.provenance["settings"]] == [(1, 1), (1, 2)]
    assert jittered.provenance["settings"][0]["lambda_tv"] == pytest.approx(6.5 / 80)
    assert comparison.setting_index(jittered, 100, 2) == 2
    with pytest.raises(SettingsError, match="no setting with C = 20"):
        comparison.setting_index(jittered, 20, 2)
    panels, titles = comparison.variant_rows(variants, betas=(1.0, 2.0), weights=(1.0, 100.0))
    assert [len(row) for row in panels] == [3, 3, 3]
    assert [t[0] for t in titles] == ["chelsea\njitter 2, C = 1", "chelsea\nno jitter, C = 1", "chelsea\njitter 2, β = 2"]
    assert titles[2][2] == f"C = 100\nerror {jittered.error[2]:.3f}"
    np.testing.assert_allclose(panels[0][2], panels[2][1])  # β = 2 at C = 1 is one item, shown twice
    assert check_record(ch.record(variants, figure="test")) == []


def _maximised(channels, activation, reference, names=None, side=8) -> natural.Maximised:
    n = len(channels)
    x = np.random.default_rng(0).normal(size=(n, 3, side, side)).astype(np.float32)
    result = InversionResult(x=x, mean=(120.0, 120.0, 120.0), energies={}, error=np.zeros(n),
                             items=np.array([(0, i, 0) for i in range(n)]), time_s=0.0)
    return natural.Maximised(result, list(channels), names or [None] * n, np.array(activation, dtype=float),
                             np.array(reference, dtype=float), [])


def test_activation_table_ratio_and_panels():
    found = {"stage2": _maximised([0, 1, 2, 3, 4], [10, 20, 30, 40, 5], [5, 4, 10, 8, -0.5])}
    np.testing.assert_allclose(comparison.ratio(found["stage2"])[:4], [2, 5, 3, 5])
    assert np.isnan(comparison.ratio(found["stage2"])[4])
    lines = comparison.activation_table(found).splitlines()
    assert len(lines) == 6 and lines[1].split() == ["stage2", "0", "10.00", "5.00", "2.0×"]
    assert lines[5].endswith("never fired")
    panels, titles = comparison.mosaic_panels(found)
    assert panels[0][0].shape == (2 * 8 + 2, 3 * 8 + 2 * 2, 3)  # 5 tiles: 2 rows of 3, 2 white pixels apart
    assert titles[0][0] == "stage2: channels 0–4\n8 px each, median 4.0× the photos' max"
    swan = _maximised([100, 99], [31.0, 29.6], [0.9, -0.1], names=["black swan", "goose"])
    panels, titles = comparison.unit_panels(swan, per_row=1)
    assert len(panels) == 2 and titles[1] == ["goose\n29.6 (photos: -0.1)"]


def test_maximise_layers_with_the_chapters_settings(ch):
    found = comparison.maximise_layers(ch, {"stage2": [0, 3]}, iterations=20)
    f = found["stage2"]
    side = natural.image_size(representations.get(MODEL, "stage2"))
    assert f.channels == [0, 3] and f.result.x.shape == (2, 3, side, side)
    assert f.result.provenance["seed"] == 0 and f.result.provenance["iterations"] == 20
    assert (f.activation > 0).all()
    assert check_record(ch.record({"stage2": f.result}, activations=f.summary())) == []


def test_class_report_reads_the_network_on_each_image():
    rep = representations.get(MODEL, "logits")
    x = images.to_input(images.fit(images.load("coffee")[0], 224), rep.mean).numpy()
    names = representations.categories(MODEL)
    found = _maximised([names.index("espresso"), names.index("goose")], [0, 0], [1, 1], side=224)
    found.result.x = np.concatenate([x, x])
    lines = comparison.class_report(rep, found).splitlines()
    assert lines[1].split()[0] == "espresso" and lines[1].split()[2] == "1"  # the coffee photo is an espresso
    assert lines[2].split()[0] == "goose" and int(lines[2].split()[2]) > 1 and "espresso" in lines[2]
    with pytest.raises(SettingsError, match="not a class layer"):
        comparison.class_report(representations.get(MODEL, "stage3"), found)
    assert comparison.class_layer(MODEL) == "logits" and comparison.class_layer("hog") is None


def test_caricatures_exaggerate_and_record_by_how_much(ch):
    rep = representations.get(MODEL, "stage3")
    x0 = images.to_input(images.fit(images.load("chelsea")[0], 72), rep.mean)
    assert comparison.exaggeration(rep, x0, x0) == pytest.approx([1.0], rel=1e-5)  # ⟨max(Φ0,0), Φ0⟩ = ‖max(Φ0,0)‖²
    results = comparison.caricatures(ch, ["stage3"], ["chelsea"], size=72, iterations=40)
    r = results["stage3"]
    assert r.provenance["images"] == ["chelsea"] and r.provenance["settings"][0]["weight"] == natural.CARICATURE_WEIGHT
    assert r.provenance["exaggeration"][0] > 1.2
    assert r.provenance["exaggeration"][0] == pytest.approx(float(comparison.exaggeration(rep, x0, r.x)[0]), rel=1e-3)
    assert 0 < r.provenance["change"][0] == pytest.approx(float(np.abs(r.x - x0.numpy()).mean()), abs=0.01)
    panels, titles = comparison.caricature_rows(results)
    assert len(panels) == 1 and len(panels[0]) == 2 and titles[0][0] == "chelsea"
    assert titles[0][1].startswith("stage3: ⟨w, Φ⟩ × ")
    assert check_record(ch.record(results, figure="test")) == []


def test_class_shift_names_the_photos_and_caricatures_classes(ch):
    results = comparison.caricatures(ch, ["stage3"], ["coffee"], iterations=3)
    lines = comparison.class_shift(ch, results, k=1).splitlines()
    assert [line.split()[:2] for line in lines] == [["coffee", "photo"], ["coffee", "stage3"]]
    assert lines[0].split()[2] == "espresso"
    torch.manual_seed(1)  # no randomness left to the caller: the same lines again
    assert comparison.class_shift(ch, results, k=1).splitlines() == lines


def test_variant_side_is_small_in_the_quick_profile_only(ch):
    assert comparison.variant_side(ch, "stage4") == 160
    assert comparison.variant_side(ch, "stage3", quick=48) == 67  # the layer's receptive field
    assert comparison.variant_side(ch, "stage6") is None  # needs the whole 224-pixel input
    ch.profile = "paper"
    assert comparison.variant_side(ch, "stage4") is None


def test_grid_keeps_the_second_row_clear_of_the_first():
    # without room kept for the suptitle, these second-row titles were drawn over the first row
    panels = [[np.zeros((16, 16, 3))] * 3] * 2
    titles = [["a\nb"] * 3] * 2
    fig = figures.grid(panels, titles, suptitle="a title", cell=2.6)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    first_row, second_title = fig.axes[1].get_window_extent(renderer), fig.axes[4].title.get_window_extent(renderer)
    assert second_title.y1 <= first_row.y0
    suptitle = next(t for t in fig.texts if t.get_text() == "a title")
    assert fig.axes[1].title.get_window_extent(renderer).y1 <= suptitle.get_window_extent(renderer).y0
