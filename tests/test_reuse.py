"""Items a chapter computed are read back when another asks for the same one, and only then: a
different setting, seed, image or library computes afresh, and a result assembled from stored and
fresh items is the result a single run would give."""
import numpy as np
import pytest

from preimage import Setting
from preimage.paper import recipes, reuse, sweep

LAYERS = ["conv1", "conv2"]


def _sweep(lambdas, images=("chelsea", "coffee"), seed=0, restarts=1):
    return sweep.invert_layers("alexnet", LAYERS, list(images), weights="random", size=67, seed=seed,
                               restarts=restarts, schedule=recipes.CNN.scaled(6), device="cpu", log=None,
                               settings=lambda layer: [Setting(lambda_tv=v) for v in lambdas])


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("PREIMAGE_CACHE", str(tmp_path))
    monkeypatch.delenv(reuse.ENV, raising=False)
    # eager throughout: conv2 items are chaotic enough that a compiled run's float32 reordering moves
    # one by grey levels after 100 iterations (so does a 1e-7 change of the image, measured)
    monkeypatch.setenv("PREIMAGE_COMPILE", "0")
    return tmp_path / "inversions"


def test_an_item_asked_for_again_is_read_back_and_the_rest_computed(store, monkeypatch):
    first = _sweep([1.0, 10.0])
    assert all("reused_items" not in r.provenance for r in first.values())
    assert len(list(store.glob("*.npz"))) == 2 * 2 * 2  # layers x images x settings
    second = _sweep([10.0, 100.0])
    monkeypatch.setenv(reuse.ENV, "0")
    alone = _sweep([10.0, 100.0])  # what one run computes, nothing read back
    for layer in LAYERS:
        old, new, ref = first[layer], second[layer], alone[layer]
        assert new.provenance["reused_items"] == 2  # λ_TV 10 on both images
        assert [s["lambda_tv"] for s in new.provenance["settings"]] == [10.0, 100.0]
        assert new.items.tolist() == ref.items.tolist() == [[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0]]
        for image in (0, 1):
            read, was = new.index(image, 0), old.index(image, 1)
            np.testing.assert_array_equal(new.x[read], old.x[was])  # read back, bit for bit
            for term in new.energies:
                np.testing.assert_array_equal(new.energies[term][:, read], old.energies[term][:, was])
        # items do not depend on what shared their batch, to float32 reordering
        np.testing.assert_allclose(new.x, ref.x, rtol=0, atol=1e-3 * np.abs(ref.x).max())
        np.testing.assert_allclose(new.error, ref.error, rtol=1e-4)


def test_everything_read_back_runs_nothing(store):
    _sweep([1.0])
    again = _sweep([1.0])
    assert all(r.provenance["reused_items"] == 2 and r.time_s == 0.0 for r in again.values())


@pytest.mark.parametrize("change", ["seed", "image", "restarts", "library"])
def test_anything_the_item_depends_on_computes_it_afresh(store, monkeypatch, change):
    _sweep([1.0])
    if change == "library":
        monkeypatch.setattr(reuse, "library_version", lambda: "edited")
    kwargs = {"seed": dict(seed=1), "image": dict(images=("rocket", "coffee")), "restarts": dict(restarts=2),
              "library": {}}[change]
    results = _sweep([1.0], **kwargs)
    # the image: coffee's item is read back; restarts run together, so a missing restart 1 runs restart 0 again
    reused = {"seed": 0, "image": 1, "restarts": 0, "library": 0}[change]
    assert all(r.provenance.get("reused_items", 0) == reused for r in results.values())


def test_reuse_off_stores_nothing(store, monkeypatch):
    monkeypatch.setenv(reuse.ENV, "0")
    _sweep([1.0])
    assert not store.exists()
