"""WebKit (Safari's engine) for the page tests: WebKitGTK's MiniBrowser, driven by its WebDriver server.

Debian's webkit2gtk-driver ships ``WebKitWebDriver`` and the MiniBrowser it starts; Selenium drives them. WebKitGTK
has no headless mode here, so each :class:`WebKit` draws into its own virtual X display (Xvfb, started and ended
with it). WebKitWebDriver keeps no browser log and MiniBrowser's console goes nowhere under automation, so
:meth:`WebKit.get` installs listeners on the page once loaded: :meth:`WebKit.errors` lists the errors the page
raised after that (uncaught exceptions, rejected promises nobody handled, requests the Content-Security-Policy
refused). An error while the page loads stops it short of its ``ready`` mark, which every test waits for.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.webkitgtk.options import Options
from selenium.webdriver.webkitgtk.service import Service

from test_report import IN_CI

DRIVER = shutil.which("WebKitWebDriver")
XVFB = shutil.which("Xvfb")
MINIBROWSER = next((str(p) for p in Path("/usr/lib").glob("*/webkit2gtk-4.*/MiniBrowser")), None)
needs_webkit = pytest.mark.skipif(
    not (DRIVER and XVFB and MINIBROWSER) and not IN_CI,
    reason="WebKit is not installed (apt-get install webkit2gtk-driver xvfb); under CI=true this test runs and fails "
           "instead")

PHONE = 375  # a phone's page width, as the other engines' tests take it

# Collects what the page raises from now on (window.__cnnlabErrors), as Chromium's SEVERE log entries would.
LISTEN_JS = """
if (!window.__cnnlabErrors) {
  const errors = window.__cnnlabErrors = [];
  addEventListener('error', (e) => errors.push(`error: ${e.message}`));
  addEventListener('unhandledrejection', (e) => errors.push(`unhandled rejection: ${e.reason}`));
  document.addEventListener('securitypolicyviolation',
                            (e) => errors.push(`Content-Security-Policy: ${e.violatedDirective} ${e.blockedURI}`));
}
"""


class WebKit:
    """One MiniBrowser on its own Xvfb display, its page ``width`` x ``height``; logs are kept in ``folder``.

    Its window is never narrower than its toolbar: ``narrowest`` is the page width it takes when asked for a phone's
    375 px (447 px with Debian's WebKitGTK 2.50), still under the pages' phone layouts (600 and 640 px).

    ``javascript=False`` opens pages as a mail or file preview does (iOS Mail, Quick Look): scripts never run.
    """

    def __init__(self, folder: Path, width: int = 1280, height: int = 1000, timeout: float = 60,
                 javascript: bool = True):
        if not (DRIVER and XVFB and MINIBROWSER):
            raise RuntimeError("WebKit is missing: apt-get install webkit2gtk-driver xvfb (see .ci/run)")
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "webkit.log"
        self.xvfb = self.service = self.driver = None
        try:
            self.xvfb = self._start_display(timeout)
            options = Options()
            options.binary_location = MINIBROWSER
            options.add_argument("--automation")
            if not javascript:
                options.add_argument("--enable-javascript=false")
            # its own session: quit() ends MiniBrowser and its web processes with it
            self.service = Service(executable_path=DRIVER, log_output=str(self.log),
                                   env={**os.environ, "DISPLAY": self.display, "GTK_OVERLAY_SCROLLING": "1"},
                                   popen_kw={"start_new_session": True})
            self.driver = webdriver.WebKitGTK(options=options, service=self.service)
            self.driver.set_window_size(PHONE, 667)
            self.narrowest = self.driver.execute_script("return innerWidth")
            self.set_window_size(width, height)
        except BaseException:
            self.quit()
            raise

    def _start_display(self, timeout: float) -> subprocess.Popen:
        """An Xvfb tall enough for a whole-page screenshot; it picks a free display number and says which."""
        read, write = os.pipe()
        with open(self.log, "ab") as log:
            process = subprocess.Popen([XVFB, "-displayfd", str(write), "-screen", "0", "1920x6200x24", "-nolisten",
                                        "tcp"], pass_fds=(write,), stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        os.close(write)
        number, deadline = b"", time.monotonic() + timeout
        with os.fdopen(read, "rb", buffering=0) as said:
            while not number.endswith(b"\n") and select.select([said], [], [], max(0, deadline - time.monotonic()))[0]:
                chunk = said.read(16)
                if not chunk:
                    break
                number += chunk
        if not number.strip():
            process.kill()
            raise RuntimeError(f"Xvfb did not start; its output:\n{self.log.read_text()[-2000:]}")
        self.display = f":{int(number)}"
        return process

    def get(self, url: str) -> None:
        self.driver.get(url)
        self.driver.execute_script(LISTEN_JS)

    def execute_script(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    @property
    def title(self) -> str:
        return self.driver.title

    def set_window_size(self, width: int, height: int) -> None:
        self.driver.set_window_size(width, height)

    def save_screenshot(self, path: str | Path) -> bool:
        """The window as a PNG at ``path``, once drawn at its present size (WebKit paints a resized window's tiles
        over a few frames: a screenshot taken at once shows black where they are still missing)."""
        self.driver.execute_script("scrollTo(0, 0)")
        self.driver.execute_async_script("const done = arguments[0]; "
                                         "requestAnimationFrame(() => requestAnimationFrame(() => done()))")
        time.sleep(0.5)
        return self.driver.save_screenshot(str(path))

    def send_file(self, css: str, path: Path) -> None:
        """Choose ``path`` in the file input ``css`` as a user would (its change event fires)."""
        self.driver.find_element("css selector", css).send_keys(str(path))

    def press(self, *keys: str) -> None:
        """Press and release each key in turn on the focused element, as a user would (Selenium's ``Keys``)."""
        chain = ActionChains(self.driver)
        for key in keys:
            chain.send_keys(key)
        chain.perform()

    def errors(self) -> list[str]:
        """The errors the page now shown raised since :meth:`get` loaded it."""
        return self.driver.execute_script("return window.__cnnlabErrors || ['the error listeners are gone']")

    def quit(self) -> None:
        """Close the browser and its display, whatever state they are in."""
        try:
            if self.driver is not None:
                self.driver.quit()
        except Exception:  # noqa: BLE001  (a browser that died already)
            pass
        finally:
            for process in (getattr(self.service, "process", None), self.xvfb):
                if process is not None:
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    process.wait()
