"""The interactive explorer, driven through its widgets without a browser: settings, runs, the
Stop button on a background run, the live image and plot, saving, and bad input as messages."""
import datetime
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from preimage import check_record, representations
from preimage.apps.explorer import UPLOAD, explore
from preimage.errors import DivergenceError, ImageError
from preimage.paper import recipes


def _png_bytes(size: int) -> bytes:
    buf = io.BytesIO()
    rgb = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _upload(explorer, name: str, data: bytes) -> None:
    """What the browser's FileUpload sends the kernel."""
    explorer.upload.value = ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
                              "last_modified": datetime.datetime.now(datetime.UTC)},)


def _changes(widget) -> list:
    """The values ``widget`` takes from now on (the live image's PNGs, say)."""
    seen = []
    widget.observe(lambda change: seen.append(change["new"]), "value")
    return seen


@pytest.fixture
def fast():
    """efficientnet_lite0 (trained, offline) at its stem on a 48x48 crop: a run takes a second."""
    return explore(model="efficientnet_lite0", layer="stem", size=48, iterations=10, every=2)


def test_defaults_follow_the_model_and_layer():
    e = explore()
    assert e.model.value == "efficientnet_lite0" and e.weights.value == "auto"
    assert representations.get(e.model.value, "stem", weights=e.weights.value).trained  # packaged weights
    assert e.layer.value == "stage2" and e.size.value == 224
    assert e.iterations.value == recipes.recipe("efficientnet_lite0", "stage2", profile="quick").schedule.iterations == 100
    e.layer.value = "stage6"  # Fig. 6's block, λ_Vβ = λ_TV / 2 shown beside
    assert e.lambda_tv.value == pytest.approx(recipes.recipe("efficientnet_lite0", "stage6").setting.lambda_tv) == 100
    assert "50" in e.lambda_note.value
    e.model.value = "hog"  # new layer list, no weights to choose, the image at its own size
    assert list(e.layer.options) == ["hog", "hog31"] and e.layer.value == "hog"
    assert e.weights.disabled and e.size.value == 0
    assert e.iterations.value == 100 and "press Run" in e.message


def test_run_shows_the_reconstruction_the_curve_and_the_error(fast, tmp_path):
    live, plot = _changes(fast.live), _changes(fast.plot)
    fast.lambda_tv.value, fast.beta.value, fast.restarts.value = 2.0, 1.5, 2
    result = fast.run(wait=True)
    assert result is fast.result and result.provenance["iterations_run"] == 10
    assert not result.provenance["stopped_early"] and np.isfinite(result.error).all() and len(result.error) == 2
    s = result.provenance["settings"][0]
    assert (s["lambda_tv"], s["beta"], result.provenance["restarts"]) == (2.0, 1.5, 2)
    assert result.provenance["representation"]["layer"] == "stem" and result.provenance["image_size"] == [48, 48]
    assert len(live) >= 5 and len(set(live)) >= 2  # updated every 2 iterations
    assert len(plot) >= 2  # the first update and the end, at least (at most once a second between)
    assert Image.open(io.BytesIO(live[-1])).size == (48 * 3 + 8, 48)  # original + 2 restarts
    assert f"{result.error[0]:.3f}" in fast.error_label.value and "done" in fast.message
    assert not fast.running and not fast.run_button.disabled and fast.stop_button.disabled

    assert not fast.save_button.disabled
    fast.output.value = str(tmp_path / "out")
    paths = fast.save()
    names = sorted(p.name for p in paths)
    assert names == sorted(f"efficientnet_lite0-stem-astronaut-tv2-b1p5-10it{x}"
                           for x in (".png", ".pdf", ".json", "-result.npz", "-result.json"))
    assert all(p.stat().st_size > 0 for p in paths)
    record = json.loads((tmp_path / "out" / "efficientnet_lite0-stem-astronaut-tv2-b1p5-10it.json").read_text())
    assert check_record(record) == [] and record["trained"] and record["profile"] == "quick"
    assert record["runs"]["stem"]["iterations_run"] == 10
    assert "saved" in fast.message


def test_stop_button_ends_a_background_run():
    e = explore(model="hog", size=64, iterations=2000, every=5)
    first_update = threading.Event()
    e.bar.observe(lambda change: first_update.set() if change["new"] > 0 else None, "value")
    assert e.run(wait=False) is None and e.running and e.run_button.disabled and not e.stop_button.disabled
    assert first_update.wait(120), "no progress from the background run"
    e.stop_button.click()
    result = e.wait(120)
    assert not e.running and result is not None
    p = result.provenance
    assert p["stopped_early"] and 5 <= p["iterations_run"] < 2000 and p["iterations"] == 2000
    assert np.isfinite(result.error).all() and "stopped" in e.message and "stopped early" in e.error_label.value


def test_a_second_run_while_running_is_refused():
    e = explore(model="hog", size=64, iterations=2000, every=5)
    e.run(wait=False)
    try:
        assert e.run(wait=True) is None and "in progress" in e.message
    finally:
        e.stop()
        e.wait(120)


def test_uploaded_image_is_used(fast):
    _upload(fast, "noise.png", _png_bytes(40))
    assert fast.image.value == UPLOAD + "noise.png" and "uploaded noise.png (40x40)" in fast.message
    assert fast.upload.value == ()  # cleared, so the same file can be chosen again
    fast.size.value = 0
    result = fast.run(wait=True)
    assert result.provenance["image_size"] == [40, 40] and result.provenance["images"] == [UPLOAD + "noise.png"]


