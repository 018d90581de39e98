"""GET /openapi.json: the HTTP contract as OpenAPI 3.1, kept in gateway/web/openapi.json.

The document is written by hand and checked against the live router
(tests/unit/web/test_openapi.py: every route documented, every documented path
routed) and against a live gateway by schemathesis (tests/integration/
test_openapi_fuzz.py). A path item's ``x-aiohttp-route`` names the router pattern
that serves it where the two differ: one catch-all route serves the three
/images/ paths (web/paths.py decides on the raw path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.web.edge import Routes

DOCUMENT = Path(__file__).with_name("openapi.json")
ADMIN_PREFIX = "/admin/"


def load(path: Path = DOCUMENT) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def public_part(document: dict[str, Any]) -> dict[str, Any]:
    """The document without the admin API (a gateway without ``admin.token`` has none)."""
    paths = {p: item for p, item in document["paths"].items()
             if not p.startswith(ADMIN_PREFIX)}
    components = dict(document["components"])
    components.pop("securitySchemes", None)
    return {**document, "paths": paths, "components": components}


def add_route(routes: Routes, *, admin: bool) -> None:
    """Serve the document (built once: it never changes while the process runs)."""
    document = load()
    body = json.dumps(document if admin else public_part(document)).encode()

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    routes.get("/openapi.json", openapi, allow_head=False)
