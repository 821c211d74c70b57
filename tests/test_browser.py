"""The explorer in a real browser: JupyterLab on 127.0.0.1, Debian's Chromium driven by Playwright.

It opens notebooks/09_explorer.ipynb, runs every cell, moves the restarts slider, presses Run and
waits until the live image changes, which needs the widget's front end, the kernel's comms and the
background run all working; then it presses Stop on a long run, which only works when the run does
not block the kernel. A screenshot of the explorer is kept as an artifact (build/artifacts/, or
$PREIMAGE_ARTIFACTS). Skipped without Chromium or Playwright, except under CI, where it fails.

Everything Jupyter writes goes to temporary folders; nothing is downloaded (PREIMAGE_OFFLINE=1,
and Chromium's background networking is off: this machine has no network to reach).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SLOW = 300_000  # ms: the first page load and kernel start on a busy 2-core machine
# the stored notebook's defaults invert stage2 at 224 px for 100 iterations; the browser needs
# only the plumbing, so its copy runs a few iterations on a small crop
FAST_PARAMETERS = {"layer": "stem", "size": 96, "iterations": 40}


def _require_browser():
    """Playwright's sync API, or skip (fail when CI is set, like the VLFeat tests)."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        reason, sync_playwright = f"playwright is not installed ({e}); pip install -e '.[test]'", None
    if reason is None and not CHROMIUM.is_file():
        reason = f"{CHROMIUM} not found; apt-get install chromium (as .ci/run does)"
    if reason:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI is set, so the browser test must run: {reason}")
        pytest.skip(reason)
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook_copy(root: Path) -> Path:
    """notebooks/09_explorer.ipynb under ``root`` with the fast parameters; its output_dir
    (../figures) then lands in ``root`` too."""
    nb = nbformat.read(ROOT / "notebooks" / "09_explorer.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "".join(f"{k} = {v!r}\n" for k, v in FAST_PARAMETERS.items())
    path = root / "notebooks" / "09_explorer.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(nb, path)
    return path


def _start_lab(tmp: Path, port: int, token: str) -> tuple[subprocess.Popen, Path]:
    dirs = {name: tmp / name for name in ("config", "data", "runtime", "ipython", "settings", "workspaces")}
    for d in dirs.values():
        d.mkdir()
    # no update checks and no news feed: nothing to fetch
    (dirs["config"] / "jupyter_lab_config.json").write_text(json.dumps({"LabApp": {
        "news_url": None, "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate"}}))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_DATA_DIR": str(dirs["data"]),
           "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]), "IPYTHONDIR": str(dirs["ipython"]),
           "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]), "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
           "PREIMAGE_OFFLINE": "1"}
    log = tmp / "lab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={tmp / 'lab'}", "--ServerApp.allow_root=True",
           f"--LabApp.user_settings_dir={dirs['settings']}", f"--LabApp.workspaces_dir={dirs['workspaces']}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.extension_manager=readonly"]
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc, log


def _wait_for_server(proc: subprocess.Popen, port: int, token: str, log: Path, timeout: float = 300) -> None:
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"JupyterLab did not answer on port {port} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server by its PID (it shuts its kernel down), kill it if it hangs, and then
    whatever is left of the session it leads (its kernel)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session made the server's PID its group's id
    except ProcessLookupError:
        pass


def _artifacts() -> Path:
    folder = Path(os.environ.get("PREIMAGE_ARTIFACTS", ROOT / "build" / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.slow
def test_explorer_runs_and_stops_in_jupyterlab(tmp_path):
    sync_playwright = _require_browser()
    t0 = time.monotonic()
    (_artifacts() / "explorer-failure.png").unlink(missing_ok=True)  # only this run's failure, if any
    _notebook_copy(tmp_path / "lab")
    port, token = _free_port(), secrets.token_hex(16)
    proc, log = _start_lab(tmp_path, port, token)
    page = None
    try:
        _wait_for_server(proc, port, token, log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(SLOW)
                page.goto(f"http://127.0.0.1:{port}/lab/tree/notebooks/09_explorer.ipynb?token={token}",
                          timeout=SLOW)
                _wait_for_kernel(page)
                page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

                explorer = page.locator(".preimage-explorer")
                live = page.locator("img.preimage-live")
                explorer.get_by_text("saved", exact=False).wait_for()  # the notebook's own run and save
                assert "figures/09_explorer" in explorer.inner_text()
                first_src, first_width = live.get_attribute("src"), _natural_width(live)

                # one restart more: keyboard on the slider's handle, as a user without a mouse would
                restarts = explorer.locator(".widget-slider").filter(has_text="restarts")
                restarts.locator(".noUi-handle").focus()
                page.keyboard.press("ArrowRight")
                page.wait_for_function("el => el.textContent.trim() === '2'",
                                       arg=restarts.locator(".widget-readout").element_handle())

                _button(explorer, "Run").click()
                page.wait_for_function("([img, old]) => img.src && img.src !== old",
                                       arg=[live.element_handle(), first_src])
                explorer.get_by_text("done:", exact=False).wait_for()
                assert _natural_width(live) > first_width  # the original and now two restarts
                assert "relative error" in explorer.inner_text()
                explorer.scroll_into_view_if_needed()
                shot = _artifacts() / "explorer.png"
                explorer.screenshot(path=str(shot))
                assert shot.stat().st_size > 10_000

                # a long run, stopped from the browser while it runs in the kernel's background thread
                iterations = explorer.locator(".widget-slider").filter(has_text="iterations")
                readout = iterations.locator(".widget-readout")
                readout.click()
                page.keyboard.press("Control+A")
                page.keyboard.type("2000")
                page.keyboard.press("Enter")
                page.wait_for_function("el => el.textContent.trim() === '2000'", arg=readout.element_handle())
                before = live.get_attribute("src")
                _button(explorer, "Run").click()
                page.wait_for_function("([img, old]) => img.src !== old", arg=[live.element_handle(), before])
                _button(explorer, "Stop").click()
                explorer.get_by_text("stopped:", exact=False).wait_for()
                assert "of 2000 iterations" in explorer.inner_text()
            except Exception:
                if page is not None:
                    page.screenshot(path=str(_artifacts() / "explorer-failure.png"), full_page=True)
                raise
            finally:
                browser.close()
    finally:
        _stop(proc)
    assert proc.poll() is not None
    print(f"browser test: {time.monotonic() - t0:.0f} s; screenshot {_artifacts() / 'explorer.png'}")


def _wait_for_kernel(page) -> None:
    """Until the notebook's kernel has started and is idle."""
    page.wait_for_function("""() => {
        const app = window.jupyterapp;
        const w = app && app.shell.currentWidget;
        const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
        return k && k.status === 'idle';
    }""", timeout=SLOW)


def _button(explorer, text: str):
    """An ipywidgets Button by its text (its accessible name starts with the icon's glyph)."""
    return explorer.locator("button.widget-button", has_text=text)


def _natural_width(img) -> int:
    return img.evaluate("el => el.naturalWidth")
