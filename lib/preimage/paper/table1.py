"""The quantitative protocol of §7 for the shallow representations (Table 1).

Error per image: ||Φ(x*) − Φ0||² divided by the mean squared pairwise distance among the
reference codes of the whole image set (reference experiment_shallow_quantitative.m), reported as
mean ± std over images, in percent. The plain relative error ||Φ(x*) − Φ0|| / ||Φ0|| is given
beside it. Pairwise distances need codes of one shape, so every image is brought to one size
(centre crop, then resize): our choice, since the paper's images were not all the same size.
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import images, representations
from ..engine.objective import Setting
from ..engine.optimise import invert
from ..engine.results import InversionResult
from ..errors import PreimageError
from . import hoggle

# Table 1 of the paper (§7), percent, mean and std.
PAPER_TABLE1 = {"HOGgle": (66.20, 13.7), "HOG": (28.10, 7.9), "HOGb": (10.67, 5.2), "DSIFT": (10.89, 7.5)}
SHALLOW = {"HOG": "hog", "HOGb": "hogb", "DSIFT": "dsift"}


def normalised_errors(phi: torch.Tensor, phi0: torch.Tensor) -> np.ndarray:
    """Per image ||Φ(x*)_i − Φ0_i||² / mean_{j≠k} ||Φ0_j − Φ0_k||² (needs at least two images)."""
    phi, phi0 = phi.flatten(1).double(), phi0.flatten(1).double()
    n = len(phi0)
    if n < 2:
        raise PreimageError("the shallow protocol's normalisation needs at least two images")
    d = torch.cdist(phi0, phi0).pow(2)
    scale = d.sum() / (n * (n - 1))
    return ((phi - phi0).pow(2).sum(1) / scale).cpu().numpy()


def load_set(sources, size: int) -> tuple[list[str], torch.Tensor]:
    """Names and (N, 3, size, size) RGB uint8-valued float images from shipped names, files or a folder."""
    paths = []
    for s in ([sources] if isinstance(sources, (str, Path)) else sources):
        p = Path(s)
        paths += sorted(q for q in p.iterdir() if q.suffix.lower() in images.SUFFIXES) if p.is_dir() else [s]
    if len(paths) < 2:
        raise PreimageError(f"the protocol needs at least two images, got {len(paths)}")
    names = [Path(p).stem for p in paths]
    rgbs = [images.fit(images.load(p)[0], size) for p in paths]
    return names, torch.as_tensor(np.stack(rgbs)).permute(0, 3, 1, 2).float()


@dataclass
class Row:
    method: str
    errors: np.ndarray  # normalised, per image (fractions)
    relative: np.ndarray  # ||Φ(x*) − Φ0|| / ||Φ0|| per image
    time_s: float
    reconstructions: np.ndarray = field(repr=False)  # (N, H, W, 3) display-stretched
    result: InversionResult | None = field(default=None, repr=False)  # None for HOGgle (no optimisation)

    @property
    def mean(self) -> float:
        return 100 * float(self.errors.mean())

    @property
    def std(self) -> float:
        return 100 * float(self.errors.std())


def table1(names: list[str], rgb: torch.Tensor, *, schedule, lambda_tv: float = 1.0, seed: int = 0,
           device: str = "auto", progress: bool = False, dictionary=None) -> list[Row]:
    """Invert every image with HOGgle, HOG, HOGb and DSIFT (all images of a method in one batch)."""
    rows = [_hoggle_row(rgb, dictionary)]
    for method, model in SHALLOW.items():
        rep = representations.get(model)
        x0 = torch.cat([images.to_input(im.permute(1, 2, 0).numpy(), rep.mean) for im in rgb])
        result = invert(rep, x0, settings=Setting(lambda_tv=lambda_tv), schedule=schedule, seed=seed,
                        device=device, progress=progress)
        result.provenance["images"] = list(names)
        rows.append(_row(method, rep, x0, torch.as_tensor(result.x), result.time_s, result.display(), result))
    return rows


def _hoggle_row(rgb: torch.Tensor, dictionary) -> Row:
    rep = representations.get("hog")
    x0 = torch.cat([images.to_input(im.permute(1, 2, 0).numpy(), rep.mean) for im in rgb])
    t0 = time.perf_counter()
    with torch.no_grad():
        codes = rep(x0).permute(0, 2, 3, 1).numpy()
    outs = []
    for code, x in zip(codes, x0):
        g = hoggle.invert(code, tuple(x.shape[1:]), dictionary)
        # HOGgle's patches have no absolute contrast: give the result the target's spread
        outs.append(torch.as_tensor(g / max(g.std(), 1e-8) * float(x.std()), dtype=torch.float32)[None])
    xs = torch.stack(outs)
    return _row("HOGgle", rep, x0, xs, time.perf_counter() - t0, images.stretch(images.to_pixels(xs, rep.mean)))


def _row(method, rep, x0, x, time_s, shown, result=None) -> Row:
    with torch.no_grad():
        phi0, phi = rep(x0), rep(x.to(x0.dtype))
    relative = ((phi - phi0).flatten(1).norm(dim=1) / phi0.flatten(1).norm(dim=1)).numpy()
    return Row(method, normalised_errors(phi, phi0), relative, time_s, shown, result)


def to_csv(rows: list[Row], names: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "mean_percent", "std_percent", "paper_mean_percent", "paper_std_percent",
                "relative_error_mean", "time_s"] + [f"error_{n}" for n in names])
    for r in rows:
        paper = PAPER_TABLE1.get(r.method, (None, None))
        w.writerow([r.method, f"{r.mean:.2f}", f"{r.std:.2f}", paper[0], paper[1],
                    f"{r.relative.mean():.4f}", f"{r.time_s:.1f}"] + [f"{100 * e:.2f}" for e in r.errors])
    return buf.getvalue()


def to_markdown(rows: list[Row]) -> str:
    lines = ["| method | ours: mean ± std (%) | paper (%) | ours: ‖Φ(x*)−Φ0‖/‖Φ0‖ |", "|---|---|---|---|"]
    for r in rows:
        pm, ps = PAPER_TABLE1.get(r.method, (float("nan"),) * 2)
        lines.append(f"| {r.method} | {r.mean:.1f} ± {r.std:.1f} | {pm:.2f} ± {ps:.1f} | {r.relative.mean():.3f} |")
    return "\n".join(lines)
