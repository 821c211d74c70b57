"""The README's gallery: thumbnails of the regenerated figures beside the paper's figure numbers.

``python tools/gallery.py`` reads figures/<notebook>/*.png with their provenance JSON, writes
thumbnails to docs/gallery/ and prints the markdown table (model, weights, profile per figure).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from PIL import Image
from run_notebooks import FIGURES, ROOT

from preimage.atomic import atomic_path

GALLERY = ROOT / "docs" / "gallery"
WIDTH = 480


def entries(figures: Path = FIGURES) -> list[dict]:
    """One entry per figure named after a paper figure (fig<N>_*.png), in notebook order."""
    out = []
    for png in sorted(figures.glob("*/fig*.png"), key=lambda p: (p.parent.name, _number(p))):
        js = png.with_suffix(".json")
        if _number(png) and js.is_file():
            out.append({**json.loads(js.read_text()), "png": png, "notebook": png.parent.name,
                        "figure": f"Fig. {_number(png)}"})
    return out


def _number(png: Path) -> int:
    match = re.match(r"fig(\d+)[_.]", png.name)
    return int(match.group(1)) if match else 0


def thumbnail(png: Path, folder: Path, width: int = WIDTH) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{png.parent.name}-{png.stem}.png"
    with Image.open(png) as im:
        im = im.convert("RGB")
        im.thumbnail((width, width * 4))
        with atomic_path(target) as tmp:
            im.save(tmp, format="PNG", optimize=True)
    return target


def markdown(items: list[dict], folder: Path, root: Path = ROOT) -> str:
    rows = ["| paper | ours | notebook, model, weights, profile |", "|---|---|---|"]
    for e in items:
        thumb = thumbnail(e["png"], folder)
        stand_ins = "; ".join(e.get("stand_ins") or [])
        rows.append(f"| {e['figure']} | ![{e['figure']}]({thumb.relative_to(root).as_posix()}) | "
                    f"`{e['notebook']}`: {e.get('model', '?')}, {e.get('weights', '?')}, {e.get('profile', '?')} "
                    f"profile{'; ' + stand_ins if stand_ins else ''} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/gallery.py", description=__doc__)
    p.add_argument("--figures", type=Path, default=FIGURES)
    p.add_argument("--out", type=Path, default=GALLERY)
    args = p.parse_args(argv)
    items = entries(args.figures)
    if not items:
        print(f"error: no figures with provenance in {args.figures}; run `make figures` first", file=sys.stderr)
        return 2
    print(markdown(items, args.out.resolve(), args.out.resolve().parents[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
