"""Run the numbered notebooks headless with papermill: ``python tools/run_notebooks.py`` (``make figures``).

Executed copies go to build/notebooks/; the figures go to figures/<notebook>/. The run stops at
the first failing notebook and names the cell. It resumes: a notebook whose figures are newer
than the notebook, the library, the shipped data and were made with the same parameters is
skipped (``--force`` runs it anyway); a stamp beside the executed copy records each success.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from preimage.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / "build" / "notebooks"
FIGURES = ROOT / "figures"
INPUTS = (ROOT / "lib" / "preimage",)  # besides the notebook itself (the shipped data is in the package)


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


def _stamp(book: Path, executed: Path) -> Path:
    return executed / f"{book.stem}.done.json"


def _newest_input(book: Path) -> float:
    files = [book] + [f for d in INPUTS if d.is_dir() for f in d.rglob("*") if f.is_file()]
    return max(f.stat().st_mtime for f in files)


def up_to_date(book: Path, parameters: dict, figures: Path, executed: Path = EXECUTED) -> bool:
    """True when ``book`` last succeeded with ``parameters`` and every figure it wrote then is
    still there and newer than all its inputs."""
    stamp = _stamp(book, executed)
    if not stamp.is_file():
        return False
    record = json.loads(stamp.read_text())
    outputs = [figures / book.stem / name for name in record.get("outputs", [])]
    if record.get("parameters") != parameters or not outputs or not all(f.is_file() for f in outputs):
        return False
    return min(f.stat().st_mtime for f in outputs) > _newest_input(book)


def record_success(book: Path, parameters: dict, figures: Path, seconds: float, executed: Path = EXECUTED) -> None:
    outputs = sorted(str(f.relative_to(figures / book.stem)) for f in (figures / book.stem).rglob("*") if f.is_file())
    write_json(_stamp(book, executed), {"notebook": book.name, "parameters": parameters, "outputs": outputs,
                                        "seconds": round(seconds, 1)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/run_notebooks.py", description=__doc__)
    p.add_argument("--profile", choices=("quick", "paper"), default="quick")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks (e.g. 00 or quickstart)")
    p.add_argument("--figures", type=Path, default=FIGURES, help="output folder (default figures/)")
    p.add_argument("--model", help="the network every CNN notebook uses (default: each notebook's, auto)")
    p.add_argument("--force", action="store_true", help="run notebooks even when their figures are up to date")
    args = p.parse_args(argv)
    from papermill.exceptions import PapermillExecutionError

    books = discover(args.only)
    figures = args.figures.resolve()
    params = {"profile": args.profile, "device": args.device, "output_dir": str(figures), "progress": False}
    if args.model:
        params["model"] = args.model
    for i, book in enumerate(books, 1):
        if not args.force and up_to_date(book, params, figures, EXECUTED):
            print(f"[{i}/{len(books)}] {book.name} up to date, skipped ({figures / book.stem}/ is newer than "
                  f"its inputs; --force to rerun)", flush=True)
            continue
        t0 = time.perf_counter()
        _stamp(book, EXECUTED).unlink(missing_ok=True)  # a failed run must not look finished later
        try:
            out = run(book, params, EXECUTED)
        except PapermillExecutionError as e:
            first_line = (e.source or "").strip().splitlines()[:1] or [""]
            print(f"[{i}/{len(books)}] {book.name} FAILED in cell [{e.exec_count}] starting `{first_line[0]}` "
                  f"({e.ename}: {e.evalue}); executed copy, with the traceback: {EXECUTED / book.name}",
                  file=sys.stderr)
            return 1
        seconds = time.perf_counter() - t0
        record_success(book, params, figures, seconds, EXECUTED)
        print(f"[{i}/{len(books)}] {book.name} ok in {seconds:.0f} s -> "
              f"{figures / book.stem}/ (executed copy {out.relative_to(ROOT)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
