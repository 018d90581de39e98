"""What the gateway ships to browsers: /client/sw.js, /client/image-cache.js and
/client/fallback (README: "Offline pictures: the service worker").

One source, static/image-cache.js, with the ``[client]`` settings written above it
(so the JavaScript never disagrees with config/gateway.toml); sw.js adds the lines
that make it a worker of its own. Both are built once at start, each with a strong
ETag of its bytes, so a changed setting or release changes the ETag and browsers
pick the new worker up within ``max-age``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Final

from aiohttp import web

from gateway.config import ClientConfig
from gateway.model import Blob
from gateway.web.conditional import none_match
from gateway.web.edge import Routes

SOURCE: Final = Path(__file__).parent / "static" / "image-cache.js"
#: Short: a fixed worker reaches browsers soon (they also re-check sw.js themselves).
SCRIPT_CACHE_CONTROL: Final = "max-age=300"
_WORKER: Final = """
// A worker of its own: take over at once, no reload needed to start caching.
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
"""


class Asset:
    """Bytes served as they are, with headers built once."""

    def __init__(self, body: bytes, content_type: str, cache_control: str,
                 **extra: str) -> None:
        self.body = body
        self.etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        self.headers = {"Content-Type": content_type, "ETag": self.etag,
                        "Cache-Control": cache_control, **extra}

    async def handle(self, request: web.Request) -> web.Response:
        condition = request.headers.get("If-None-Match")
        if condition is not None and none_match(condition, self.etag):
            return web.Response(status=304, headers=self.headers)
        return web.Response(body=self.body, headers=self.headers)


def scripts(config: ClientConfig) -> tuple[Asset, Asset]:
    """(sw.js, image-cache.js) for these settings."""
    settings = json.dumps({"maxEntries": config.max_entries, "maxAge": config.max_age})
    module = (f"self.IMAGE_GATEWAY = Object.assign({settings}, self.IMAGE_GATEWAY || {{}});\n"
              + SOURCE.read_text())
    js = "text/javascript; charset=utf-8"
    return (Asset((module + _WORKER).encode(), js, SCRIPT_CACHE_CONTROL,
                  **{"Service-Worker-Allowed": "/"}),
            Asset(module.encode(), js, SCRIPT_CACHE_CONTROL))


def add_routes(routes: Routes, config: ClientConfig, fallback: Blob | None) -> None:
    worker, module = scripts(config)
    routes.get("/client/sw.js", worker.handle)
    routes.get("/client/image-cache.js", module.handle)
    if fallback is not None:
        # What the worker shows offline for a picture it never saw; not an image
        # answer (no X-Cache, not in the hit rates): it is fetched once, at install.
        picture = Asset(fallback.body, fallback.meta.content_type, "max-age=86400")
        routes.get("/client/fallback", picture.handle)
