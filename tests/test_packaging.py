"""The project's metadata agrees with itself: pyproject.toml and environment.yml list the same
dependencies, and the notebooks are stored clean with a parameters cell; a wheel installed outside
the checkout finds its data and runs."""
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from preimage import check_record

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda package name -> PyPI name


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", requirement).groups()
    return name.lower(), spec.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = project["dependencies"] + extras["test"]
    for own in [r for r in wanted if r.startswith("preimage[")]:  # the test extra includes the book's
        wanted = [r for r in wanted if r != own] + extras[own[len("preimage["):-1]]
    pip = dict(_split(r) for r in wanted)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {}
    entries = []
    for entry in env["dependencies"]:
        entries += entry["pip"] if isinstance(entry, dict) else [entry]  # the pip: section counts too
    for entry in entries:
        name, spec = _split(entry)
        if name not in ("python", "pip"):
            conda[CONDA_NAMES.get(name, name)] = spec
    assert conda == pip


def test_notebooks_are_stored_without_outputs_and_have_parameters():
    books = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert books, "no notebooks"
    for book in books:
        nb = json.loads(book.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), book.name
        tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{book.name} needs exactly one cell tagged 'parameters'"
        for name in ("profile", "device", "output_dir", "seed", "progress"):
            assert re.search(rf"^{name}\s*=", "".join(tagged[0]["source"]), re.M), (book.name, name)


def test_every_checked_cell_has_its_expected_output_and_no_other():
    """The cells nbval compares (# NBVAL_CHECK_OUTPUT) and notebooks/checked_outputs.json agree:
    each has a text output of a few lines, and no entry is left for a cell that is gone."""
    expected = json.loads((ROOT / "notebooks" / "checked_outputs.json").read_text())
    marked = {book.stem: ["".join(c["source"]) for c in json.loads(book.read_text())["cells"]
                          if c["cell_type"] == "code" and "# NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
              for book in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    marked = {stem: cells for stem, cells in marked.items() if cells}
    assert {stem: [c["source"] for c in cells] for stem, cells in expected.items()} == marked, \
        "the checked cells changed: run make figures, then python tools/store_checked_outputs.py"
    for cells in expected.values():
        for cell in cells:
            assert cell["outputs"] and len(json.dumps(cell["outputs"])) < 8000
            assert {k for o in cell["outputs"] for k in o.get("data", {})} <= {"text/plain", "text/markdown", "text/html"}


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_runs(tmp_path):
    """Shipped images and the HOGgle dictionary are package data, found wherever it is installed."""
    wheels, site, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True, cwd=work)
    wheel = next(wheels.glob("preimage-*.whl"))
    subprocess.run(pip + ["install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, cwd=work)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import preimage, preimage.paper.hoggle as h; "
                            "print(preimage.__file__); print(h.PairedDictionary.load().cells)"],
                           env=env, cwd=work, capture_output=True, text=True, check=True).stdout.split()
    assert Path(where[0]).is_relative_to(site) and int(where[1]) > 0
    out = subprocess.run([sys.executable, "-m", "preimage", "invert", "chelsea", "--model", "hog", "--size", "64",
                          "--iters", "8", "--no-progress", "--out", "hog"], env=env, cwd=work,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    record = json.loads((work / "hog" / "result.json").read_text())
    assert check_record(record) == [] and (work / "hog" / "reconstruction.png").is_file()
