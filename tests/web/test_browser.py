"""The web pages in a real browser against a real `tagger watch --listen`: what a user sees
after uploading, browsing labels and photos, searching and opening the status page.

Headless Chromium through Selenium, from Debian's packages (nothing is downloaded). Where
they are missing the test is skipped, except in CI (CI=true), which must have them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers import PHOTOS, ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Read at import: the autouse isolated_environment fixture removes TAGGER_* before the test.
SCREENSHOTS = os.environ.get("TAGGER_SCREENSHOTS") == "1"
# Not executed when shown as text; as HTML it would run (and break the CSP). A file name
# cannot hold "/", so no "</script>": an image's onerror is the stronger probe anyway.
HOSTILE_NAME = "<img src=x onerror=alert(1)>.jpg"
T = TypeVar("T")


@pytest.fixture
def chromedriver() -> Path:
    """Debian's driver; skipped where missing, but CI must have it."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI must have {' and '.join(missing)} (apt-get install chromium-driver)")
    if missing:
        pytest.skip(f"no {' or '.join(missing)}: apt-get install chromium chromium-driver")
    return CHROMEDRIVER


def test_upload_browse_search_and_status_in_a_browser(tmp_path: Path, chromedriver: Path) -> None:
    shots = ROOT / "docs" / "screenshots" if SCREENSHOTS else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with _daemon(tmp_path) as (base, daemon), _browser(tmp_path, chromedriver) as driver:
        console: list[str] = []
        _upload_shows_labels(driver, base, shots)
        _hostile_name_is_text(driver, tmp_path)
        console += _messages(driver)
        _labels_lead_to_thumbnails(driver, base, shots)
        _photo_page(driver, shots)
        console += _messages(driver)
        _search(driver, base)
        _status(driver, base, shots)
        _chinese(driver, base, shots)
        console += _messages(driver)
        refused = [m for m in console if "Content Security Policy" in m or "Refused to" in m]
        assert not refused, refused
    assert daemon.returncode == 0, _log(tmp_path)


def test_search_form_shows_a_malformed_query_error(tmp_path: Path, chromedriver: Path) -> None:
    with _daemon(tmp_path) as (base, _), _browser(tmp_path, chromedriver) as driver:
        driver.get(f"{base}/photos")
        driver.find_element(By.ID, "q").send_keys("score:x", Keys.ENTER)
        error = _wait(driver, lambda: _first(driver, "#grid p.error"), seconds=5)
        assert "column" in error.text, error.text


def _upload_shows_labels(driver: webdriver.Chrome, base: str, shots: Path) -> None:
    driver.get(f"{base}/")
    driver.find_element(By.ID, "files").send_keys(str(PHOTOS / "coral_cat_720p.jpg"))
    result = _wait(driver, lambda: _answered(driver, 1))
    labels = [li.text for li in result.find_elements(By.CSS_SELECTOR, ".tags li")]
    assert any("cat" in label for label in labels[:3]), labels
    assert all(" — " in label and label.endswith("%") for label in labels), labels
    assert result.find_element(By.CSS_SELECTOR, ".name").text == "coral_cat_720p.jpg"
    assert result.find_element(By.CSS_SELECTOR, ".note").text.startswith("Tagged")
    driver.save_screenshot(str(shots / "upload.png"))


def _hostile_name_is_text(driver: webdriver.Chrome, tmp_path: Path) -> None:
    """Other bytes than the first upload, so the file is stored under that name too."""
    hostile = tmp_path / "upload-src" / HOSTILE_NAME
    hostile.parent.mkdir()
    hostile.write_bytes((PHOTOS / "coral_cat_720p.jpg").read_bytes() + b"\0")
    driver.find_element(By.ID, "files").send_keys(str(hostile))
    newest = _wait(driver, lambda: _answered(driver, 2))
    assert newest.find_element(By.CSS_SELECTOR, ".name").text == HOSTILE_NAME
    assert newest.find_element(By.CSS_SELECTOR, ".note").text.startswith("Tagged")
    assert not newest.find_elements(By.CSS_SELECTOR, ".name img")
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 (the property raises when no alert is open)


