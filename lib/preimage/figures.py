"""Figure layout helpers and atomic saving with provenance (PNG + PDF + JSON side by side)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import images
from .atomic import atomic_path, write_json


def grid(panels: list[list[np.ndarray | None]], titles: list[list[str]] | None = None,
         suptitle: str | None = None, cell: float = 2.0,
         boxes: list[list[tuple[float, float, float, float] | None]] | None = None):
    """A figure of image panels (rows of (H, W, 3) arrays in [0, 1]; None leaves a gap), with
    optional (top, left, bottom, right) pixel boxes drawn on them."""
    import matplotlib.pyplot as plt

    rows, cols = len(panels), max(len(r) for r in panels)
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows + (0.5 if suptitle else 0)),
                             squeeze=False)
    for i in range(rows):
        for j in range(cols):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(panels[i]) and panels[i][j] is not None:
                ax.imshow(np.clip(panels[i][j], 0, 1), interpolation="lanczos")
                if titles and j < len(titles[i]) and titles[i][j]:
                    ax.set_title(titles[i][j], fontsize=8)
                if boxes and j < len(boxes[i]) and boxes[i][j] is not None:
                    top, left, bottom, right = boxes[i][j]
                    ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                                               fill=False, edgecolor="yellow", linewidth=1))
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    if suptitle:  # room kept for the suptitle: without it, a second row's titles cover the first row
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.1 / fig.get_figheight()))
    return fig


def mosaic(tiles: np.ndarray | list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Equal (H, W, 3) images in [0, 1] tiled row by row into a square-ish grid, ``gap`` white
    pixels apart (the IJCV paper's mosaics of channels)."""
    tiles = np.asarray(tiles)
    n, h, w, c = tiles.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap, c), dtype=tiles.dtype)
    for i, tile in enumerate(tiles):
        r, q = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, q * (w + gap):q * (w + gap) + w] = tile
    return out


def setting_title(setting: dict) -> str:
    """A short title for one recorded setting (``InversionResult.provenance["settings"][i]``)."""
    parts = [f"λ_TV={setting['lambda_tv']:g}", f"β={setting['beta']:g}"]
    if setting.get("neigh"):
        parts.append(f"{setting['neigh']}×{setting['neigh']} centre")
    if setting.get("group"):
        parts.append(f"half {setting['group']}")
    if setting.get("channels"):
        parts.append(f"{len(setting['channels'])} channels")
    return " ".join(parts)


def rows_of(results: dict, columns: str = "restart", column_titles: dict | list | None = None,
            original: bool = True):
    """Panels and titles for ``grid``: one row per (layer, image) of ``results`` ({label:
    InversionResult}), image-major, whose columns run over restarts or settings, after the
    original image. ``column_titles``: a list for every row, or {label: list}; by default the
    restart number or the setting, each with the item's error."""
    panels, titles = [], []
    first = next(iter(results.values()))
    for i, image in enumerate(first.provenance.get("images") or range(int(first.items[:, 0].max()) + 1)):
        for label, r in results.items():
            shown, n_settings = r.display(), len(r.provenance["settings"])
            count = r.provenance["restarts"] if columns == "restart" else n_settings
            names = column_titles.get(label) if isinstance(column_titles, dict) else column_titles
            row, row_titles = ([originals(r)[i]], [f"{image}\n{label}"]) if original else ([], [])
            for k in range(count):
                b = r.index(i, 0, k) if columns == "restart" else r.index(i, k, 0)
                name = (names[k] if names else f"restart {k + 1}" if columns == "restart"
                        else setting_title(r.provenance["settings"][k]))
                row.append(shown[b])
                row_titles.append(f"{name}\nerror {r.error[b]:.3f}")
            panels.append(row)
            titles.append(row_titles)
    return panels, titles


def chunks(items: list, per_row: int) -> list[list]:
    """``items`` in rows of ``per_row``."""
    return [items[i:i + per_row] for i in range(0, len(items), per_row)]


def per_layer(results: dict, labels: dict[str, str] | None = None, per_row: int = 6, original: bool = True,
              item: int = 0):
    """Panels and titles for ``grid``: one pre-image per layer of ``results`` ({layer:
    InversionResult}; item ``item`` of each), after the original image, in rows of ``per_row``.
    Each title is the layer's label (default: the layer and its λ_TV) and the item's error."""
    panels, titles = [], []
    if original:
        first = next(iter(results.values()))
        panels.append(originals(first)[int(first.items[item, 0])])
        titles.append(str(first.provenance["images"][int(first.items[item, 0])]))
    for layer, r in results.items():
        label = (labels or {}).get(layer) or f"{layer} (λ_TV {r.provenance['settings'][int(r.items[item, 1])]['lambda_tv']:g})"
        panels.append(r.display()[item])
        titles.append(f"{label}\nerror {r.error[item]:.3f}")
    return chunks(panels, per_row), chunks(titles, per_row)


def energy_plot(curves: dict[str, np.ndarray], title: str = "", term: str = "loss"):
    """The ``term`` energy against iteration, one line per label (log scale)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    # matplotlib's default cycle repeats after ten colours: one colour per line for up to twenty
    colours = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20").colors
    for (label, values), colour in zip(curves.items(), colours * (len(curves) // len(colours) + 1)):
        ax.semilogy(np.arange(1, len(values) + 1), values, label=label, color=colour)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{term} term")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def originals(result) -> np.ndarray:
    """(N, H, W, 3) in [0, 1]: the images an InversionResult inverted (by the names it records)."""
    h, w = result.provenance["image_size"]
    rgbs, _ = images.load_many(result.provenance["images"], (h, w))
    return rgbs / 255.0


def save(fig, stem: str | Path, provenance: dict) -> list[Path]:
    """Write ``stem``.png, .pdf and .json, each atomically, so that a failed run never leaves a
    half-written figure over a good one. ``provenance`` is a record (``engine.results.record``);
    the JSON is that record with the figure's name."""
    from .engine.results import check_record

    problems = check_record(provenance)
    if problems:
        raise ValueError(f"the provenance of {Path(stem).name} is not a record: {'; '.join(problems)}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    write_json(stem.with_suffix(".json"), {**provenance, "file": stem.name})
    return paths + [stem.with_suffix(".json")]
