"""GET /admin/dashboard: one self-contained HTML page (inline CSS and JS).

The page holds no data, so the admin guard lets it through without a
token; everything it shows comes from /admin/stats with the token the operator
types once (kept in sessionStorage: gone when the tab closes). Its Content
Security Policy allows exactly its own inline script and style (by hash) and
requests to this origin, nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

from aiohttp import web

from gateway.web.edge import Routes

PAGE = Path(__file__).parent / "static" / "dashboard.html"


def _hash(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


@cache
def _page() -> tuple[bytes, str]:
    html = PAGE.read_text()
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, flags=re.S)
    policy = "; ".join([
        "default-src 'none'",
        "script-src " + " ".join(_hash(s) for s in scripts),
        "style-src " + " ".join(_hash(s) for s in styles),
        "connect-src 'self'",
        "img-src 'self' data: blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])
    return html.encode(), policy


async def get_dashboard(request: web.Request) -> web.Response:
    body, policy = _page()
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers={
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    })


def add_routes(routes: Routes) -> None:
    routes.get("/dashboard", get_dashboard)
