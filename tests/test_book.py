"""The read-along book, built offline from this session's executed notebooks (nbval's run: see
conftest.py at the top): every chapter is there with its outputs, the math is MathJax served by
the site, nothing is loaded from elsewhere, and every link resolves. Then every page opens in
Debian's Chromium: images load, the math renders, the console stays clean, and no request leaves
127.0.0.1; a screenshot of one chapter is kept (build/artifacts/book.png) for the README."""
from __future__ import annotations

import functools
import http.server
import re
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import build_book
import pytest
import run_notebooks
from test_browser import CHROMIUM, CHROMIUM_ARGS, _artifacts, _require_browser

BOOKS = run_notebooks.discover()
# the chapters that rebuild a figure or table (not the quickstart or the explorer) teach: they
# carry equations, "what to look for" and exercises with folded solutions
TEACHING = [b.stem for b in BOOKS if b.stem not in ("00_quickstart", "09_explorer")]
SCREENSHOT_OF = "04_every_layer"


class _Page(HTMLParser):
    """The ids, links, sources and stylesheets of one HTML page."""

    def __init__(self):
        super().__init__()
        self.ids, self.links, self.sources = set(), [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag in ("img", "script") and a.get("src"):
            self.sources.append(a["src"])
        if tag == "link" and a.get("href") and {"stylesheet", "icon", "preload"} & set((a.get("rel") or "").split()):
            self.sources.append(a["href"])


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(errors="replace"))
    return page


def _pages(site: Path) -> list[Path]:
    """The site's pages (not the theme's templates among its static files)."""
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts)


@pytest.fixture(scope="session")
def site(notebook_run, tmp_path_factory) -> Path:
    chapters = [notebook_run(book)[1] for book in BOOKS]
    root = tmp_path_factory.mktemp("book")
    return build_book.build(chapters, root / "site", stage_dir=root / "source")


@pytest.mark.slow
def test_every_chapter_is_a_page_with_its_outputs(site):
    index = (site / "index.html").read_text()
    for book in BOOKS:
        page = site / f"{book.stem}.html"
        assert page.is_file(), f"no page for {book.name}"
        assert f'href="{book.stem}.html"' in index, f"{book.stem} is not in the table of contents"
        html = page.read_text()
        assert 'class="cell_output' in html, f"{book.stem}: no outputs"
        figures = [s for s in _parse(page).sources if s.startswith("_images/")]
        assert figures and all((site / unquote(s)).is_file() for s in figures), f"{book.stem}: figures missing"
    for stem in TEACHING:
        html = (site / f"{stem}.html").read_text()
        assert 'class="math' in html, f"{stem}: no equations"
        assert "What to look for" in html, f"{stem}: no 'what to look for'"
        assert re.search(r"<h2>Exercises", html) or 'id="exercises"' in html, f"{stem}: no exercises"
        assert "<details>" in html and "<summary>Solution</summary>" in html, f"{stem}: no folded solutions"
    for page, heading in build_book.README_PAGES.items():
        assert heading in (site / f"{page}.html").read_text()


