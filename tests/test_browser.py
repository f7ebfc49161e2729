"""The lab as a student meets it: notebooks 00 and 04 in JupyterLab, under a real browser.

JupyterLab serves copies of the two notebooks from a temporary folder (the committed ones are
never opened, so never rewritten) on a free 127.0.0.1 port with a token; Playwright drives
Debian's headless chromium (no browser download) through Run All on the smoke profile, then
checks what a student would see: every code cell ran, no traceback or error text, no widget that
failed to display, progress bars that ended as text lines, the smoke warning at the top, and in
04 an explorer whose slider changes the picture. Screenshots are kept under
``runs/test-artifacts/browser/`` (or ``$LABKIT_TEST_ARTIFACTS``).

This test never skips: without chromium or Playwright it fails and says how to install them
(``make test`` installs both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("00_data_and_tokenizer.ipynb", "04_inpaint.ipynb")
CHROMIUM = Path(os.environ.get("LABKIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    # offline machine: no update checks, no sync, no metrics
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--no-first-run", "--metrics-recording-only",
]
RUN_ALL_TIMEOUT_S = 300          # both notebooks take well under a minute each on the smoke profile
SETTINGS = {
    # every cell in the DOM (JupyterLab would otherwise attach only the visible ones)
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    # the served copies are never saved
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


def _artifacts() -> Path:
    folder = Path(os.environ.get("LABKIT_TEST_ARTIFACTS") or REPO / "runs" / "test-artifacts" / "browser")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_server(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode} before serving; its log:\n"
                        + log.read_text()[-3000:])
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer at {url} within {timeout_s} s; its log:\n"
                + log.read_text()[-3000:])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base URL, token, served folder): JupyterLab on the smoke profile, in temporary folders."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no chromium at {CHROMIUM}: the browser test needs Debian's chromium. `make test` "
                    "installs it (as root); else run `apt-get install -y chromium`, or set "
                    "LABKIT_CHROMIUM to a Chromium binary")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        pytest.fail(f"Playwright is not installed ({error}): `pip install -e .[test]` installs it "
                    "(`make test` does); never `playwright install`, the test uses Debian's chromium")

    root = tmp_path_factory.mktemp("browser")
    served = root / "notebooks"
    served.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(REPO / "notebooks" / name, served / name)
    settings = root / "settings"
    for plugin, values in SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {
        **os.environ,
        "HOME": str(root / "home"), "MPLCONFIGDIR": str(root / "matplotlib"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(root / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(root / "jupyter-runtime"),
        "LABKIT_PROFILE": "smoke", "LABKIT_RUNS": str(root / "runs"), "LABKIT_DATA": str(root / "data"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("LABKIT_PROGRESS", None)            # a live front end: the widget bars of a student
    port, token = _free_port(), os.urandom(12).hex()
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.port={port}",
               "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={served}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = root / "jupyterlab.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(f"{base}/api/status?token={token}", server, log)
        yield base, token, served
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.copy(log, _artifacts() / "jupyterlab.log")


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _run_all(browser, lab, name: str):
    """Open ``name``, Run All, wait until every code cell has run; returns (page, seconds)."""
    base, token, _ = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    # a workspace of its own, reset: only this notebook opens (not the tabs of the last page)
    page.goto(f"{base}/lab/workspaces/{Path(name).stem}/tree/{name}?token={token}&reset")
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    notebook.wait_for()
    status = page.locator("#jp-main-statusbar")
    status.get_by_text(re.compile(r"\bIdle\b")).wait_for()
    start = time.monotonic()
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item:not(.lm-mod-hidden)",
                 has_text=re.compile(r"^Run All Cells")).first.click()
    code_cells = notebook.locator(".jp-CodeCell")
    n_code = code_cells.count()
    prompts = notebook.locator(".jp-CodeCell .jp-InputArea-prompt")
    deadline = start + RUN_ALL_TIMEOUT_S
    while True:
        texts = [text.strip() for text in prompts.all_inner_texts()]
        finished = (len(texts) == n_code and all(re.fullmatch(r"\[\d+\]:", t) for t in texts))
        if finished and status.get_by_text(re.compile(r"\bIdle\b")).count():
            break
        failed = notebook.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                  has_text=re.compile("Traceback|Error"))
        if failed.count() or time.monotonic() > deadline:
            _screenshot(page, name, "failed")
            errors = "\n".join(failed.all_inner_texts())[-3000:]
            pytest.fail(f"{name}: Run All did not finish cleanly in {time.monotonic() - start:.0f} s "
                        f"(prompts {texts}); error output:\n{errors}")
        page.wait_for_timeout(500)
    return page, time.monotonic() - start


def _screenshot(page, name: str, what: str) -> Path:
    path = _artifacts() / f"{Path(name).stem}-{what}.png"
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def _screenshot_top(page, name: str) -> Path:
    """The notebook's first outputs (the setup line and the smoke warning)."""
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").nth(1).scroll_into_view_if_needed()
    return _screenshot(page, name, "top")


def _check_clean_output(page, name: str) -> str:
    """Assert what a student must not see; returns the notebook's output text."""
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    errors = notebook.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                              has_text=re.compile("Traceback|Error"))
    assert errors.count() == 0, f"{name}: error output:\n" + "\n".join(errors.all_inner_texts())
    # (tqdm's widget bars write figure spaces, U+2007, for spaces)
    text = "\n".join(notebook.locator(".jp-OutputArea").all_inner_texts()).replace("\u2007", " ")
    assert "Error displaying widget" not in text, f"{name}: a widget failed to display"
    # Every progress bar finished: labkit.lab.progress bars end as a line of text; a widget bar
    # still on the page (a module that draws its own) must at least stand at 100 %.
    widths = notebook.locator(".widget-hprogress .progress-bar").evaluate_all(
        "bars => bars.map(bar => bar.style.width)")
    assert all(width == "100%" for width in widths), f"{name}: unfinished progress bars: {widths}"
    assert "test profile: outputs are not meaningful" in text, f"{name}: no smoke-profile warning at the top"
    return text


