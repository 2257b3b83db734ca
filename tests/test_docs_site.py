"""The documentation site in a real headless browser (``make docs-check``, after ``make docs``).

A local ``python -m http.server`` serves ``docs/_build/html``; Chromium, driven by
Selenium through Debian's ``chromedriver``, opens the pages as a reader would. The
entry page must show the estimator's API reference (``StableClassifier`` and its
parameters, rendered from the docstring) and the robustness figure, loaded (an
``<img>`` whose ``naturalWidth`` is positive, so the file was found and decoded).

Marked ``docs``: excluded from ``make test``, run by ``make docs-check``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "docs" / "_build" / "html"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def site_url():
    assert (SITE / "index.html").is_file(), f"build the site first (make docs): no {SITE}"
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=SITE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):  # wait until it answers
            try:
                urllib.request.urlopen(f"{url}/index.html", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("python -m http.server did not answer")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, script, timeout=30):
    """Run ``script`` (JavaScript returning a value) until it is truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_entry_page_shows_the_estimator_reference_and_the_robustness_figure(browser, site_url):
    browser.get(f"{site_url}/index.html")
    assert "stablekeras" in browser.title
    # the API reference of the estimator, rendered from its numpydoc docstring
    signature = browser.find_element("css selector", "dl.py.class > dt.sig")
    assert "StableClassifier" in signature.text
    body = browser.find_element("css selector", "dl.py.class > dd").text
    for parameter in ("constraint", "step_size", "image_shape", "random_state"):
        assert parameter in body, parameter
    # numpydoc's sections (the theme writes their titles in capitals)
    assert "PARAMETERS" in body.upper() and "ATTRIBUTES" in body.upper()
    assert "lipschitz_bound_" in body
    # the robustness figure: requested, found and decoded by the browser
    images = browser.find_elements("css selector", "img[src*='chapter_mnist']")
    assert len(images) == 1
    loaded = _wait(
        browser,
        "const img = document.querySelector(\"img[src*='chapter_mnist']\");"
        "return img.complete && img.naturalWidth > 0"
        " ? [img.naturalWidth, img.naturalHeight] : null;",
    )
    assert loaded and loaded[0] > 100 and loaded[1] > 100, loaded


def test_api_and_tutorial_pages_render(browser, site_url):
    browser.get(f"{site_url}/api/robustness.html")
    text = browser.find_element("css selector", "article").text
    assert "robustness_curve" in text and "cross-entropy and margin" in text
    browser.get(f"{site_url}/tutorials.html")
    links = browser.find_elements("css selector", "article a[href*='tutorials/']")
    assert len({a.get_attribute("href") for a in links}) >= 4
    browser.get(links[0].get_attribute("href"))
    article = browser.find_element("css selector", "article")
    # a committed output (a figure of the notebook) is shown; nothing was executed
    figures = article.find_elements("css selector", "img")
    assert figures and all(
        browser.execute_script("return arguments[0].naturalWidth", img) > 0 for img in figures
    )
