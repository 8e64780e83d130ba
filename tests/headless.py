"""Headless Chromium driven through its DevTools protocol over a pipe (for tests, benchmarks/ and docs/).

Chromium started with `--remote-debugging-pipe` reads protocol commands (JSON, each ended by a
NUL byte) on file descriptor 3 and writes replies and events on descriptor 4: no websocket, no
port and no extra package. The tests use it to check the pages clapcurate writes (console errors,
what the page shows), benchmarks/browse.py to time them and docs/browser_screenshot.py to take
screenshots of them; it is not part of the library. Outside tests/, put this folder on `sys.path`
first (`sys.path.insert(0, "tests")` from the repository root).

    with Chromium() as browser:
        browser.open(page.as_uri())
        rows = browser.evaluate("document.querySelectorAll('#rows tr').length")
        browser.screenshot("page.png")
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ENV = "CLAPCURATE_CHROMIUM"  # path of the browser to use instead of the first found


def find_chromium() -> str | None:
    """The Chromium executable: `$CLAPCURATE_CHROMIUM`, else the first of `CHROMIUM_NAMES` on PATH."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


class ProtocolError(RuntimeError):
    """Chromium answered a command with an error, or did not answer in time."""


class Chromium:
    """One headless Chromium with one page (tab), attached through the DevTools protocol."""

    def __init__(self, executable: str | None = None, width: int = 1400, height: int = 1000,
                 timeout: float = 30.0):
        executable = executable or find_chromium()
        if not executable:
            raise RuntimeError(f"Chromium not found (looked for {', '.join(CHROMIUM_NAMES)}; or set "
                                  f"${CHROMIUM_ENV}); on Debian: apt-get install chromium")
        self.timeout = timeout
        self.events: list[dict] = []
        self._next_id = 0
        self._buffer = b""
        self._closed = False
        self._profile = tempfile.TemporaryDirectory(prefix="clapcurate-chromium-")
        to_browser_r, self._to_browser = os.pipe()  # we write commands; Chromium reads fd 3
        self._from_browser, from_browser_w = os.pipe()  # Chromium writes fd 4; we read

        def wire_descriptors():  # in the child: the two pipe ends become descriptors 3 and 4
            read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        arguments = [executable, "--headless", "--remote-debugging-pipe", "--disable-gpu",
                     "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                     "--disable-dev-shm-usage", "--mute-audio", f"--window-size={width},{height}",
                     f"--user-data-dir={self._profile.name}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            arguments.append("--no-sandbox")  # Chromium refuses to run its sandbox as root
        self.process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, close_fds=False, preexec_fn=wire_descriptors)
        os.close(to_browser_r)
        os.close(from_browser_w)
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"}, session=None)["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                     session=None)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ protocol
    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise ProtocolError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise ProtocolError("Chromium closed the DevTools pipe (did it crash?)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None | bool = True,
             timeout: float | None = None) -> dict:
        """Send one command (to the page's session unless `session` is None) and return its result;
        events received meanwhile are kept in `events`."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session is True:
            message["sessionId"] = self.session
        elif session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ProtocolError(f"{method}: {reply['error'].get('message', reply['error'])}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for_event(self, method: str, timeout: float | None = None) -> dict:
        """The first event `method` not yet consumed (received before or after this call)."""
        for index, event in enumerate(self.events):
            if event["method"] == method:
                return self.events.pop(index)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            message = self._receive(deadline)
            if message.get("method") == method:
                return message
            if "method" in message:
                self.events.append(message)

    # ------------------------------------------------------------------ page
    def open(self, url: str, timeout: float | None = None) -> float:
        """Load `url` and wait for its load event; returns the seconds it took."""
        self.events = [event for event in self.events if event["method"] != "Page.loadEventFired"]
        start = time.perf_counter()
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise ProtocolError(f"cannot open {url}: {result['errorText']}")
        self.wait_for_event("Page.loadEventFired", timeout)
        return time.perf_counter() - start

    def evaluate(self, expression: str, await_promise: bool = False, timeout: float | None = None):
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": await_promise}, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            message = details.get("exception", {}).get("description") or details.get("text")
            raise ProtocolError(f"JavaScript error: {message}")
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        """Errors the page reported so far: uncaught exceptions, console.error calls and
        browser log errors (failed resource loads, blocked requests)."""
        errors = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"]))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                errors.append(f"{params['entry'].get('text')} ({params['entry'].get('url', '')})")
        return errors

    def screenshot(self, path: str | os.PathLike, full_page: bool = False) -> Path:
        """A PNG of the page as shown (or of its whole height with `full_page`)."""
        params = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = self.call("Page.captureScreenshot", params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.process.poll() is None:
            try:
                os.write(self._to_browser, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
