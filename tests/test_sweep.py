"""The figure notebooks' shared loop: layers × images × settings/restarts, their provenance,
and the panel layout built from them."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import preimage
from preimage import check_record, figures
from preimage.engine.objective import Setting
from preimage.errors import SettingsError, UnknownNameError
from preimage.paper import recipes, sweep


def test_invert_layers_batches_and_records_everything(tmp_path):
    lines = []
    results = sweep.invert_layers("hog", ["hog", "hog31"], ["astronaut", "coffee"], size=64, restarts=2,
                                  settings=lambda layer: [Setting(lambda_tv=1), Setting(lambda_tv=10, beta=1)],
                                  log=lines.append)
    assert list(results) == ["hog", "hog31"] and len(lines) == 2 and "hog hog31" in lines[1]
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(gray)
    noted = []
    sweep.invert_layers("hog", ["hog"], [str(gray)], size=64, log=noted.append, schedule=recipes.SHALLOW.scaled(8))
    assert any(line.startswith(f"note: {gray}:") and "gray" in line.lower() for line in noted)
    r = results["hog"]
    assert r.x.shape == (2 * 2 * 2, 1, 64, 64) and r.provenance["iterations"] == 100
    assert r.provenance["images"] == ["astronaut", "coffee"] and (r.error < 0.5).all()
    record = preimage.record(results, kind="figure", figure="test")
    assert check_record(record) == [] and record["model"] == "hog" and record["figure"] == "test"
    assert record["images"] == ["astronaut", "coffee"] and record["weights"] == "none (hand-designed)"
    layer = record["runs"]["hog31"]
    assert [s["lambda_tv"] for s in layer["settings"]] == [1, 10] and layer["settings"][1]["beta"] == 1
    assert layer["seed"] == 0 and layer["iterations"] == 100 and len(layer["error"]) == 8

    panels, titles = figures.rows_of(results, columns="restart")
    assert len(panels) == 4 and all(len(row) == 3 for row in panels)  # original + 2 restarts
    assert titles[1][0] == "astronaut\nhog31" and titles[2][1].startswith("restart 1\nerror ")
    np.testing.assert_allclose(panels[0][0], figures.originals(r)[0])
    panels, titles = figures.per_layer(results, per_row=2, item=3)  # the original, then one per layer
    assert [len(row) for row in panels] == [2, 1] and titles[0][0] == "astronaut"
    assert titles[0][1] == f"hog (λ_TV 10)\nerror {results['hog'].error[3]:.3f}"
    np.testing.assert_allclose(panels[1][0], results["hog31"].display()[3])
    panels, titles = figures.rows_of(results, columns="setting", column_titles={"hog": ["a", "b"], "hog31": ["c", "d"]})
    assert [t.split("\n")[0] for t in titles[3]] == ["coffee", "c", "d"]
    assert figures.rows_of(results, columns="setting")[1][0][2].startswith("λ_TV=10 β=1")


def test_paper_layers_and_their_stand_ins():
    alex = [l.name for l in presets_layers("alexnet")]
    assert recipes.paper_layer("alexnet", "fc8", alex) == ("fc8", "")
    assert recipes.paper_layer("alexnet", "norm1", alex) == ("pool1", "pool1 stands in for CaffeNet's norm1")
    eff = [l.name for l in presets_layers("efficientnet_lite0")]
    assert [recipes.paper_layer("efficientnet_lite0", n, eff)[0] for n in ("norm1", "pool5", "fc8")] == \
        ["stage2", "stage6", "logits"]
    with pytest.raises(SettingsError, match="no layer 'norm1'"):
        recipes.paper_layer("hog", "norm1", ["hog"])


def presets_layers(model):
    from preimage import representations
    return representations.layers(model)


def test_reference_schedule_scales_rates_only_where_measured_to_diverge():
    recipe = recipes.recipe  # the profile "paper" keeps the reference schedules' own lengths
    assert recipe("alexnet", "fc8").schedule == recipes.CNN and recipe("alexnet", "fc8").setting.lambda_tv == 100
    assert recipe("hog", "hog").schedule == recipes.SHALLOW and recipe("alexnet", "conv1").setting.lambda_tv == 1
    slow = recipe("efficientnet_lite0", "logits")
    assert slow.schedule.steps == ((0.001, 100), (0.0001, 200), (0.00001, 100))
    assert slow.pixel_range and not recipe("alexnet", "fc8").pixel_range
    assert recipe("efficientnet_lite0", "stem").schedule == recipes.CNN
    assert recipe("efficientnet_lite0", "logits", optimizer="adam").schedule == recipes.ADAM  # SGD's rates only
    with pytest.raises(UnknownNameError, match="valid profiles: quick, paper"):
        recipe("alexnet", "fc8", profile="fast")
    fig9 = recipe("efficientnet_lite0", "stage6", schedule=recipes.RECEPTIVE_FIELD).schedule
    assert [r for r, _ in fig9.steps] == [0.0001, 0.00001, 0.000001]


def test_a_chapter_sets_up_from_the_parameters_cell(tmp_path, capsys):
    from preimage.paper.chapter import chapter

    params = {"model": "efficientnet_lite0", "weights": "imagenet", "profile": "quick", "output_dir": str(tmp_path),
              "seed": 3, "device": "cpu", "progress": False, "unrelated": object()}
    ch = chapter("99_test", params, paper_layers=["norm1", "stem"])
    assert ch.layers == {"norm1": "stage2", "stem": "stem"} and ch.quick and ch.seed == 3
    assert ch.stand_ins == ["stage2 stands in for CaffeNet's norm1"] and ch.out == tmp_path / "99_test"
    assert "norm1 -> stage2" in capsys.readouterr().out
    results = ch.invert(["stem"], ["chelsea"], size=48)  # the quick profile: 100 iterations
    assert results["stem"].provenance["seed"] == 3 and results["stem"].provenance["iterations"] == 100
    record = ch.record(results, figure="test")
    assert check_record(record) == [] and record["stand_ins"] == ch.stand_ins and record["profile"] == "quick"
    fig = figures.grid(*figures.per_layer(results))
    paths = ch.save(fig, "fig", record)
    assert [p.name for p in paths] == ["fig.png", "fig.pdf", "fig.json"]
    with pytest.raises(UnknownNameError, match="valid profiles"):
        chapter("99_test", {**params, "profile": "fast"})


def test_the_environment_sets_a_chapters_parameters_aloud(tmp_path, capsys, monkeypatch):
    # what nbval's run in the test suite relies on: papermill's injection, for a stored notebook
    from preimage.paper.chapter import OVERRIDES, chapter

    namespace = {"profile": "paper", "output_dir": "../figures", "device": "auto", "seed": 0, "progress": True}
    monkeypatch.setenv(OVERRIDES, json.dumps({"profile": "quick", "output_dir": str(tmp_path), "progress": False}))
    ch = chapter("98_test", namespace, network=False)
    assert namespace["profile"] == "quick" and namespace["progress"] is False and ch.model is None
    assert ch.out == tmp_path / "98_test" and ch.quick
    assert f"parameters set by ${OVERRIDES}: profile='quick'" in capsys.readouterr().out
    for bad, message in (("{not json", "is not JSON"), ("[1, 2]", "must be a JSON object")):
        monkeypatch.setenv(OVERRIDES, bad)
        with pytest.raises(SettingsError, match=message):
            chapter("98_test", dict(namespace), network=False)
