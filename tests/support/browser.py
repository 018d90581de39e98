"""Real headless Chromium (Debian's ``chromium``), driven over the DevTools protocol.

    async with Browser(tmp_path) as browser:       # starts chromium, attaches to its tab
        await browser.goto("http://127.0.0.1:8080/admin/dashboard")
        await browser.wait_for("document.title !== ''")
        await browser.type_into("#token", "secret")  # focus + real key input
        await browser.click("#login-button")         # real mouse events at the centre
        await browser.screenshot(tmp_path / "page.png")
        browser.problems()                           # console errors, exceptions, CSP

No Playwright: its own browser download cannot happen here, and the protocol
needs only a WebSocket (aiohttp). The profile lives in a temp folder; the
browser is closed through the protocol (so it reaps its helpers), then its
process group is killed if anything is left.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
    "--hide-scrollbars", "--mute-audio", "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def chromium_executable() -> str:
    """The browser binary itself (Debian's /usr/bin/chromium is a shell wrapper that
    does not exec, so its pid would not be the browser's)."""
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("chromium is not installed: run `make system-deps` "
                       "(tools/ensure-system-deps.sh chromium)")


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, log_dir: Path, *, width: int = 1360, height: int = 1000) -> None:
        self.log_dir = Path(log_dir)
        self.width = width
        self.height = height
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        self.console: list[str] = []
        self.errors: list[str] = []

    # -- life cycle -----------------------------------------------------------------

    async def start(self) -> Browser:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "chromium.log", "ab") as log:
            self._proc = subprocess.Popen(
                [chromium_executable(), *FLAGS, f"--user-data-dir={self.profile}",
                 f"--window-size={self.width},{self.height}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self._proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self._proc.returncode}; see "
                                   f"{self.log_dir / 'chromium.log'}")
            if time.monotonic() > deadline:
                raise BrowserError("chromium did not open its DevTools port in 20 s")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Log.enable")
        await self.send("Emulation.setDeviceMetricsOverride", width=self.width,
                        height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send("Browser.close"), 5)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self._proc.wait, 10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)  # its own session: helpers too
            await asyncio.to_thread(self._proc.wait)
        shutil.rmtree(self.profile, ignore_errors=True)

    async def __aenter__(self) -> Browser:
        try:
            return await self.start()
        except BaseException:
            await self.close()
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # -- the protocol ---------------------------------------------------------------

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            self._event(data.get("method", ""), data.get("params", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError("DevTools connection closed"))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", "")))
                            for a in params.get("args", []))
            self.console.append(f"{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                self.errors.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exc = details.get("exception", {})
            self.errors.append(f"exception: {exc.get('description') or details.get('text')}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                self.errors.append(f"log ({entry.get('source')}): {entry.get('text')}")
        for name, future in list(self._waiters):
            if name == method and not future.done():
                future.set_result(params)
                self._waiters.remove((name, future))

    async def send(self, method: str, *, session: str | None = None,
                   **params: Any) -> dict[str, Any]:
        """One protocol call; ``session``: to a target attached with flatten=True
        (a service worker: see ``worker_sessions``)."""
        assert self._ws is not None
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send_str(json.dumps(message))
        reply = await asyncio.wait_for(future, 20)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def _expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, future))
        return future

    async def worker_sessions(self) -> list[str]:
        """Sessions of the service workers running now. Network emulation set on the
        page does not reach a worker's own fetches: send it to these too."""
        targets = (await self.send("Target.getTargets"))["targetInfos"]
        sessions = []
        for target in targets:
            if target.get("type") == "service_worker":
                attached = await self.send("Target.attachToTarget",
                                           targetId=target["targetId"], flatten=True)
                sessions.append(attached["sessionId"])
        return sessions

    # -- what a person does ---------------------------------------------------------

    async def goto(self, url: str) -> None:
        loaded = self._expect("Page.loadEventFired")
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {result['errorText']}")
        await asyncio.wait_for(loaded, 15)

    async def reload(self, ignore_cache: bool = True) -> None:
        """Shift+reload by default; ``ignore_cache=False`` is a plain reload, which
        (unlike Shift+reload) still goes through the page's service worker."""
        loaded = self._expect("Page.loadEventFired")
        await self.send("Page.reload", ignoreCache=ignore_cache)
        await asyncio.wait_for(loaded, 15)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        """Until the JS expression is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true within {timeout} s: {expression}")
            await asyncio.sleep(0.1)

    async def text(self, selector: str) -> str:
        return str(await self.evaluate(
            f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || ''"))

    async def click(self, selector: str, timeout: float = 10.0) -> None:
        """Real mouse events at the centre of the element (scrolled into view).

        The page keeps rendering after load (the dashboard fills its panels when the
        first stats arrive), so the centre is taken only once the element has stayed
        in place for two animation frames and is what the mouse would hit there: a
        click computed before a layout shift lands on another element.
        """
        sel = json.dumps(selector)
        box = await self.wait_for(f"""new Promise((done) => {{
            const el = document.querySelector({sel});
            if (!el) return done(null);
            el.scrollIntoView({{block: "center"}});
            const at = () => {{ const r = el.getBoundingClientRect();
                               return [r.left + r.width / 2, r.top + r.height / 2,
                                       r.width, r.height]; }};
            const first = at();
            requestAnimationFrame(() => requestAnimationFrame(() => {{
                const now = at();
                const hit = document.elementFromPoint(now[0], now[1]);
                const still = now.every((v, i) => Math.abs(v - first[i]) < 0.5);
                done(still && now[2] > 0 && now[3] > 0 && hit && el.contains(hit)
                     ? now : null);
            }}));
        }})""", timeout)
        x, y = box[0], box[1]
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y,
                            button="left", clickCount=1)

    async def type_into(self, selector: str, text: str) -> None:
        await self.click(selector)
        sel = json.dumps(selector)
        await self.wait_for(f"document.activeElement === document.querySelector({sel})")
        await self.send("Input.insertText", text=text)
        typed = await self.evaluate(f"document.querySelector({sel}).value")
        if typed != text:
            raise BrowserError(f"typed {text!r} into {selector}, it holds {typed!r}")

    async def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = await self.send("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": self.width,
                              "height": max(self.height, int(size["height"])), "scale": 1}
            params["captureBeyondViewport"] = True
        shot = await self.send("Page.captureScreenshot", **params)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and errors the browser logged (CSP...)."""
        return list(self.errors)
