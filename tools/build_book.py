"""Build the read-along book: ``python tools/build_book.py`` (``make book``).

First the notebooks run as ``make figures`` runs them (quick profile unless ``--profile paper``),
reusing the executed copies in build/notebooks/ that are up to date; ``--executed DIR`` takes
executed copies from DIR instead (the test suite passes those of its own run). Then the site is
staged in build/book-src/: book/ (configuration and opening page), the executed chapters, the
README's method and measured sections with the files they show, and MathJax from the
jupyter-server-mathjax package; Sphinx builds it into build/book/, which is replaced only when the
build succeeds. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import run_notebooks

from preimage.atomic import atomic_folder

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
STAGE = ROOT / "build" / "book-src"
OUT = ROOT / "build" / "book"
# the README's sections that become pages: {page: heading}
README_PAGES = {"method": "The method as implemented", "measured": "Measured"}
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def readme_section(text: str, heading: str) -> str:
    """The README's "## heading" section, down to the next "## ", as a page of its own (its
    headings one level up)."""
    lines = text.splitlines()
    start = lines.index(f"## {heading}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(line[1:] if line.startswith("##") else line for line in lines[start:end]) + "\n"


def stage_links(page: str, stage: Path) -> str:
    """Copy the repository files ``page`` links to into ``stage`` (same relative paths, so the
    links stay as they are); a link to a notebook points at its chapter."""
    def fix(m: re.Match) -> str:
        bang, label, target = m.groups()
        if re.match(r"[a-z]+:|#", target):
            return m.group(0)
        path = target.split("#")[0]
        if path.startswith("notebooks/") and path.endswith(".ipynb"):
            return f"{bang}[{label}]({target[len('notebooks/'):]})"
        source = ROOT / path
        if not source.is_file():
            raise SystemExit(f"error: the README links to {path}, which does not exist; fix the README")
        (stage / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, stage / path)
        return m.group(0)
    return LINK.sub(fix, page)


def mathjax_files() -> Path:
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise SystemExit("error: MathJax for the book comes from the jupyter-server-mathjax package, which is "
                         "not installed; pip install -e '.[book]' (make book does it)") from None
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def stage(chapters: list[Path], stage_dir: Path = STAGE) -> Path:
    """Assemble the Sphinx source folder from book/, ``chapters`` (executed notebooks) and the
    README; returns it."""
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    shutil.copytree(BOOK, stage_dir)
    shutil.copytree(mathjax_files(), stage_dir / "_static" / "mathjax")
    readme = (ROOT / "README.md").read_text()
    for page, heading in README_PAGES.items():
        (stage_dir / f"{page}.md").write_text(stage_links(readme_section(readme, heading), stage_dir))
    for chapter in chapters:
        nb = json.loads(chapter.read_text())
        # papermill's injected cell holds this machine's paths; the stored parameters cell stays
        nb["cells"] = [c for c in nb["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
        (stage_dir / chapter.name).write_text(json.dumps(nb, ensure_ascii=False))
    index = stage_dir / "index.md"
    toc = "\n".join(["", "```{toctree}", ":maxdepth: 1", ":caption: Chapters", "",
                     *[c.stem for c in chapters], "```", "", "```{toctree}", ":maxdepth: 1",
                     ":caption: Reference", "", *README_PAGES, "```", ""])
    index.write_text(index.read_text() + toc)
    return stage_dir


def build(chapters: list[Path], out: Path = OUT, stage_dir: Path = STAGE) -> Path:
    """Stage and build the site into ``out`` (replaced atomically); Sphinx's warnings are errors,
    so a broken link or a missing image fails the build."""
    from sphinx.cmd.build import build_main

    source = stage(chapters, stage_dir)
    with atomic_folder(out) as tmp:
        code = build_main(["-b", "html", "-W", "--keep-going", "-q", "-d", str(source / "_doctrees"),
                           str(source), str(tmp)])
        if code:
            raise SystemExit(f"error: Sphinx failed (exit {code}) building {source}; its messages are above")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/build_book.py", description=__doc__)
    p.add_argument("--profile", choices=("quick", "paper"), default="quick")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--force", action="store_true", help="run every notebook again")
    p.add_argument("--executed", type=Path, help="take the executed notebooks from this folder; run nothing")
    p.add_argument("--out", type=Path, default=OUT, help="the site's folder (default build/book/)")
    args = p.parse_args(argv)
    books = run_notebooks.discover()
    if args.executed is None:
        code = run_notebooks.main(["--profile", args.profile, "--device", args.device]
                                  + (["--force"] if args.force else []))
        if code:
            return code
        executed = run_notebooks.EXECUTED
    else:
        executed = args.executed
    chapters = [executed / b.name for b in books]
    missing = [c.name for c in chapters if not c.is_file()]
    if missing:
        raise SystemExit(f"error: no executed copy of {', '.join(missing)} in {executed}; run make figures first "
                         f"or leave out --executed")
    out = build(chapters, args.out.resolve())
    print(f"book: {out / 'index.html'} ({len(chapters)} chapters); serve it with "
          f"python -m http.server -d {out} -b 127.0.0.1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
