"""The restructuring into engine / representations / paper / apps changed no result: seeded
reconstructions saved before it (tests/golden/, made by commit b39ff76, the last before it)
are reproduced to floating-point reordering."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import preimage
from preimage import images, representations
from preimage.engine import Schedule, Setting, invert_at_layers

GOLDEN = Path(__file__).parent / "golden"
META = json.loads((GOLDEN / "reconstructions.json").read_text())


@pytest.fixture(scope="module")
def saved():
    with np.load(GOLDEN / "reconstructions.npz") as z:
        return dict(z)


def _inputs(rep, names, size):
    return torch.cat([images.to_input(images.fit(images.load(n)[0], size), rep.mean) for n in names])


def _close(new, old):
    # same operations in the same order: equal to a few float32 ulps of the pixel scale
    np.testing.assert_allclose(new, old, rtol=1e-5, atol=1e-4 * float(np.abs(old).max()))


@pytest.mark.parametrize("case", [k for k in META if k != "shared"])
def test_invert_reproduces_the_saved_reconstructions(case, saved):
    m = META[case]
    rep = representations.get(m["model"], m["layer"], weights=m["weights"], seed=0)
    result = preimage.invert(rep, _inputs(rep, m["images"], m["size"]),
                             settings=[Setting(**s) for s in m["settings"]], restarts=m["restarts"],
                             schedule=Schedule(tuple(map(tuple, m["schedule"]))), seed=m["seed"], device="cpu",
                             progress=False, pixel_range=m["pixel_range"])
    _close(result.x, saved[f"{case}_x"])
    _close(result.error, saved[f"{case}_error"])
    _close(result.energies["total"], saved[f"{case}_total"])


def test_shared_run_reproduces_the_saved_reconstructions(saved):
    m = META["shared"]
    reps = [representations.get(m["model"], layer, weights=m["weights"], seed=0) for layer in m["layers"]]
    results = invert_at_layers(reps, _inputs(reps[0], m["images"], m["size"]),
                               settings=[Setting(**s) for s in m["settings"]],
                               schedules=Schedule(tuple(map(tuple, m["schedule"]))), seed=m["seed"],
                               device="cpu", progress=False)
    for layer, result in zip(m["layers"], results):
        _close(result.x, saved[f"shared_{layer}_x"])
        _close(result.error, saved[f"shared_{layer}_error"])
