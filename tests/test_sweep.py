"""The figure notebooks' shared loop: layers × images × settings/restarts, their provenance,
and the panel layout built from them."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from preimage import figures
from preimage.paper import recipes, sweep
from preimage.errors import SettingsError
from preimage.engine.objective import Setting


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
    record = sweep.provenance(results, figure="test")
    assert record["model"] == "hog" and record["figure"] == "test"
    layer = record["layers"]["hog31"]
    assert [s["lambda_tv"] for s in layer["settings"]] == [1, 10] and layer["settings"][1]["beta"] == 1
    assert layer["seed"] == 0 and layer["iterations"] == 100 and len(layer["error"]) == 8

    panels, titles = figures.rows_of(results, columns="restart")
    assert len(panels) == 4 and all(len(row) == 3 for row in panels)  # original + 2 restarts
    assert titles[1][0] == "astronaut\nhog31" and titles[2][1].startswith("restart 1\nerror ")
    np.testing.assert_allclose(panels[0][0], sweep.originals(r)[0])
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
    assert recipes.reference_schedule("alexnet", "fc8") == recipes.CNN
    assert recipes.reference_schedule("hog", "hog") == recipes.SHALLOW
    slow = recipes.reference_schedule("efficientnet_lite0", "logits")
    assert slow.steps == ((0.001, 100), (0.0001, 200), (0.00001, 100))
    assert recipes.pixel_range_for("efficientnet_lite0", "logits") and not recipes.pixel_range_for("alexnet", "fc8")
    assert recipes.reference_schedule("efficientnet_lite0", "stem") == recipes.CNN
    fig9 = recipes.reference_schedule("efficientnet_lite0", "stage6", recipes.RECEPTIVE_FIELD)
    assert [r for r, _ in fig9.steps] == [0.0001, 0.00001, 0.000001]
