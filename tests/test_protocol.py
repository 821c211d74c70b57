"""Table 1's protocol (§7) and the HOGgle baseline."""
import numpy as np
import pytest
import torch

from preimage import images, representations
from preimage.errors import PreimageError
from preimage.paper import hoggle, table1


def test_normalised_errors_on_a_hand_example():
    phi0 = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])
    # squared pairwise distances: 25, 16, 9 -> mean over ordered pairs j != k = (2*50)/6
    phi = phi0 + torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    errors = table1.normalised_errors(phi, phi0)
    np.testing.assert_allclose(errors, [1 / (100 / 6), 0.0, 4 / (100 / 6)])
    with pytest.raises(PreimageError, match="two images"):
        table1.normalised_errors(phi[:1], phi0[:1])


def test_load_set_brings_images_to_one_size(tmp_path):
    names, rgb = table1.load_set(["astronaut", "chelsea"], 64)
    assert names == ["astronaut", "chelsea"] and rgb.shape == (2, 3, 64, 64)
    with pytest.raises(PreimageError, match="at least two"):
        table1.load_set(["astronaut"], 64)


@pytest.fixture(scope="module")
def tiny_dictionary():
    grays = [hoggle.to_gray255(images.fit(images.load(n)[0], 96)) for n in ("coffee", "rocket")]
    return hoggle.train(grays, atoms=24, cells=2, per_image=300, sparsity=3, seed=0)


def test_hoggle_dictionary_round_trip(tiny_dictionary, tmp_path):
    d = tiny_dictionary
    assert d.hog.shape == (24, 2 * 2 * 27) and d.image.shape == (24, (2 * 8) ** 2)
    d.save(tmp_path / "d.npz")
    e = hoggle.PairedDictionary.load(tmp_path / "d.npz")
    np.testing.assert_allclose(e.hog, d.hog, atol=1e-3)
    assert e.meta["atoms"] == 24
    with pytest.raises(PreimageError, match="tools/train_hoggle.py"):
        hoggle.PairedDictionary.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_hoggle_reconstruction_resembles_the_image(name):
    """With the shipped dictionary, HOGgle's output correlates with the image (about 0.5 here;
    noise: about 0) and its HOG is closer to the target than noise's."""
    rep = representations.get("hog")
    gray = hoggle.to_gray255(images.fit(images.load(name)[0], 128))
    x0 = torch.as_tensor(gray)[None, None] - 128
    with torch.no_grad():
        phi0 = rep(x0)
    g = hoggle.invert(phi0[0].permute(1, 2, 0).numpy(), gray.shape)
    assert g.shape == gray.shape and np.isfinite(g).all()
    assert np.corrcoef(g.ravel(), gray.ravel())[0, 1] > 0.35
    noise = torch.randn_like(x0) * x0.std()
    with torch.no_grad():
        err_g = (rep(torch.as_tensor(g, dtype=torch.float32)[None, None]) - phi0).norm() / phi0.norm()
        err_n = (rep(noise) - phi0).norm() / phi0.norm()
    assert err_g < 0.9 * err_n, (float(err_g), float(err_n))


def test_hoggle_refuses_a_code_smaller_than_its_window(tiny_dictionary):
    with pytest.raises(PreimageError, match="smaller than the HOGgle window"):
        hoggle.invert(np.zeros((1, 5, 27), np.float32), (8, 40), tiny_dictionary)


def test_shipped_dictionary_loads_and_says_how_it_was_made():
    d = hoggle.PairedDictionary.load()
    assert d.hog.shape[1] == d.cells ** 2 * 27
    assert d.meta["training_images"] and d.meta["pairs"] > 1000
    assert not set(images.shipped()) & {n.split(".")[2].split(" ")[0] for n in d.meta["training_images"]}