@pytest.mark.slow
def test_nothing_is_loaded_from_elsewhere_and_every_link_resolves(site):
    pages = _pages(site)
    assert len(pages) >= len(BOOKS) + 3
    parsed = {p: _parse(p) for p in pages}
    mathjax = site / "_static" / "mathjax" / "MathJax.js"
    assert mathjax.is_file()
    for path, page in parsed.items():
        name = path.relative_to(site)
        remote = [s for s in page.sources if urlsplit(s).scheme or s.startswith("//")]
        assert not remote, f"{name} loads {remote}"
        for src in page.sources:
            assert (path.parent / unquote(urlsplit(src).path)).is_file(), f"{name}: {src} is missing"
        for href in page.links:
            parts = urlsplit(href)
            if parts.scheme or href.startswith("//"):
                continue  # a link out (a paper, a repository) is followed only when clicked
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            assert target.is_file(), f"{name}: link {href} leads nowhere"
            if parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                assert unquote(parts.fragment) in ids, f"{name}: link {href} names no anchor there"
    scratch = (site / "00_from_scratch.html").read_text()
    assert "mathjax/MathJax.js" in scratch and "largest pixel difference below 1e-6 grey levels: True" in scratch


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_every_page_renders_in_chromium_offline(site):
    sync_playwright = _require_browser()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    pages = [str(p.relative_to(site)) for p in _pages(site)]
    left, problems = [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.set_default_timeout(60_000)

                def route(r):
                    if urlsplit(r.request.url).hostname == "127.0.0.1" or r.request.url.startswith("data:"):
                        r.continue_()
                    else:
                        left.append(r.request.url)
                        r.abort()

                page.route("**/*", route)
                page.on("console", lambda m: m.type == "error" and problems.append(f"{page.url}: {m.text}"))
                page.on("pageerror", lambda e: problems.append(f"{page.url}: {e}"))
                page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.url}: HTTP {r.status}"))
                for name in pages:
                    page.goto(base + name, wait_until="load")
                    _check_page(page, name)
                    if name == f"{SCREENSHOT_OF}.html":
                        page.locator("img[src^='_images/']").first.scroll_into_view_if_needed()
                        page.screenshot(path=str(_artifacts() / "book.png"))
            finally:
                browser.close()
    finally:
        server.shutdown()
    assert not left, f"requests left 127.0.0.1: {left[:5]}"
    assert not problems, "console errors:\n" + "\n".join(problems[:10])
    assert (_artifacts() / "book.png").stat().st_size > 10_000


def _check_page(page, name: str) -> None:
    # every image, lazy or not, loads
    page.evaluate("() => document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("() => [...document.images].every(i => i.complete)")
    broken = page.evaluate("() => [...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.src)")
    assert not broken, f"{name}: images that did not load: {broken}"
    if page.evaluate("() => document.querySelector('.math') !== null"):
        page.wait_for_function("() => window.MathJax && window.MathJax.isReady")
        page.evaluate("() => new Promise(done => MathJax.Hub.Queue(() => done(true)))")
        rendered = page.evaluate("() => document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_CHTML').length")
        assert rendered > 0, f"{name}: MathJax rendered nothing"
    text = page.evaluate("""() => {
        const copy = document.body.cloneNode(true);
        copy.querySelectorAll('pre, code, script, style, textarea').forEach(e => e.remove());
        return copy.innerText;
    }""")
    # delimiters MathJax did not take, or a control sequence it did not know (shown as its name)
    raw = re.findall(r"\$\$|\\[(\[]|\\[A-Za-z]+", text)
    assert not raw, f"{name}: math left unrendered ({sorted(set(raw))[:5]})"


def test_build_book_names_what_is_missing(tmp_path):
    with pytest.raises(SystemExit) as e:
        build_book.main(["--executed", str(tmp_path)])
    assert "no executed copy of" in str(e.value) and "make figures" in str(e.value)


def test_readme_section_becomes_a_page_with_its_files(tmp_path):
    text = "# T\n\n## A\n\ntext [x](docs/y.png)\n\n### B\n\nmore\n\n## C\n\nother\n"
    assert build_book.readme_section(text, "A") == "# A\n\ntext [x](docs/y.png)\n\n## B\n\nmore\n\n"
    page = "![shot](docs/explorer.png) [chapter](notebooks/04_every_layer.ipynb) [out](https://arxiv.org/abs/1412.0035)"
    assert build_book.stage_links(page, tmp_path) == ("![shot](docs/explorer.png) [chapter](04_every_layer.ipynb) "
                                                      "[out](https://arxiv.org/abs/1412.0035)")
    assert (tmp_path / "docs" / "explorer.png").read_bytes() == (build_book.ROOT / "docs" / "explorer.png").read_bytes()
    with pytest.raises(SystemExit, match="docs/nothing.png, which does not exist"):
        build_book.stage_links("[gone](docs/nothing.png)", tmp_path)
