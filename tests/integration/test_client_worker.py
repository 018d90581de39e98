"""The browser layers in real headless Chromium: the service worker of /client/sw.js
(offline, purge, max_entries), and CORS from a second origin.

The app page is served by the test on the gateway's own origin (as nginx would serve
the app and the gateway on one), which a service worker of scope "/" needs. Requests
that reach the gateway are counted on the server (on_response_prepare), not only in
DevTools: "offline" means none arrives.
"""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from gateway.web.app import create_app
from tests.support.browser import Browser

TOKEN = "worker-test-token-0123456789"
RED, BLUE = (220, 20, 20), (20, 20, 220)

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>avatars</title></head>
<body><div id="list"></div><script>
// Each view asks with its own cache buster (the gateway ignores it, and so does the
// worker): the same URLs again would be answered by Blink's in-memory image cache
// before the worker, or the network, is asked at all.
const view = Number(localStorage.getItem("view") || 0) + 1;
localStorage.setItem("view", String(view));
for (let i = {first}; i < {last}; i++) {{
  const img = document.createElement("img");
  img.id = "p" + i; img.width = img.height = 32;
  img.src = "/images/p" + i + ".png?view=" + view;
  document.getElementById("list").appendChild(img);
}}
window.controlled = navigator.serviceWorker.register("{worker}", {{scope: "/"}})
  .then(() => navigator.serviceWorker.ready)
  .then(() => new Promise((done) => navigator.serviceWorker.controller ? done(true)
    : navigator.serviceWorker.addEventListener("controllerchange", () => done(true))));
window.swAsk = (type) => new Promise((done) => {{
  const channel = new MessageChannel();
  channel.port1.onmessage = (event) => done(event.data);
  navigator.serviceWorker.controller.postMessage({{type}}, [channel.port2]);
}});
window.loaded = () => Array.from(document.images).every((i) => i.complete);
window.rendered = () => Array.from(document.images).filter((i) => i.naturalWidth > 0).length;
window.colour = (img) => {{
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext("2d"); g.drawImage(img, 0, 0);
  return Array.from(g.getImageData(0, 0, 1, 1).data.slice(0, 3));
}};
</script></body></html>"""


def solid(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, "PNG")
    return out.getvalue()


class Counter:
    """Responses the gateway sent for pictures and the worker's files."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith(("/images/", "/client/")):
            self.paths.append(request.path_qs)


async def _page(request: web.Request) -> web.Response:
    first = int(request.query.get("from", "0"))
    count = int(request.query.get("n", "50"))
    # Cacheable, so a navigation offline finds the page itself in the HTTP cache:
    # the worker answers only for pictures.
    worker = (f"/app-sw.js?page={quote(request.path_qs, safe='')}"
              if request.query.get("worker") == "app" else "/client/sw.js")
    return web.Response(text=PAGE.format(first=first, last=first + count, worker=worker),
                        content_type="text/html", headers={"Cache-Control": "max-age=600"})


#: An app's own service worker: it keeps its page for offline use and imports the
#: gateway's picture logic for the rest (README: "An app that has its own ...").
APP_WORKER = """
importScripts("/client/image-cache.js");
const SHELL = "app-shell-v1";
self.addEventListener("install", (event) => {
  self.skipWaiting();
  event.waitUntil(caches.open(SHELL).then((cache) => cache.add(PAGE_URL)));
});
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (event) => {
  if (event.request.mode === "navigate") {
    event.respondWith(caches.match(event.request, {cacheName: SHELL})
      .then((cached) => cached || fetch(event.request)));
  }
});
"""


async def _app_worker(request: web.Request) -> web.Response:
    page = json.dumps(request.query.get("page", "/"))
    return web.Response(text=f"const PAGE_URL = {page};\n{APP_WORKER}",
                        content_type="text/javascript")


@pytest.fixture
async def site(aiohttp_server: Any, gateway_config: Any, origin_dir: Any,
               make_image: Any) -> Any:
    async def start(**sections: dict[str, Any]) -> tuple[str, Counter]:
        for i in range(60):
            (origin_dir / f"p{i}.png").write_bytes(make_image(seed=i + 1, size=(32, 32)))
        (origin_dir / "p0.png").write_bytes(solid(RED))
        app = await create_app(gateway_config(admin={"token": TOKEN}, **sections))
        app.router.add_get("/app/avatars.html", _page)
        app.router.add_get("/app-sw.js", _app_worker)
        counter = Counter()
        app.on_response_prepare.append(counter)
        server = await aiohttp_server(app)
        return f"http://127.0.0.1:{server.port}", counter

    return start


