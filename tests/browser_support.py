"""What the page tests share in either browser (headless Chromium through Selenium, Firefox through
:mod:`firefox_support`): waiting on the page, the pictures it failed to show, screenshots kept as artifacts.

Each takes a ``driver`` with Selenium's ``execute_script``, ``set_window_size`` and ``save_screenshot``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest


@pytest.fixture()
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("CNNLAB_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait(driver, script: str, timeout: float = 60, what: str = ""):
    """Poll a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script("return " + script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or script}")


def broken_images(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.images).filter(i => i.offsetParent !== null && "
        "!(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 60))")


def screenshot(driver, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height, 800), 6000))
    assert driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
