"""Headless Chromium for UI tests: the page's DOM after its scripts ran, a screenshot, and every network request
the page made (read from Chromium's own net log, so a request the page only tried counts too)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
REQUIRED_ENV = "SFTFLOW_BROWSER_TESTS"  # "required" (CI sets it): a missing Chromium fails the tests instead


def require_chromium() -> str:
    """Chromium's path; a skip with the reason when it is missing (a user's `make test`), a failure in CI."""
    if CHROMIUM is None:
        reason = "Chromium is not installed (Debian: apt-get install -y chromium)"
        if os.environ.get(REQUIRED_ENV) == "required":
            pytest.fail(f"{reason}, and {REQUIRED_ENV}=required asks for the browser tests")
        pytest.skip(reason)
    return CHROMIUM


@dataclass
class Rendered:
    dom: str
    screenshot: Path
    page_requests: list[str]  # URLs the page asked the network for (Chromium's own update checks left out)

    @property
    def text(self) -> str:
        return " ".join(re.sub(r"<[^>]+>", " ", self.dom).split())


def page_requests(net_log: Path) -> list[str]:
    """URLs of the requests a page made: those with an initiator (the page's origin; "null" for a file: page).
    Chromium's own background requests (update and time checks) and the browser's navigation have none."""
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [event["params"]["url"] for event in log["events"]
            if event["type"] == start_job and "url" in event.get("params", {})
            and event["params"].get("initiator", "not an origin") != "not an origin"]


def render(url: str, folder: Path, name: str = "page", offline: bool = False, budget_ms: int = 15000) -> Rendered:
    """Load `url`, let its scripts run for `budget_ms` of virtual time, return the DOM, a screenshot and the
    requests. `offline`: every host name fails to resolve, so nothing leaves the machine (requests still log)."""
    net_log, shot = folder / f"{name}.netlog.json", folder / f"{name}.png"
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={folder / f'{name}-profile'}", "--window-size=1400,1000",
               f"--virtual-time-budget={budget_ms}", f"--log-net-log={net_log}", "--dump-dom", f"--screenshot={shot}"]
    if offline:
        command.append("--host-resolver-rules=MAP * ~NOTFOUND")
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return Rendered(done.stdout, shot, page_requests(net_log))


def evaluate(url: str, expression: str, folder: Path, settle_s: float = 8.0, timeout_s: float = 60.0) -> object:
    """Open `url` in headless Chromium, wait until `expression` (JavaScript) is truthy or `settle_s` passed after
    the load, and return its value, through the DevTools protocol: what the page's scripts built, such as an
    image's natural size, which a DOM dump cannot tell."""
    import socket
    import time

    from websockets.sync.client import connect

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={folder / 'devtools-profile'}",
                             f"--remote-debugging-port={port}", "--window-size=1400,1000", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                import httpx

                pages = httpx.get(f"http://127.0.0.1:{port}/json", timeout=2).json()
                target = next(p for p in pages if p["type"] == "page")
                break
            except Exception:  # noqa: BLE001 - Chromium is still starting
                assert time.monotonic() < deadline, "Chromium's DevTools endpoint did not come up"
                time.sleep(0.2)
        with connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
            ids = iter(range(1, 1_000_000))

            def call(method: str, **params: object) -> dict:
                message_id = next(ids)
                ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
                while True:
                    reply = json.loads(ws.recv(timeout=timeout_s))
                    if reply.get("id") == message_id:
                        return reply.get("result", {})

            call("Page.enable")
            call("Page.navigate", url=url)
            settle = time.monotonic() + settle_s
            while True:
                value = call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")
                if value or time.monotonic() > settle:
                    return value
                time.sleep(0.5)
    finally:
        proc.kill()
        proc.wait()
