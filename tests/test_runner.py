"""The batch runner resumes: up-to-date notebooks are skipped, changed inputs or parameters and
failed runs are not; a failure names the notebook and the cell."""
from __future__ import annotations

import os
import time

import nbformat
import pytest
import run_notebooks as notebooks


def _book(path, body="pass"):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "quick"\ndevice = "auto"\noutput_dir = "."\nprogress = True')
    params.metadata["tags"] = ["parameters"]
    write = nbformat.v4.new_code_cell(
        "from pathlib import Path\n"
        f"out = Path(output_dir) / {path.stem!r}\nout.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'figure.png').write_text(profile)\n" + body)
    nb.cells = [params, write]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    books, lib = tmp_path / "notebooks", tmp_path / "lib"
    books.mkdir()
    lib.mkdir()
    (lib / "code.py").write_text("x = 1\n")
    monkeypatch.setattr(notebooks, "NOTEBOOKS", books)
    monkeypatch.setattr(notebooks, "EXECUTED", tmp_path / "build")
    monkeypatch.setattr(notebooks, "ROOT", tmp_path)
    monkeypatch.setattr(notebooks, "INPUTS", (lib,))
    return tmp_path


def _age(path, seconds=100):
    """Make ``path`` look older than files written now (mtime resolution is coarse on some file systems)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.mark.slow
def test_resume_skips_only_what_is_up_to_date(project, capsys):
    a = _book(project / "notebooks" / "01_a.ipynb")
    b = _book(project / "notebooks" / "02_b.ipynb")
    for f in (a, b, project / "lib" / "code.py"):
        _age(f)
    figures = ["--figures", str(project / "figures")]
    assert notebooks.main(figures) == 0
    first = capsys.readouterr().out
    assert "[1/2] 01_a.ipynb ok" in first and "[2/2] 02_b.ipynb ok" in first

    assert notebooks.main(figures) == 0
    assert capsys.readouterr().out.count("up to date, skipped") == 2

    (project / "lib" / "code.py").write_text("x = 2\n")  # the library changed: everything reruns
    assert notebooks.main(figures) == 0
    assert capsys.readouterr().out.count(" ok in ") == 2
    _age(project / "lib" / "code.py", 50)

    assert notebooks.main(figures + ["--profile", "paper"]) == 0  # other parameters: reruns
    assert capsys.readouterr().out.count(" ok in ") == 2
    assert (project / "figures" / "01_a" / "figure.png").read_text() == "paper"

    _book(a)  # the notebook changed: only it reruns
    assert notebooks.main(figures + ["--profile", "paper"]) == 0
    out = capsys.readouterr().out
    assert "01_a.ipynb ok" in out and "02_b.ipynb up to date" in out

    assert notebooks.main(figures + ["--profile", "paper", "--force", "--only", "02"]) == 0
    assert capsys.readouterr().out.count(" ok in ") == 1


@pytest.mark.slow
def test_a_failure_names_the_cell_and_is_not_remembered_as_done(project, capsys):
    book = _book(project / "notebooks" / "01_a.ipynb")
    figures = ["--figures", str(project / "figures")]
    assert notebooks.main(figures) == 0
    _book(book, body="raise ValueError('broken on purpose')")
    assert notebooks.main(figures) == 1
    err = capsys.readouterr().err
    assert "01_a.ipynb FAILED in cell [3] starting `from pathlib import Path`" in err  # [2] is papermill's
    assert "ValueError: broken on purpose" in err
    assert not (project / "build" / "01_a.done.json").exists()
    _age(book)
    assert notebooks.main(figures) == 1  # its figure is newer than the notebook, but the run failed