async def _controlled(browser: Browser, url: str, pictures: int) -> dict[str, Any]:
    """Open the page until the worker controls it and holds ``pictures`` entries."""
    await browser.goto(url)
    await browser.wait_for("window.controlled")
    await _view(browser, url)  # now through the worker
    stats: dict[str, Any] = await browser.wait_for(
        f"window.swAsk('stats').then((s) => s.entries >= {pictures} ? s : null)")
    return stats


async def _view(browser: Browser, url: str) -> None:
    """Open the page anew (a navigation, not a reload: a reload revalidates the page
    itself, which offline only a worker caching pages could answer)."""
    await browser.goto("about:blank")
    await browser.goto(url)
    await browser.wait_for("window.loaded()")


async def _offline(browser: Browser, offline: bool) -> None:
    """DevTools' offline switch, for the page and for the worker (whose fetches the
    page's emulation does not cover)."""
    for session in [None, *await browser.worker_sessions()]:
        await browser.send("Network.enable", session=session)
        await browser.send("Network.emulateNetworkConditions", session=session,
                           offline=offline, latency=0, downloadThroughput=-1,
                           uploadThroughput=-1)


async def test_fifty_avatars_render_offline_without_a_request(site: Any, tmp_path: Any) -> None:
    base, counter = await site()
    page = f"{base}/app/avatars.html?n=50"
    async with Browser(tmp_path / "browser") as browser:
        stats = await _controlled(browser, page, 50)
        assert stats["entries"] == 50
        assert await browser.evaluate("window.rendered()") == 50
        before = len(counter.paths)

        await _offline(browser, True)
        await _view(browser, page)
        assert await browser.evaluate("window.rendered()") == 50
        stats = await browser.evaluate("window.swAsk('stats')")
        assert stats["hits"] >= 50
        # Not one request reached the gateway: the pictures came from the worker's
        # cache, and its background revalidations failed in the browser.
        assert counter.paths[before:] == []

        # A picture it never saw, offline: the fallback picture (cached at install).
        await browser.evaluate("""new Promise((done) => {
            const img = document.createElement("img");
            img.id = "unseen"; img.onload = img.onerror = () => done(true);
            img.src = "/images/p55.png"; document.body.appendChild(img); })""")
        assert await browser.evaluate("document.getElementById('unseen').naturalWidth") > 0
        assert counter.paths[before:] == []
        stats = await browser.evaluate("window.swAsk('stats')")
        assert stats["fallbacks"] == 1
        assert not any("p55" in url for url in stats["urls"])  # the fallback is not kept
        assert not [p for p in browser.problems() if p.startswith("exception")]


async def test_an_apps_own_worker_imports_the_logic_and_reloads_offline(
        site: Any, tmp_path: Any) -> None:
    base, counter = await site()
    page = f"{base}/app/avatars.html?n=10&worker=app"
    async with Browser(tmp_path / "browser") as browser:
        await _controlled(browser, page, 10)
        before = len(counter.paths)
        await _offline(browser, True)
        await browser.reload(ignore_cache=False)  # a real reload: the app worker has the page
        await browser.wait_for("window.loaded()")
        assert await browser.evaluate("window.rendered()") == 10
        assert await browser.evaluate("location.search") == "?n=10&worker=app"
        assert (await browser.evaluate("window.swAsk('stats')"))["hits"] >= 10
        assert counter.paths[before:] == []


