"""Run the numbered notebooks headless with papermill: ``python -m preimage.notebooks``.

Executed copies go to build/notebooks/; the figures go to figures/<notebook>/. The run stops at
the first failing notebook and names the cell.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / "build" / "notebooks"
FIGURES = ROOT / "figures"


def discover(only: list[str] | None = None) -> list[Path]:
    books = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        chosen = [b for b in books if any(b.stem == o or b.stem.startswith(o) or b.stem[3:] == o for o in only)]
        missing = [o for o in only if not any(b.stem == o or b.stem.startswith(o) or b.stem[3:] == o for b in books)]
        if missing:
            raise SystemExit(f"error: no notebook named {', '.join(missing)}; notebooks: "
                             f"{', '.join(b.stem for b in books)}")
        books = chosen
    return books


def run(book: Path, parameters: dict, executed: Path = EXECUTED) -> Path:
    """Execute one notebook with ``parameters`` injected; returns the executed copy's path."""
    import papermill

    executed.mkdir(parents=True, exist_ok=True)
    out = executed / book.name
    papermill.execute_notebook(str(book), str(out), parameters=parameters, cwd=str(book.parent),
                               kernel_name="python3", progress_bar=False, log_output=False)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m preimage.notebooks", description=__doc__)
    p.add_argument("--profile", choices=("quick", "paper"), default="quick")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks (e.g. 00 or quickstart)")
    p.add_argument("--figures", type=Path, default=FIGURES, help="output folder (default figures/)")
    args = p.parse_args(argv)
    from papermill.exceptions import PapermillExecutionError

    books = discover(args.only)
    for i, book in enumerate(books, 1):
        t0 = time.perf_counter()
        params = {"profile": args.profile, "device": args.device, "output_dir": str(args.figures.resolve()),
                  "progress": False}
        try:
            out = run(book, params)
        except PapermillExecutionError as e:
            print(f"[{i}/{len(books)}] {book.name} FAILED in cell {e.exec_count} ({e.ename}: {e.evalue}); "
                  f"executed copy: {EXECUTED / book.name}", file=sys.stderr)
            return 1
        print(f"[{i}/{len(books)}] {book.name} ok in {time.perf_counter() - t0:.0f} s -> "
              f"{args.figures / book.stem}/ (executed copy {out.relative_to(ROOT)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
