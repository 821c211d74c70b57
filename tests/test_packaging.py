"""The project's metadata agrees with itself: pyproject.toml and environment.yml list the same
dependencies, and the notebooks are stored clean with a parameters cell."""
import json
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda package name -> PyPI name


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", requirement).groups()
    return name.lower(), spec.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip = dict(_split(r) for r in project["dependencies"] + project["optional-dependencies"]["test"])
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