def test_data_notebook_runs_clean_in_jupyterlab(browser, lab):
    page, seconds = _run_all(browser, lab, "00_data_and_tokenizer.ipynb")
    print(f"00_data_and_tokenizer: Run All in {seconds:.0f} s")
    text = _check_clean_output(page, "00_data_and_tokenizer.ipynb")
    _screenshot(page, "00_data_and_tokenizer.ipynb", "after-run-all")
    _screenshot_top(page, "00_data_and_tokenizer.ipynb")
    # on a fresh data folder the toy cats are rendered, and their bars end on a finished line
    assert re.search(r"rendering toy cats.{0,40}?\b(\d+)/\1\b", text, re.S), text[:3000]
    assert "reconstruction L1" in text
    page.close()


def test_inpaint_notebook_runs_clean_and_its_explorer_slider_changes_the_image(browser, lab):
    page, seconds = _run_all(browser, lab, "04_inpaint.ipynb")
    print(f"04_inpaint: Run All in {seconds:.0f} s")
    text = _check_clean_output(page, "04_inpaint.ipynb")
    assert "every image follows m_t = min(floor(gamma(t/T) n0), m_(t-1) - 1): True" in text
    _screenshot(page, "04_inpaint.ipynb", "after-run-all")
    _screenshot_top(page, "04_inpaint.ipynb")

    explorer = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .widget-vbox").filter(
        has=page.locator("[role=slider]")).first
    explorer.scroll_into_view_if_needed()
    slider = explorer.locator("[role=slider]").first
    image = explorer.locator("img").first
    image.wait_for()

    def frame(what: str) -> tuple[str, bytes]:
        path = _artifacts() / f"04_inpaint-explorer-{what}.png"
        shot = explorer.screenshot(path=str(path))
        print(f"screenshot: {path}")
        return image.get_attribute("src"), shot

    def move(key: str, previous_src: str) -> None:
        slider.press(key)
        deadline = time.monotonic() + 30
        while image.get_attribute("src") == previous_src:     # the kernel renders the new frame
            assert time.monotonic() < deadline, f"the explorer's image did not change after {key}"
            page.wait_for_timeout(200)
        page.wait_for_timeout(300)

    last_src, last_shot = frame("t-last")
    move("Home", last_src)
    first_src, first_shot = frame("t-0")
    assert slider.get_attribute("aria-valuenow") in ("0", "0.0", "0.00")
    move("ArrowRight", first_src)
    _, next_shot = frame("t-1")
    assert first_shot != last_shot, "the explorer shows the same picture at t = 0 and at the last t"
    assert next_shot != first_shot, "the explorer shows the same picture at t = 0 and t = 1"
    _paint_a_hole(page)
    page.close()


def _status_of(painter) -> str:
    return " ".join(painter.locator(".widget-label").all_inner_texts())


def _paint_a_hole(page) -> None:
    """Clear the painter's hole, drag a vertical stroke near the cat's left edge, inpaint: the
    status line must name the tokens under the stroke, and then the decode."""
    painter = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .widget-vbox").filter(
        has=page.locator("canvas")).first
    painter.scroll_into_view_if_needed()
    painter.get_by_role("button", name="clear the hole").click()
    deadline = time.monotonic() + 30
    while "no hole yet" not in _status_of(painter):
        assert time.monotonic() < deadline, f"clearing the hole did not: {_status_of(painter)!r}"
        page.wait_for_timeout(200)
    canvas = painter.locator("canvas").last          # ipycanvas draws on its top layer
    box = canvas.bounding_box()
    x = box["x"] + 0.15 * box["width"]
    page.mouse.move(x, box["y"] + 0.2 * box["height"])
    page.mouse.down()
    for k in range(1, 31):                            # down the image, in small steps
        page.mouse.move(x, box["y"] + (0.2 + 0.6 * k / 30) * box["height"])
        page.wait_for_timeout(20)
    page.mouse.up()
    deadline = time.monotonic() + 60
    while not re.search(r"token rows \d+-\d+, columns \d+-\d+", _status_of(painter)):
        assert time.monotonic() < deadline, f"the stroke painted no hole: {_status_of(painter)!r}"
        page.wait_for_timeout(300)
    page.wait_for_timeout(1000)                       # the last mouse events reach the kernel
    status = _status_of(painter)
    rows = re.search(r"token rows (\d+)-(\d+), columns (\d+)-(\d+)", status)
    first_row, last_row, first_col, last_col = map(int, rows.groups())
    # the stroke ran down a sixth of the way in from the left edge (the smoke grid is 8 x 8):
    # its tokens are in the two left columns, from near the top to near the bottom
    assert (first_col, last_col) == (0, 1), status
    assert first_row <= 2 and last_row >= 5, status
    painter.get_by_role("button", name="inpaint").click()
    deadline = time.monotonic() + 60
    while "decoded with" not in _status_of(painter):
        assert time.monotonic() < deadline, f"inpaint did not decode: {_status_of(painter)!r}"
        page.wait_for_timeout(300)
    assert rows.group(0) in _status_of(painter)       # the decode filled the painted hole
    _screenshot(page, "04_inpaint.ipynb", "painter")