async def test_worker_script_and_fallback_are_served_for_it(site: Any) -> None:
    base, _ = await site(client={"max_entries": 7, "max_age": 3600})
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/client/sw.js") as resp:
            worker = await resp.text()
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/javascript")
            assert resp.headers["Service-Worker-Allowed"] == "/"
            assert resp.headers["Cache-Control"] == "max-age=300"
            etag = resp.headers["ETag"]
            assert etag.startswith('"') and not etag.startswith("W/")
        async with http.get(f"{base}/client/sw.js", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
        async with http.get(f"{base}/client/image-cache.js") as resp:
            module = await resp.text()
            assert "Service-Worker-Allowed" not in resp.headers
        async with http.get(f"{base}/client/fallback") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
            assert "X-Cache" not in resp.headers
    settings = json.loads(module.splitlines()[0].split("Object.assign(")[1].split(", self")[0])
    assert settings == {"maxEntries": 7, "maxAge": 3600}
    assert worker.startswith(module) and "skipWaiting" in worker
    assert "skipWaiting" not in module  # an app's own worker keeps its own lifecycle


async def test_a_purged_picture_is_replaced_on_the_next_online_view(
        site: Any, tmp_path: Any, origin_dir: Any, make_image: Any) -> None:
    base, counter = await site()
    page = f"{base}/app/avatars.html?n=3"
    async with Browser(tmp_path / "browser") as browser, aiohttp.ClientSession() as http:
        await _controlled(browser, page, 3)
        assert await browser.evaluate("window.colour(document.getElementById('p0'))") == \
            list(RED)

        (origin_dir / "p0.png").write_bytes(solid(BLUE))
        async with http.delete(f"{base}/admin/images/p0.png",
                               headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200
        # This view answers from the worker's cache at once and revalidates behind it:
        # If-None-Match with the old ETag, the new bytes come back and are stored.
        await _view(browser, page)
        await browser.wait_for("window.swAsk('stats').then((s) => s.updated >= 1)")
        assert "/images/p0.png?view=3" in counter.paths
        await _view(browser, page)
        assert await browser.evaluate("window.colour(document.getElementById('p0'))") == \
            list(BLUE)
        stats = await browser.evaluate("window.swAsk('stats')")
        assert stats["updated"] == 1 and stats["revalidated"] >= 2  # p1, p2: 304


async def test_the_oldest_pictures_go_past_max_entries(site: Any, tmp_path: Any) -> None:
    base, _ = await site(client={"max_entries": 5})
    async with Browser(tmp_path / "browser") as browser:
        first = await _controlled(browser, f"{base}/app/avatars.html?n=5", 5)
        stored_first = first["urls"]
        assert len(stored_first) == 5

        await _view(browser, f"{base}/app/avatars.html?from=5&n=3")
        # Stored as each arrives, and trimmed after each store, both in the background:
        # wait until the last of the three is in and the trim behind it has run (a
        # worker that never trims still fails here, by the timeout).
        stats = await browser.wait_for(
            "window.swAsk('stats').then((s) => s.entries === 5 && ['p5', 'p6', 'p7']"
            ".every((p) => s.urls.some((u) => u.endsWith('/' + p + '.png'))) ? s : null)")
        assert stats["entries"] == 5
        assert stats["urls"][:2] == stored_first[3:]  # the two youngest of the first five
        assert sorted(u.rsplit("/", 1)[1] for u in stats["urls"][2:]) == \
            ["p5.png", "p6.png", "p7.png"]

        cleared = await browser.evaluate("window.swAsk('clear')")
        assert cleared["type"] == "image-gateway:cleared"
        assert (await browser.evaluate("window.swAsk('stats')"))["entries"] == 0


async def test_fetch_timing_and_canvas_from_a_second_origin(site: Any, tmp_path: Any) -> None:
    base, _ = await site()
    # localhost and 127.0.0.1 are two origins: the page is on one, the pictures on the other.
    page = base.replace("127.0.0.1", "localhost") + "/app/avatars.html?n=0"
    picture = f"{base}/images/p0.png"
    async with Browser(tmp_path / "browser") as browser:
        await browser.goto(page)
        result = await browser.evaluate(f"""(async () => {{
            const url = {json.dumps(picture + "?fetched=1")};
            const response = await fetch(url);
            const out = {{ok: response.ok, etag: response.headers.get("ETag"),
                          xcache: response.headers.get("X-Cache"),
                          size: (await response.blob()).size}};
            const timing = performance.getEntriesByName(url)[0];
            out.responseStart = timing.responseStart;
            out.transferSize = timing.transferSize;
            const img = new Image();
            img.crossOrigin = "anonymous";
            img.src = {json.dumps(picture + "?drawn=1")};
            await img.decode();
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
            const g = canvas.getContext("2d");
            g.drawImage(img, 0, 0);
            out.pixel = Array.from(g.getImageData(0, 0, 1, 1).data.slice(0, 3));
            out.dataUrl = canvas.toDataURL().length;  // throws on a tainted canvas
            return out;
        }})()""")
    assert result["ok"] and result["size"] > 0
    assert result["etag"].startswith('"') and result["xcache"] in ("MISS", "HIT-MEMORY")
    assert result["responseStart"] > 0 and result["transferSize"] > 0
    assert result["pixel"] == list(RED)
    assert result["dataUrl"] > 100
