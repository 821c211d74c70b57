"""One execution of each notebook serves three checks: ``pytest --nbval-lax`` runs the stored
notebooks (and compares the cells marked ``# NBVAL_CHECK_OUTPUT`` with the outputs expected in
notebooks/checked_outputs.json, which this plugin hands to nbval, so that the notebooks themselves
are stored without outputs); it points their figures at a temporary folder, runs them first, and
keeps what each cell printed, so that tests/test_notebooks.py checks the figures and
tests/test_book.py builds the book from the same run instead of executing every notebook again.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

EXPECTED = Path(__file__).parent / "notebooks" / "checked_outputs.json"
# Every directory a library, torch hub, matplotlib or Jupyter might write into (the kernels that
# nbval starts inherit them, and no download is allowed: PREIMAGE_OFFLINE).
CACHE_DIRS = ("TORCH_HOME", "MPLCONFIGDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
              "IPYTHONDIR", "PREIMAGE_CACHE")


class NotebookRuns:
    """The notebooks nbval executed in this session: their figures under ``figures/``, and each
    executed copy (stored notebook + the outputs nbval saw) written by ``executed(name)``."""

    def __init__(self, root: Path):
        self.root = root
        self.figures = root / "figures"
        self.notebooks: dict[str, dict] = {}  # stem: {"nb": notebook, "cells": {index: outputs}, "failed": [...]}
        self.environment = {"PREIMAGE_OFFLINE": "1", **{name: str(root / "env" / name.lower()) for name in CACHE_DIRS},
                            # what papermill injects for `make figures`, read by chapter.apply_overrides
                            "PREIMAGE_NOTEBOOK_PARAMETERS": json.dumps(
                                {"profile": "quick", "device": "cpu", "output_dir": str(self.figures),
                                 "progress": False})}

    def pytest_collection_modifyitems(self, items):
        import nbformat

        expected = json.loads(EXPECTED.read_text()) if EXPECTED.is_file() else {}
        for item in filter(_is_cell, items):
            cells = {c["source"]: c["outputs"] for c in expected.get(Path(str(item.fspath)).stem, [])}
            if item.cell.source in cells:  # what nbval compares the new outputs with
                item.cell.outputs = [nbformat.from_dict(o) for o in cells[item.cell.source]]
                item.cell.execution_count = 1
        # nbval first, so that the tests reading its run find it done
        items.sort(key=lambda item: not _is_cell(item))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item):
        # nbval starts a notebook's kernel while setting up its first cell: the kernel, and only
        # it, gets the environment (the other tests run papermill and chapter() themselves)
        if not _is_cell(item):
            yield
            return
        saved = {name: os.environ.get(name) for name in self.environment}
        for name, value in self.environment.items():
            if name in CACHE_DIRS:
                Path(value).mkdir(parents=True, exist_ok=True)
            os.environ[name] = value
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        if not _is_cell(item) or call.when != "call":
            return
        report = outcome.get_result()
        stem = Path(str(item.fspath)).stem
        run = self.notebooks.setdefault(stem, {"nb": item.parent.nb, "cells": {}, "failed": []})
        index = next(i for i, c in enumerate(run["nb"].cells) if c is item.cell)
        run["cells"][index] = list(item.test_outputs or [])
        # a cell that ran but printed other than its stored output fails nbval's check alone
        if report.failed and "Cell outputs differ" not in str(call.excinfo.value if call.excinfo else ""):
            run["failed"].append(item.name)

    def pytest_unconfigure(self, config):
        # a failed run's figures and executed copies stay for a look; a clean one leaves nothing
        if any(run["failed"] for run in self.notebooks.values()):
            print(f"\nthe notebooks' run is kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def complete(self, stem: str) -> bool:
        """True when nbval ran every code cell of notebook ``stem`` in this session and none
        raised (an output other than the stored one fails only nbval's own check)."""
        run = self.notebooks.get(stem)
        if run is None:
            return False
        code = [i for i, c in enumerate(run["nb"].cells) if c.cell_type == "code"]
        return not run["failed"] and set(code) <= set(run["cells"])

    def failures(self, stem: str) -> list[str]:
        return list(self.notebooks.get(stem, {}).get("failed", []))

    def executed(self, stem: str) -> Path:
        """The executed copy of notebook ``stem``, written on first use."""
        import nbformat

        path = self.root / "executed" / f"{stem}.ipynb"
        if not path.is_file():
            run = self.notebooks[stem]
            nb = copy.deepcopy(run["nb"])
            for n, (index, outputs) in enumerate(sorted(run["cells"].items()), 1):
                cell = nb.cells[index]
                cell.outputs = [nbformat.from_dict(_as_output(o)) for o in outputs]
                cell.execution_count = n
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, str(path))
        return path


def _is_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell"


def _as_output(out) -> dict:
    """An nbval output (a message's content) as an nbformat output."""
    out = dict(out)
    if out["output_type"] == "execute_result":
        out.setdefault("execution_count", None)
    if out["output_type"] in ("display_data", "execute_result"):
        out.setdefault("metadata", {})
    return out


def pytest_configure(config):
    if getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False):
        runs = NotebookRuns(Path(tempfile.mkdtemp(prefix="preimage-notebooks-")))
        config.pluginmanager.register(runs, "preimage_notebook_runs")
