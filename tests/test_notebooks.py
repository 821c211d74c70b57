"""Every notebook runs headless under papermill in its quick profile and writes its figures
with provenance."""
import json
from pathlib import Path

import pytest

import run_notebooks as notebooks

BOOKS = notebooks.discover()


@pytest.mark.slow
@pytest.mark.parametrize("book", BOOKS, ids=[b.stem for b in BOOKS])
def test_notebook_runs_in_quick_profile(book: Path, tmp_path):
    figures = tmp_path / "figures"
    executed = notebooks.run(book, {"profile": "quick", "device": "cpu", "output_dir": str(figures),
                                    "progress": False}, executed=tmp_path / "executed")
    assert executed.is_file()
    written = sorted((figures / book.stem).glob("*.png"))
    assert written, f"{book.name} wrote no figure"
    for png in written:
        assert png.with_suffix(".pdf").stat().st_size > 0
        record = json.loads(png.with_suffix(".json").read_text())
        assert {"model", "weights", "profile", "written"} <= set(record)
        for layer in record.get("layers", {}).values():  # figures made by sweep.provenance
            assert layer["iterations"] > 0 and layer["seed"] is not None and layer["time_s"] > 0
            assert all({"lambda_tv", "beta"} <= set(s) for s in layer["settings"])
            assert record["trained"] or "untrained" in record["weights"]
        runs = record.get("runs", {})
        for run in runs.values():
            prov = run["provenance"]
            assert prov["representation"]["layer"] and prov["seed"] is not None
            assert prov["iterations"] > 0 and "lambda_tv" in run["settings"][0] and "beta" in run["settings"][0]
            if not prov["representation"]["trained"]:
                # the tests run with an empty TORCH_HOME, so weights="auto" falls back to random
                # weights, and the figure's record (whose label the titles use) must say so
                assert "untrained" in record["weights"]
