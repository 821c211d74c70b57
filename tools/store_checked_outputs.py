"""Store the outputs nbval compares: ``python tools/store_checked_outputs.py [NAME ...]``.

The notebooks are stored without outputs, except the cells marked ``# NBVAL_CHECK_OUTPUT``:
``pytest --nbval-lax`` compares what those print with what is stored. This copies their outputs
(text only) from the executed copies that ``make figures`` leaves in build/notebooks/ into the
stored notebooks, and clears every other output. Run it after changing such a cell (or what it
prints), read the diff, and commit it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import run_notebooks

from preimage.atomic import write_text

MARK = "# NBVAL_CHECK_OUTPUT"
TEXT_OUTPUTS = ("stream", "execute_result", "display_data")


def checked(cell) -> bool:
    return cell.cell_type == "code" and MARK in cell.source


def text_only(output):
    """``output`` without images (nbval does not compare them, and they would bloat the notebook)."""
    if output.output_type == "stream":
        return output
    data = {k: v for k, v in output.get("data", {}).items() if k.startswith("text/")}
    return nbformat.from_dict({**output, "data": data, "metadata": {}}) if data else None


def store(book: Path, executed: Path) -> int:
    """Update ``book`` from ``executed``; returns how many checked cells it holds."""
    nb = nbformat.read(book, as_version=4)
    ran = {c.source: c for c in nbformat.read(executed, as_version=4).cells if checked(c)}
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if not checked(cell):
            cell.outputs, cell.execution_count = [], None
            continue
        if cell.source not in ran:
            raise SystemExit(f"error: {executed} has no run of the checked cell starting "
                             f"{cell.source.splitlines()[1:2]} of {book.name}; run make figures first")
        count += 1
        outputs = [o for o in (text_only(o) for o in ran[cell.source].outputs
                               if o.output_type in TEXT_OUTPUTS) if o is not None]
        for o in outputs:
            if o.output_type == "execute_result":
                o.execution_count = count
        cell.outputs, cell.execution_count = outputs, count
    write_text(book, nbformat.writes(nb) + "\n")
    return count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/store_checked_outputs.py", description=__doc__)
    p.add_argument("names", nargs="*", help="notebooks (default: all), as make figures ONLY= takes them")
    p.add_argument("--executed", type=Path, default=run_notebooks.EXECUTED,
                   help="folder of executed copies (default build/notebooks/)")
    args = p.parse_args(argv)
    for book in run_notebooks.discover(args.names or None):
        executed = args.executed / book.name
        if not executed.is_file():
            raise SystemExit(f"error: no executed copy {executed}; run make figures first")
        print(f"{book.name}: {store(book, executed)} checked cells stored")
    return 0


if __name__ == "__main__":
    sys.exit(main())
