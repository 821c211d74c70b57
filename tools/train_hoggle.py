"""Train the HOGgle paired dictionary shipped in lib/preimage/data/hoggle/: ``python tools/train_hoggle.py``."""
from __future__ import annotations

import argparse
from pathlib import Path

from preimage.paper import hoggle


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/train_hoggle.py", description=__doc__)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "lib" / "preimage" / "data"
                   / "hoggle" / "dictionary.npz")
    p.add_argument("--atoms", type=int, default=256)
    p.add_argument("--cells", type=int, default=4)
    p.add_argument("--per-image", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    named = hoggle.training_images()
    import skimage

    d = hoggle.train([g for _, g in named], atoms=args.atoms, cells=args.cells, per_image=args.per_image,
                     seed=args.seed, meta={"training_images": [f"skimage.data.{n} ({g.shape[1]}x{g.shape[0]})"
                                                               for n, g in named],
                                           "scikit_image": skimage.__version__})
    d.save(args.out)
    print(f"wrote {args.out}: {args.atoms} atoms of {args.cells}x{args.cells} cells from {d.meta['pairs']} pairs "
          f"of {len(named)} images in {d.meta['train_time_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
