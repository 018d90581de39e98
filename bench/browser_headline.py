"""The seed's headline in a real browser: a friend list of 50 avatars in headless
Chromium (tests/support/browser.py), each way of serving it timed several times.

    (a) old flow        the page calls GET /images/{id}/url (through the page's own
                        nginx, as an app's API would be), then loads each presigned
                        URL from S3 (moto behind the counting proxy): cold (every
                        picture purged first: URL and metadata unknown) and warm
    (b) gateway cold    every picture purged first: each is fetched from S3
    (c) gateway warm    memory hits, the browser's cache emptied first
    (d) reload          (c) reloaded as a person would (Page.reload, cache kept)
    (e) after max-age   the page again once max-age has passed: 50 conditional GETs
    (f) nginx static    the same pictures as static files: the browser's floor

Timed from navigation start until the last picture has loaded *and* decoded
(``img.decode()``), by the page itself (bench/friends.html). The DevTools Network
domain stays off (it slows page loads by about a third); requests are counted where
they arrive instead: the gateway's access log (its image requests), the page nginx's
access log (the static pictures and the old API), and the counting proxy in front of
S3 (the browser's downloads of presigned URLs, by User-Agent, and the gateway's own
origin requests). The gateway answers with ``Cache-Control: max-age=MAX_AGE`` in this
phase (nginx too), so (e) need not wait the real 45 minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bench import anchors, stack
from bench.images import Picture
from bench.results import IMAGES_DIR, RUN_DIR, BrowserScenario, Headline, PageLoad
from bench.settings import Settings, env_int
from tests.support import free_port
from tests.support.browser import Browser, chromium_executable
from tests.support.proxy import FaultProxy

PICTURES = 50
MAX_AGE = 4  # seconds: (e) waits this long (plus one) after (c)/(d)
TOKEN = "bench-browser-admin-token-0123456789"
PAGE = Path(__file__).with_name("friends.html")

SCENARIOS = {
    "old_cold": "(a) old flow: /url calls, then presigned S3 downloads; cold",
    "old_warm": "(a) old flow, gateway warm (URLs and metadata kept), empty browser cache",
    "cold": "(b) gateway cold (every picture from S3)",
    "warm": "(c) gateway warm, empty browser cache",
    "reload": "(d) gateway: reload",
    "revalidate": "(e) gateway: after max-age (conditional GETs)",
    "static": "(f) nginx static files, empty browser cache (the floor)",
}

#: A gateway of the run's settings with these extra GATEWAY_* variables.
StartGateway = Callable[[contextlib.ExitStack, str, dict[str, str]], stack.Gateway]


@dataclass
class _Marks:
    gateway: int
    nginx: int
    proxy: int


class Counted:
    """Requests that reached each server since a mark, from their own records."""

    def __init__(self, gateway_log: Path, nginx_log: Path, proxy: FaultProxy) -> None:
        self.gateway_log = gateway_log
        self.nginx_log = nginx_log
        self.proxy = proxy

    def mark(self) -> _Marks:
        return _Marks(_size(self.gateway_log), _size(self.nginx_log),
                      len(self.proxy.requests()))

    def since(self, mark: _Marks, layers: dict[str, int]) -> tuple[int, int, int, int]:
        """(picture requests, old-API calls, conditional/304, gateway origin GETs); the
        gateway's X-Cache answers to the browser are added up in ``layers``."""
        images = api = not_modified = origin = 0
        for line in _lines_from(self.gateway_log, mark.gateway):
            record = _json(line)
            path = str(record.get("path", ""))
            if not path.startswith("/images/") or "Chrome" not in str(record.get("ua", "")):
                continue  # the bench's own purges; /url calls are counted at nginx
            if path.endswith("/url"):
                continue
            images += 1
            not_modified += record.get("status") == 304
            layer = str(record.get("layer", "-"))
            layers[layer] = layers.get(layer, 0) + 1
        for line in _lines_from(self.nginx_log, mark.nginx):
            status, _, uri = line.partition(" ")
            if uri.startswith("/api/"):
                api += 1
            elif uri.startswith("/images/"):
                images += 1
                not_modified += status == "304"
        for seen in self.proxy.requests()[mark.proxy:]:
            if "Chrome" in (seen.header("User-Agent") or ""):
                images += 1
                not_modified += bool(seen.header("If-None-Match")
                                     or seen.header("If-Modified-Since"))
            elif seen.method == "GET":
                origin += 1
        return images, api, not_modified, origin


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _lines_from(path: Path, offset: int) -> list[str]:
    if not path.exists():
        return []
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace").splitlines()


