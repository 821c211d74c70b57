"""Store the outputs nbval compares: ``python tools/store_checked_outputs.py [NAME ...]``.

The notebooks are stored without outputs. The cells marked ``# NBVAL_CHECK_OUTPUT`` print
something deterministic that ``pytest --nbval-lax`` compares with an expected output; those
expected outputs (text only) live in notebooks/checked_outputs.json, keyed by notebook and cell
source, and conftest.py hands them to nbval. This copies them from the executed copies that
``make figures`` leaves in build/notebooks/ and clears any output left in the stored notebooks.
Run it after changing such a cell (or what it prints), read the diff, and commit it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nbformat
import run_notebooks

from preimage.atomic import write_text

MARK = "# NBVAL_CHECK_OUTPUT"
EXPECTED = run_notebooks.NOTEBOOKS / "checked_outputs.json"
TEXT_OUTPUTS = ("stream", "execute_result", "display_data")


def checked(cell) -> bool:
    return cell["cell_type"] == "code" and MARK in "".join(cell["source"])


def text_only(output: dict) -> dict | None:
    """``output`` without images (nbval does not compare them) or execution counts."""
    if output["output_type"] == "stream":
        return {"output_type": "stream", "name": output["name"], "text": "".join(output["text"])}
    data = {k: "".join(v) for k, v in output.get("data", {}).items() if k.startswith("text/")}
    return {"output_type": "display_data", "data": data, "metadata": {}} if data else None


def expected_outputs(book: Path, executed: Path) -> list[dict]:
    """[{"source", "outputs"}] for each checked cell of ``book``, from ``executed``."""
    ran = {c.source: c for c in nbformat.read(executed, as_version=4).cells if checked(c)}
    found = []
    for cell in nbformat.read(book, as_version=4).cells:
        if not checked(cell):
            continue
        if cell.source not in ran:
            raise SystemExit(f"error: {executed} has no run of the checked cell starting "
                             f"{cell.source.splitlines()[1:2]} of {book.name}; run make figures first")
        outputs = [text_only(o) for o in ran[cell.source].outputs if o.output_type in TEXT_OUTPUTS]
        found.append({"source": cell.source, "outputs": [o for o in outputs if o is not None]})
    return found


def strip(book: Path) -> None:
    """Store ``book`` without outputs."""
    nb = nbformat.read(book, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    write_text(book, nbformat.writes(nb) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/store_checked_outputs.py", description=__doc__)
    p.add_argument("names", nargs="*", help="notebooks (default: all), as make figures ONLY= takes them")
    p.add_argument("--executed", type=Path, default=run_notebooks.EXECUTED,
                   help="folder of executed copies (default build/notebooks/)")
    args = p.parse_args(argv)
    stored = json.loads(EXPECTED.read_text()) if EXPECTED.is_file() else {}
    for book in run_notebooks.discover(args.names or None):
        executed = args.executed / book.name
        if not executed.is_file():
            raise SystemExit(f"error: no executed copy {executed}; run make figures first")
        cells = expected_outputs(book, executed)
        if cells:
            stored[book.stem] = cells
        else:
            stored.pop(book.stem, None)
        strip(book)
        print(f"{book.name}: {len(cells)} checked cells stored in {EXPECTED.name}")
    write_text(EXPECTED, json.dumps(dict(sorted(stored.items())), indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
