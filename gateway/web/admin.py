"""The admin API under /admin/: bearer token, compared in constant time.

Mounted only when ``admin.token`` is set, so a deployment without a token has
no admin surface at all (404, not 401).
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.web.middlewares import error_response


def bearer_auth(token: str) -> Middleware:
    expected = token.encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "GET" and request.path.rstrip("/") == "/admin/dashboard":
            return await handler(request)  # the page itself holds no data; its calls do
        header = request.headers.get("Authorization", "")
        scheme, _, supplied = header.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            supplied.strip().encode(), expected)
        if not ok:
            response = error_response(401, "unauthorized")
            response.headers["WWW-Authenticate"] = 'Bearer realm="image-gateway admin"'
            return response
        return await handler(request)

    return auth
