"""Headless Firefox for the page tests, driven over Marionette, the protocol Firefox itself speaks.

Selenium drives Firefox only through geckodriver, which no Debian package ships (it is downloaded from GitHub); the
few commands the tests need are Marionette's own, as JSON over a local socket, so apt's firefox-esr is all there is
to install. :class:`Firefox` answers the part of Selenium's WebDriver that the shared page helpers use
(``execute_script``, ``get``, ``set_window_size``, ``save_screenshot``, ``title``), so ``wait``, ``broken_images`` and
the a11y checks serve both browsers. Marionette has no ``get_log``: :meth:`Firefox.errors` reads the errors the page
raised from the browser's console service (hence ``-remote-allow-system-access``), as Chromium's SEVERE log entries.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from test_report import IN_CI

FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")
needs_firefox = pytest.mark.skipif(
    not FIREFOX and not IN_CI,
    reason="firefox is not installed (apt-get install firefox-esr); under CI=true this test runs and fails instead")

# A profile with nothing to fetch or ask at start: no update, telemetry, safe-browsing lists or first-run pages (the
# machine may have no network, and a request that hangs would slow every start). Port 0: Marionette takes a free
# port and writes it to the profile's MarionetteActivePort, so tests running side by side never share a browser.
PREFS = {
    "marionette.port": 0, "remote.prefs.recommended": True, "app.update.disabledForTesting": True,
    "browser.shell.checkDefaultBrowser": False, "browser.startup.page": 0,
    "browser.startup.homepage_override.mstone": "ignore", "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False, "browser.safebrowsing.update.enabled": False,
    "network.captive-portal-service.enabled": False, "network.connectivity-service.enabled": False,
    "extensions.update.enabled": False, "browser.newtabpage.enabled": False,
    # scrollbars that overlay the page, as a phone's do (Chromium runs with --hide-scrollbars): a page that fits
    # its window measures scrollWidth == innerWidth in both browsers
    "ui.useOverlayScrollbars": 1,
    # the page window is a popup (below), which the blocker would refuse to a script
    "dom.disable_open_during_load": False,
    # what the pages write to their console goes to the browser's output too (firefox.log, shown when a start fails)
    "devtools.console.stdout.content": True,
}
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the WebDriver key of an element reference

# The pages' errors: uncaught exceptions, rejected promises nobody handled, requests the CSP refused (what Chromium's
# log lists as SEVERE, but for a 404, which Firefox does not log, and console.error, which the pages never call).
# Read in the browser's own (chrome) context from its console service, which every content process reports to.
ERRORS_JS = """
return Services.console.getMessageArray()
  .filter((m) => m instanceof Ci.nsIScriptError && !m.isFromChromeContext &&
    !(m.flags & (Ci.nsIScriptError.warningFlag | Ci.nsIScriptError.infoFlag)))
  .map((m) => `${m.category}: ${m.errorMessage}`);
