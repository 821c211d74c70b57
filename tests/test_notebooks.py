"""Every notebook runs headless in its quick profile (under nbval in the full suite, else
papermill: the ``notebook_run`` fixture) and writes its figures with provenance."""
import json
from pathlib import Path

import pytest
import run_notebooks as notebooks

from preimage import check_record

BOOKS = notebooks.discover()


@pytest.mark.slow
@pytest.mark.parametrize("book", BOOKS, ids=[b.stem for b in BOOKS])
def test_notebook_runs_in_quick_profile(book: Path, notebook_run):
    figures, executed = notebook_run(book)
    assert executed.is_file()
    written = sorted((figures / book.stem).glob("*.png"))
    assert written, f"{book.name} wrote no figure"
    for png in written:
        assert png.with_suffix(".pdf").stat().st_size > 0
    for js in sorted((figures / book.stem).rglob("*.json")):  # figures, results and Table 3's items
        record = json.loads(js.read_text())
        assert check_record(record) == [], f"{js.relative_to(figures)}: {check_record(record)}"
        assert record["profile"] == "quick" or js.parent.name == "items"
        for run in record["runs"].values():
            assert run["iterations"] > 0 and run["time_s"] >= 0 and run["seed"] is not None
            assert all({"lambda_tv", "beta"} <= set(s) for s in run["settings"])
            if not run["representation"]["trained"]:
                # the tests run with an empty TORCH_HOME, so weights="auto" falls back to random
                # weights, and the figure's record (whose label the titles use) must say so
                assert "untrained" in record["weights"]
