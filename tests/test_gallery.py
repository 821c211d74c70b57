"""The README gallery is built from the figures and their provenance."""
import json

import gallery
import numpy as np
from PIL import Image


def test_gallery_thumbnails_and_table(tmp_path):
    figures = tmp_path / "figures"
    for book, stem, model in [("02_invariance", "fig7_invariance", "caffenet"), ("01_shallow", "fig3", "hog"),
                              ("02_invariance", "fig11_diversity", "caffenet"), ("00_quickstart", "layers", "x")]:
        (figures / book).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((300, 1200, 3), np.uint8)).save(figures / book / f"{stem}.png")
        (figures / book / f"{stem}.json").write_text(json.dumps(
            {"model": model, "weights": "w", "profile": "quick", "stand_ins": ["a stands in for b"]}))
    items = gallery.entries(figures)
    assert [(e["notebook"], e["figure"]) for e in items] == [
        ("01_shallow", "Fig. 3"), ("02_invariance", "Fig. 7"), ("02_invariance", "Fig. 11")]
    table = gallery.markdown(items, tmp_path / "docs" / "gallery", tmp_path)
    assert "| Fig. 7 | ![Fig. 7](docs/gallery/02_invariance-fig7_invariance.png) | `02_invariance`: caffenet, w, " \
           "quick profile; a stands in for b |" in table
    with Image.open(tmp_path / "docs" / "gallery" / "01_shallow-fig3.png") as im:
        assert im.size == (gallery.WIDTH, 120)
    assert gallery.main(["--figures", str(tmp_path / "none"), "--out", str(tmp_path / "g")]) == 2