def _labels_lead_to_thumbnails(driver: webdriver.Chrome, base: str, shots: Path) -> None:
    """The daemon tags the inbox on its own: its labels appear on /labels within seconds."""
    deadline = time.monotonic() + 30
    while not (link := _cat_label(driver, base)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert link, f"no cat label on /labels: {driver.find_element(By.TAG_NAME, 'main').text}"
    driver.save_screenshot(str(shots / "labels.png"))
    link.click()
    _wait(
        driver, lambda: _first(driver, "ul.grid img") if "/photos?" in driver.current_url else None
    )
    loaded = "return [...document.querySelectorAll('ul.grid img')].some(i => i.naturalWidth > 0)"
    _wait(driver, lambda: driver.execute_script(loaded))
    driver.save_screenshot(str(shots / "photos.png"))


def _photo_page(driver: webdriver.Chrome, shots: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, "ul.grid li a").click()
    heading = _wait(
        driver,
        lambda: _first(driver, "article.photo h1") if "/photos/" in driver.current_url else None,
    )
    assert "cat" in heading.text.lower(), heading.text
    assert driver.find_elements(By.CSS_SELECTOR, "table.tags tbody tr")
    assert "inbox" in driver.find_element(By.CSS_SELECTOR, "ul.paths").text
    assert not driver.find_elements(By.CSS_SELECTOR, "ul.paths img")  # names are text
    driver.save_screenshot(str(shots / "photo.png"))


def _search(driver: webdriver.Chrome, base: str) -> None:
    """A malformed query from a link or bookmark names the column; the form finds cats."""
    driver.get(f"{base}/photos?q=score%3Ax")
    error = driver.find_element(By.CSS_SELECTOR, "#grid p.error")
    assert "column" in error.text, error.text
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys("label:cat", Keys.ENTER)
    _wait(driver, lambda: _first(driver, "#grid ul.grid li"))
    assert not driver.find_elements(By.CSS_SELECTOR, "#grid p.error")
    assert "q=label" in driver.current_url  # hx-push-url: the search can be bookmarked


def _status(driver: webdriver.Chrome, base: str, shots: Path) -> None:
    """Reconciling comes first at start; by now it should be watching."""
    deadline = time.monotonic() + 30
    while True:
        driver.get(f"{base}/status")
        state = driver.find_element(By.CSS_SELECTOR, "p.state").text
        if "watching" in state or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "watching" in state, state
    assert "inbox" in driver.find_element(By.TAG_NAME, "dl").text
    driver.save_screenshot(str(shots / "status.png"))


def _chinese(driver: webdriver.Chrome, base: str, shots: Path) -> None:
    """The language switch shows Chinese names, and the choice sticks (a cookie)."""
    driver.get(f"{base}/labels")
    driver.find_element(By.CSS_SELECTOR, 'nav.lang a[hreflang="zh"]').click()
    _wait(driver, lambda: "猫" in _main_text(driver) or None)
    driver.save_screenshot(str(shots / "labels_zh.png"))
    driver.get(f"{base}/photos?q=label:猫")
    captions = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "ul.grid span")]
    assert captions and all(c.startswith("猫") for c in captions), captions
    driver.find_element(By.CSS_SELECTOR, 'nav.lang a[hreflang="en"]').click()
    _wait(driver, lambda: "cat" in _main_text(driver) or None)


def _main_text(driver: webdriver.Chrome) -> str:
    """The page's main text; "" while htmx is swapping it (the old element goes stale)."""
    try:
        return str(driver.find_element(By.TAG_NAME, "main").text)
    except (StaleElementReferenceException, NoSuchElementException):
        return ""


def _cat_label(driver: webdriver.Chrome, base: str) -> WebElement | None:
    driver.get(f"{base}/labels")
    for link in driver.find_elements(By.CSS_SELECTOR, "ul.labels li a"):
        if "cat" in link.find_element(By.CSS_SELECTOR, ".label").text.lower():
            return link
    return None


def _answered(driver: webdriver.Chrome, uploads: int) -> WebElement | None:
    """The newest upload's result once the server has answered (results are prepended)."""
    results = driver.find_elements(By.CSS_SELECTOR, "#results .result")
    if len(results) < uploads or not results[0].find_element(By.CSS_SELECTOR, ".note").text:
        return None
    return results[0]


def _first(driver: webdriver.Chrome, css: str) -> WebElement | None:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


def _wait(driver: webdriver.Chrome, until: Callable[[], T | None], seconds: float = 60) -> T:
    """What `until` returns once it is truthy; TimeoutException after `seconds`."""
    found = WebDriverWait(driver, seconds, poll_frequency=0.1).until(lambda _: until())
    assert found is not None
    return found


def _messages(driver: webdriver.Chrome) -> list[str]:
    """The console since the last call (Chromium hands each entry out once)."""
    return [str(entry.get("message", "")) for entry in driver.get_log("browser")]  # type: ignore[no-untyped-call]


@contextmanager
def _browser(tmp_path: Path, driver_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(driver_path)))
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def _daemon(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real `tagger watch --listen` on a free port, always stopped as systemd would."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    # The folders conftest's isolated_environment made: the session's exported model is shared.
    env |= {
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
    }
    command = [sys.executable, "-m", "tagger", "--db", str(tmp_path / "t.db"), "watch"]
    with open(tmp_path / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(
            [*command, "--listen", f"127.0.0.1:{port}"], env=env, stdout=log, stderr=log
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_healthy(base, daemon, tmp_path)
            yield base, daemon
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def _wait_healthy(base: str, daemon: subprocess.Popen[bytes], tmp_path: Path) -> None:
    """Up to 120 s: the first start may export the model."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"tagger watch exited: {_log(tmp_path)}"
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"/healthz never answered 200: {_log(tmp_path)}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _log(tmp_path: Path) -> str:
    return (tmp_path / "daemon.log").read_text(errors="replace")[-3000:]
