"""The Ray dashboard as a person sees it: headless Chromium, logged in with the cluster's token.

    shots = shoot(dashboard, token, [Page("jobs", "#/jobs", [job_id, "SUCCEEDED"])], out_dir)

Chromium (the Debian package `chromium`; `make setup-browser`) runs headless with its own throw-away profile
and is driven over the DevTools protocol (a websocket on 127.0.0.1, through aiohttp, which Ray already
depends on). Logging in is what the dashboard's token dialog does: POST /api/authenticate with the token as a
Bearer header, which sets the HttpOnly `ray-authentication-token` cookie; every later request of the page
carries it. Then each page is opened, waited on until its text shows the expected strings (the dashboard is a
React app that fills in from API calls), and saved as a PNG screenshot plus the rendered DOM (.html, what
`chromium --dump-dom` prints).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # runs as root in containers; the profile is throw-away and only 127.0.0.1 is visited
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # Chromium picks a free port and writes it to <profile>/DevToolsActivePort
    "--window-size=1440,1000",
]


@dataclass
class Page:
    """A dashboard page to capture: its name (file stem), route (after the dashboard URL) and the strings its
    rendered text must show."""

    name: str
    route: str
    must_show: list[str] = field(default_factory=list)


def find_chromium() -> str | None:
    """The Chromium binary on PATH (Debian: chromium), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Cdp:
    """A minimal DevTools-protocol client on one page target: send a command, wait for its reply."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, timeout: float = 60.0, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send_str(json.dumps({"id": my_id, "method": method, "params": params}))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = await self.ws.receive(timeout=max(0.1, end - time.monotonic()))
            if msg.type.name != "TEXT":
                raise RuntimeError(f"DevTools connection closed during {method}")
            data = json.loads(msg.data)
            if data.get("id") == my_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
        raise TimeoutError(method)

    async def text(self) -> str:
        res = await self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
        return res.get("result", {}).get("value", "") or ""


async def _drive(
    port: int, dashboard: str, token: str, pages: list[Page], out_dir: Path, wait_s: float
) -> list[dict]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        target = next(t for t in targets if t.get("type") == "page")
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = _Cdp(ws)
            await cdp.call("Page.enable")
            await cdp.call("Runtime.enable")
            # Log in as the dashboard's token dialog does (the token never appears in a URL or a file).
            await cdp.call("Page.navigate", url=f"{dashboard}/api/authentication_mode")
            await asyncio.sleep(1.0)
            login = await cdp.call(
                "Runtime.evaluate",
                expression=(
                    "fetch('/api/authenticate', {method: 'POST', headers: {Authorization: 'Bearer ' + "
                    f"{json.dumps(token)}}}}}).then(r => r.status)"
                ),
                awaitPromise=True,
            )
            status = login.get("result", {}).get("value")
            if status != 200:
                raise RuntimeError(f"dashboard login returned HTTP {status}")
            shots = []
            for page in pages:
                await cdp.call("Page.navigate", url=f"{dashboard}/{page.route}")
                end = time.monotonic() + wait_s
                text = ""
                while time.monotonic() < end:
                    text = await cdp.text()
                    if all(s in text for s in page.must_show):
                        break
                    await asyncio.sleep(1.0)
                await asyncio.sleep(1.5)  # let charts and tables finish their last render
                text = await cdp.text()
                png = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
                dom = await cdp.call("Runtime.evaluate", expression="document.documentElement.outerHTML")
                png_path, html_path = out_dir / f"{page.name}.png", out_dir / f"{page.name}.html"
                png_path.write_bytes(base64.b64decode(png["data"]))
                html_path.write_text(dom.get("result", {}).get("value", ""))
                missing = [s for s in page.must_show if s not in text]
                shots.append(
                    {
                        "page": page.name,
                        "url": f"{dashboard}/{page.route}",
                        "png": str(png_path),
                        "html": str(html_path),
                        "shows": {s: s in text for s in page.must_show},
                        "ok": not missing,
                    }
                )
                logger.info(
                    "dashboard %s: %s%s", page.name, png_path, f" (missing {missing})" if missing else ""
                )
            return shots


def shoot(
    dashboard: str,
    token: str,
    pages: list[Page],
    out_dir: Path,
    binary: str | None = None,
    wait_s: float = 60.0,
) -> list[dict]:
    """Open each page of the dashboard in headless Chromium (logged in with `token`), save `<name>.png` and
    `<name>.html` under `out_dir`; returns one record per page: {page, url, png, html, shows: {string: found},
    ok}. RuntimeError when Chromium is missing or does not start."""
    binary = binary or find_chromium()
    if not binary:
        raise RuntimeError("no chromium on PATH (make setup-browser installs the Debian package)")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Chromium's helpers (zygote, renderer, crashpad) outlive the browser process by a moment and keep writing
    # into the profile: run it in its own session, end the whole group, and never let the profile's removal
    # throw away pages already saved (CI: "[Errno 39] Directory not empty: 'Default'" lost the jobs page).
    with tempfile.TemporaryDirectory(prefix="lcx-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            end = time.monotonic() + 90
            while not (port_file.is_file() and port_file.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"chromium did not start (exit status {proc.poll()})")
                time.sleep(0.3)
            port = int(port_file.read_text().split()[0])
            return asyncio.run(_drive(port, dashboard, token, pages, out_dir, wait_s))
        finally:
            _end_group(proc)


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM the browser's process group (SIGKILL after 15 s), then SIGKILL any helper still in it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=15)
            break
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # helpers outlive the browser by a moment
    except ProcessLookupError:
        pass