def test_an_upload_that_is_not_an_image_is_a_message(fast):
    before = list(fast.image.options)
    _upload(fast, "notes.txt", b"this is not an image")
    assert "cannot read 'notes.txt' as an image" in fast.message
    assert list(fast.image.options) == before and fast.result is None


def test_an_image_smaller_than_the_receptive_field_is_a_message(fast):
    _upload(fast, "tiny.png", _png_bytes(16))
    fast.size.value = 0  # as it is: 16x16
    fast.layer.value = "stage4"  # receptive field 147 px
    assert fast.run(wait=True) is None and fast.result is None and not fast.running
    assert "smaller than the receptive field" in fast.message and "147x147" in fast.message
    fast.size.value = 32  # resizing to a small size says the same
    assert fast.run(wait=True) is None and "32x32 image is smaller" in fast.message


def test_bad_seeds_and_runs_too_large_for_memory_are_messages(fast, monkeypatch):
    fast.seed.value = -1
    assert fast.run(wait=True) is None and "seed must be an integer from 0 to 2**63 - 1" in fast.message
    fast.seed.value = 0
    monkeypatch.setenv("PREIMAGE_MEMORY_LIMIT", "100k")
    assert fast.run(wait=True) is None and not fast.running
    assert "more than the memory limit" in fast.message and "PREIMAGE_MEMORY_LIMIT" in fast.message
    monkeypatch.delenv("PREIMAGE_MEMORY_LIMIT")
    _upload(fast, "tiny.png", _png_bytes(8))  # 8x8 to 48x48: enlarged 6x, said
    assert fast.run(wait=True) is not None and "enlarged 6.0x from 8x8 to 48x48" in fast.message


def test_neigh_larger_than_the_map_is_a_message(fast):
    fast.neigh.value = 50  # the stem's map of a 48x48 image is 24x24
    assert fast.run(wait=True) is None and "neigh 50 is larger than the 24x24 map" in fast.message
    fast.neigh.value, fast.group.value = 5, 2
    result = fast.run(wait=True)
    assert result.provenance["settings"][0]["neigh"] == 5 and result.provenance["settings"][0]["group"] == 2


def test_divergence_in_the_background_run_is_a_message(fast, monkeypatch):
    def diverge(*args, **kwargs):
        raise DivergenceError("the inversion diverged: lower the learning rate")

    monkeypatch.setattr("preimage.apps.explorer.invert", diverge)
    fast.run(wait=False)
    assert fast.wait(60) is None and not fast.running and "diverged" in fast.message


def test_random_weights_instead_of_imagenet_are_said():
    # the tests' TORCH_HOME is empty, so AlexNet's weights "auto" fall back to random ones
    e = explore(model="alexnet", layer="conv1", weights="auto", size=48, iterations=5)
    result = e.run(wait=True)
    assert not result.provenance["representation"]["trained"]
    assert "RANDOM (untrained) weights" in e.message and "untrained" in e.message
    e.weights.value = "imagenet"  # asking for the missing file names it
    assert e.run(wait=True) is None and "alexnet" in e.message.lower()


def test_save_before_any_run_says_so(tmp_path):
    e = explore(model="hog")
    assert e.save(tmp_path) == [] and "press Run first" in e.message and not list(tmp_path.iterdir())


def test_an_image_path_is_read_at_once(tmp_path):
    path = tmp_path / "mine.png"
    path.write_bytes(_png_bytes(40))
    e = explore(model="hog", image=str(path), size=0, iterations=5)
    assert e.image.value == UPLOAD + "mine.png"
    assert e.run(wait=True).provenance["image_size"] == [40, 40]
    with pytest.raises(ImageError, match="not found"):
        explore(model="hog", image=str(tmp_path / "missing.png"))


def test_the_ijcv_recipe_and_fourier_images_from_the_widgets(fast):
    """recipe ijcv2016: C instead of λ_TV, jitter and box in the run; fourier: Adam on the spectrum."""
    assert fast.weight.disabled and not fast.lambda_tv.disabled
    fast.model.value = "efficientnet_lite0"
    fast.layer.value = "stage2"
    fast.recipe.value = "ijcv2016"
    assert fast.lambda_tv.disabled and not fast.weight.disabled
    fast.weight.value, fast.iterations.value = 20.0, 10
    result = fast.run(wait=True)
    s = result.provenance["settings"][0]
    assert (s["form"], s["weight"]) == ("ijcv2016", 20.0) and result.provenance["box"] == 160.0
    assert result.provenance["stages"][0]["transforms"] == ["jitter=1"] and result.provenance["optimizer"] == "adagrad"
    fast.param.value = "fourier"
    result = fast.run(wait=True)
    assert result.provenance["param"] == "fourier" and result.provenance["optimizer"] == "adam"
    assert np.isfinite(result.error).all()
    fast.model.value = "hog"
    fast.recipe.value = "cvpr2015"
    fast.recipe.value = "ijcv2016"  # HOG has no stride to jitter by: said at once, and by Run
    assert "--recipe cvpr2015" in fast.message
    assert fast.run(wait=True) is None and "--recipe cvpr2015" in fast.message