def _json(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def chromium_version() -> str:
    try:
        proc = subprocess.run([chromium_executable(), "--version"], capture_output=True,
                              text=True, timeout=20, check=False)
    except (OSError, RuntimeError):
        return "?"
    return proc.stdout.strip() or "?"


class Driver:
    def __init__(self, browser: Browser, counted: Counted, gateway_url: str, page_url: str,
                 ids: Sequence[str]) -> None:
        self.browser = browser
        self.counted = counted
        self.gateway_url = gateway_url
        self.page_url = page_url
        self.ids = list(ids)

    def page(self, mode: str, base: str) -> str:
        query = urlencode({"mode": mode, "base": base, "ids": ",".join(self.ids)})
        return f"{self.page_url}?{query}"

    async def purge_all(self) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http:
            for image_id in self.ids:
                async with http.delete(f"{self.gateway_url}/admin/images/{image_id}",
                                       headers=headers) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"purge of {image_id}: {resp.status}")

    async def warm_workers(self, rounds: int = 6) -> None:
        """Each worker has its own memory: after (b) a picture is in the memory of the one
        worker that fetched it. A gateway that has served a while holds it in every
        worker; new connections (SO_REUSEPORT spreads them) get there."""
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(rounds):
                for image_id in self.ids:
                    async with http.get(f"{self.gateway_url}/images/{image_id}") as resp:
                        await resp.read()

    async def empty_cache(self) -> None:
        await self.browser.send("Network.clearBrowserCache")

    async def load(self, url: str | None) -> PageLoad:
        """Navigate to ``url`` (None: reload, cache kept) and wait for the page's figure."""
        await self.browser.evaluate("delete window.friendsDone")
        mark = self.counted.mark()
        if url is None:
            await self.browser.reload(ignore_cache=False)
        else:
            await self.browser.goto(url)
        done = await self.browser.wait_for("window.friendsDone", timeout=60)
        await asyncio.sleep(0.2)  # the last access-log lines reach their files
        layers: dict[str, int] = {}
        images, api, not_modified, origin = self.counted.since(mark, layers)
        return PageLoad(ms=float(done["ms"]), failed=int(done["failed"]), image_requests=images,
                        api_calls=api, not_modified=not_modified, origin_gets=origin,
                        pictures=len(self.ids), layers=layers)

    async def one_round(self, static_url: str, api_url: str) -> dict[str, PageLoad]:
        out: dict[str, PageLoad] = {}
        gateway_page = self.page("images", self.gateway_url)
        await self.purge_all()
        await self.empty_cache()
        out["cold"] = await self.load(gateway_page)
        await self.warm_workers()
        await self.empty_cache()
        out["warm"] = await self.load(gateway_page)
        out["reload"] = await self.load(None)
        await asyncio.sleep(MAX_AGE + 1)
        out["revalidate"] = await self.load(gateway_page)
        await self.empty_cache()
        out["static"] = await self.load(self.page("images", static_url))
        await self.purge_all()
        await self.empty_cache()
        out["old_cold"] = await self.load(self.page("old", api_url))
        await self.empty_cache()
        out["old_warm"] = await self.load(self.page("old", api_url))
        return out


def run_headline(phase: contextlib.ExitStack, say: Callable[[str], None], settings: Settings,
                 pictures: Sequence[Picture], proxy: FaultProxy,
                 start_gateway: StartGateway) -> Headline:
    runs = max(1, env_int("BENCH_BROWSER_RUNS", 2 if settings.quick else 5))
    ids = [p.image_id for p in pictures[:PICTURES]]
    gateway = start_gateway(phase, "gateway-browser", {
        "GATEWAY_ADMIN_TOKEN": TOKEN,
        "GATEWAY_HTTP_CACHE_CONTROL": f"max-age={MAX_AGE}",
        "GATEWAY_SERVER_ACCESS_LOG": "true",
        "GATEWAY_SERVER_ACCESS_LOG_FORMAT": "json",
    })
    work = RUN_DIR / "browser"
    pages = work / "pages"
    pages.mkdir(parents=True, exist_ok=True)
    shutil.copy(PAGE, pages / PAGE.name)
    nginx = stack.start_nginx(phase, anchors.browser_nginx(
        work / "nginx", port=free_port(), pages=pages, root=IMAGES_DIR,
        gateway_port=gateway.port, max_age=MAX_AGE))
    headline = Headline(pictures=len(ids), runs=runs, max_age=MAX_AGE,
                        chromium=chromium_version(),
                        scenarios={k: BrowserScenario(k, t) for k, t in SCENARIOS.items()})
    counted = Counted(gateway.process.stdout_path, work / "nginx" / "access.log", proxy)
    say(f"browser headline: {len(ids)} avatars in headless Chromium, {runs} rounds of "
        f"(a)-(f); max-age {MAX_AGE} s in this phase")

    async def drive() -> None:
        async with Browser(work / "chromium") as browser:
            driver = Driver(browser, counted, gateway.url, f"{nginx.url}/pages/{PAGE.name}",
                            ids)
            for number in range(runs):
                loads = await driver.one_round(nginx.url, f"{nginx.url}/api")
                for key, load in loads.items():
                    headline.scenarios[key].loads.append(load)
                say(f"  round {number + 1}: " + ", ".join(
                    f"{key} {load.ms:.0f} ms" for key, load in loads.items()))
            problems = browser.problems()
            if problems:
                say(f"  browser reported: {problems[:5]}")

    asyncio.run(drive())
    for scenario in headline.scenarios.values():
        say(f"  {scenario.title}: median {scenario.median('ms'):.0f} ms, requests "
            f"{scenario.median('requests'):.0f}, from the browser cache "
            f"{scenario.median('from_cache'):.0f}, origin GETs "
            f"{scenario.median('origin_gets'):.0f}")
    return headline
