"""Shared fixtures: an offline, $HOME-free environment, a test photo and a small linear
representation whose inverse exists."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import preimage
from preimage.representations import Representation
from preimage.representations.base import layer_table
from preimage.representations.receptive_field import Geometry

# The repository's tools (notebook runner, gallery) live beside the package, not in it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

# Every directory a library, torch hub, matplotlib or Jupyter might write into.
_DIRS = ("TORCH_HOME", "MPLCONFIGDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR",
         "JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "PREIMAGE_CACHE")


@pytest.fixture(scope="session", autouse=True)
def _offline_environment(tmp_path_factory):
    """No downloads ever (PREIMAGE_OFFLINE=1) and every cache/config directory in a temporary
    folder, so that the tests neither reach the network nor touch $HOME. Tests that need their
    own TORCH_HOME override it with monkeypatch on top of this."""
    root = tmp_path_factory.mktemp("env")
    mp = pytest.MonkeyPatch()
    mp.setenv("PREIMAGE_OFFLINE", "1")
    for name in _DIRS:
        d = root / name.lower()
        d.mkdir()
        mp.setenv(name, str(d))
    yield root
    mp.undo()


@pytest.fixture(scope="session")
def photo227():
    """The shipped astronaut photo, centre-cropped and resized to 227x227 (RGB uint8)."""
    return preimage.images.fit(preimage.images.load("astronaut")[0], 227)


LINEAR_MEAN = (120.0, 120.0, 120.0)


def make_linear_rep(seed: int = 0) -> Representation:
    """A fixed random Conv2d(3, 16, 5, stride=2): a linear map with a (left) inverse, since each
    2x2 block of 12 input values feeds 16 outputs and the kernels tile the whole image when
    (H - 5) is even."""
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(3, 16, 5, stride=2)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / 75 ** 0.5)
        conv.bias.copy_(0.1 * torch.randn(conv.bias.shape, generator=g))
    layers = layer_table([("conv", 16, Geometry(5, 2, 0), True)])
    return Representation(conv, model="linear", layer="conv", layers=layers, weights="fixed",
                          trained=True, mean=LINEAR_MEAN, input_size=None)


@pytest.fixture
def linear_rep():
    """Factory: ``linear_rep(seed=0)`` builds the fixed linear representation."""
    return make_linear_rep


@pytest.fixture(scope="session")
def small_images():
    """Two different 33x33 photos as (2, 3, 33, 33) mean-subtracted inputs of the linear rep."""
    rgbs = [preimage.images.fit(preimage.images.load(name)[0], 33) for name in ("astronaut", "chelsea")]
    return torch.cat([preimage.images.to_input(rgb, LINEAR_MEAN) for rgb in rgbs])


@pytest.fixture(scope="session")
def notebook_run(request, tmp_path_factory):
    """``run(book)`` -> (figures folder, executed copy) of a numbered notebook in its quick
    profile on the CPU: nbval's run of this session (conftest.py at the top) where it ran the
    whole notebook, else one papermill run, made once per session."""
    import run_notebooks

    runs = request.config.pluginmanager.get_plugin("preimage_notebook_runs")
    done = {}

    def run(book: Path) -> tuple[Path, Path]:
        if book.stem not in done:
            if runs is not None and runs.failures(book.stem):
                pytest.fail(f"nbval's run of {book.name} failed at {', '.join(runs.failures(book.stem))}; "
                            f"its report above has the traceback")
            if runs is not None and runs.complete(book.stem):
                done[book.stem] = runs.figures, runs.executed(book.stem)
            else:
                root = tmp_path_factory.mktemp(book.stem)
                with pytest.MonkeyPatch.context() as mp:
                    mp.delenv("PREIMAGE_NOTEBOOK_PARAMETERS", raising=False)
                    executed = run_notebooks.run(book, {"profile": "quick", "device": "cpu",
                                                        "output_dir": str(root / "figures"), "progress": False},
                                                 executed=root / "executed")
                done[book.stem] = root / "figures", executed
        return done[book.stem]

    return run