"""


class Firefox:
    """One headless Firefox with its own profile under ``folder``, its page window ``width`` x ``height``.

    The page window is a popup, opened by the first: a browser window's toolbars keep it at least 500 px wide, and
    the tests look at pages as a phone's 375 px show them.
    """

    def __init__(self, folder: Path, width: int = 1280, height: int = 1000, timeout: float = 60):
        profile = folder / "firefox-profile"
        profile.mkdir(parents=True)
        (profile / "user.js").write_text("".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n"
                                                 for k, v in PREFS.items()))
        self.log = folder / "firefox.log"
        with open(self.log, "wb") as log:  # its own session: quit() ends its content processes with it
            self.process = subprocess.Popen(
                [FIREFOX, "--headless", "--marionette", "--remote-allow-system-access", "--no-remote",
                 "--profile", str(profile)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.socket = None
        try:
            self.socket = socket.create_connection(("127.0.0.1", self._port(profile, timeout)), timeout=timeout)
            self.buffer, self.last_id = b"", 0
            self._receive()  # Marionette's greeting: {"applicationType": "gecko", "marionetteProtocol": 3}
            self.command("WebDriver:NewSession", {"capabilities": {"alwaysMatch": {"pageLoadStrategy": "normal"}}})
            self._open_page_window(width, height, timeout)
        except BaseException:
            self.quit()
            raise

    def _open_page_window(self, width: int, height: int, timeout: float) -> None:
        first = self.command("WebDriver:GetWindowHandles")
        self.execute_script("window.open('about:blank', '', 'popup')")
        deadline = time.monotonic() + timeout
        while len(handles := self.command("WebDriver:GetWindowHandles")) == len(first):
            if time.monotonic() > deadline:
                raise RuntimeError("Firefox opened no page window")
            time.sleep(0.05)
        self.command("WebDriver:SwitchToWindow", {"handle": next(h for h in handles if h not in first)})
        self.set_window_size(width, height)

    def _port(self, profile: Path, timeout: float) -> int:
        written = profile / "MarionetteActivePort"
        deadline = time.monotonic() + timeout
        while not (written.is_file() and written.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Firefox did not start Marionette; its output:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        return int(written.read_text())

    def _receive(self):
        while b":" not in self.buffer:
            self._read_more()
        size, rest = self.buffer.split(b":", 1)
        self.buffer = rest
        while len(self.buffer) < int(size):
            self._read_more()
        packet, self.buffer = self.buffer[:int(size)], self.buffer[int(size):]
        return json.loads(packet)

    def _read_more(self) -> None:
        chunk = self.socket.recv(1 << 20)
        if not chunk:
            raise ConnectionError("Firefox closed the Marionette connection")
        self.buffer += chunk

    def command(self, name: str, parameters: dict | None = None):
        """Send one Marionette command and return its answer (``value`` unwrapped); a WebDriver error raises."""
        self.last_id += 1
        packet = json.dumps([0, self.last_id, name, parameters or {}]).encode()
        self.socket.sendall(str(len(packet)).encode() + b":" + packet)
        while True:
            kind, message_id, error, result = self._receive()
            if kind == 1 and message_id == self.last_id:
                break
        if error:
            raise RuntimeError(f"{name}: {error.get('error')}: {error.get('message')}")
        return result["value"] if isinstance(result, dict) and list(result) == ["value"] else result

    def get(self, url: str) -> None:
        self.command("WebDriver:Navigate", {"url": url})

    def execute_script(self, script: str, *args):
        return self.command("WebDriver:ExecuteScript", {"script": script, "args": list(args)})

    @property
    def title(self) -> str:
        return self.command("WebDriver:GetTitle")

    def set_window_size(self, width: int, height: int) -> None:
        self.command("WebDriver:SetWindowRect", {"width": width, "height": height})

    def save_screenshot(self, path: str | Path) -> bool:
        """The whole page (not only the window) as a PNG at ``path``."""
        png = self.command("WebDriver:TakeScreenshot", {"full": True, "hash": False})
        Path(path).write_bytes(base64.b64decode(png))
        return True

    def send_file(self, css: str, path: Path) -> None:
        """Choose ``path`` in the file input ``css`` as a user would (its change event fires)."""
        element = self.command("WebDriver:FindElement", {"using": "css selector", "value": css})
        self.command("WebDriver:ElementSendKeys", {"id": element[ELEMENT], "text": str(path)})

    def press(self, *keys: str) -> None:
        """Press and release each key in turn on the focused element, as a user would (WebDriver's key values, as
        Selenium's ``Keys.ENTER``)."""
        steps = [{"type": kind, "value": key} for key in keys for kind in ("keyDown", "keyUp")]
        self.command("WebDriver:PerformActions", {"actions": [{"type": "key", "id": "keyboard", "actions": steps}]})

    def errors(self) -> list[str]:
        """The errors the pages raised since the browser started, each as ``category: message``."""
        self.command("Marionette:SetContext", {"value": "chrome"})
        try:
            return self.execute_script(ERRORS_JS)
        finally:
            self.command("Marionette:SetContext", {"value": "content"})

    def quit(self) -> None:
        """Close the browser, then end whatever of its processes is left (a content process may outlive it)."""
        try:
            if self.socket is not None:
                self.command("Marionette:Quit")
        except (OSError, RuntimeError):
            pass
        finally:
            if self.socket is not None:
                self.socket.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
