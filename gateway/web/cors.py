"""CORS and client-hint headers of the public image routes (``http.cors_origins``,
``variants.client_hints``); /admin and the rest get none.

Everything is decided once per app: with ``["*"]`` (the default) the headers do not
depend on the request at all, so they sit in the header set ``web/responses.py``
builds once per picture and cost nothing per request. With a list of origins the
matching ``Origin`` is echoed (one header set on the response) and every answer
says ``Vary: Origin``. ``Access-Control-Allow-Credentials`` is never sent: a
picture needs no cookie, and ``*`` with credentials is what browsers refuse.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from gateway.config import Config

#: What a cross-origin script may read besides the CORS-safelisted headers.
EXPOSED: Final = "ETag, X-Cache"
#: Request headers a preflight may announce: the ones the gateway reads.
ALLOWED_HEADERS: Final = ("Accept, If-None-Match, If-Modified-Since, Cache-Control, "
                          "Sec-CH-DPR, Sec-CH-Width")
PREFLIGHT_MAX_AGE: Final = "86400"
ACCEPT_CH: Final = "Sec-CH-DPR, Sec-CH-Width"


class ImageHeaders:
    """The headers every image answer adds, per app. Identity-hashed on purpose: it
    is part of the key of the per-picture header cache, and one app has one."""

    __slots__ = ("_cors", "_origins", "echoes", "fixed", "vary")

    def __init__(self, origins: tuple[str, ...], client_hints: bool) -> None:
        fixed: dict[str, str] = {}
        self._cors = bool(origins)
        #: Listed origins, echoed when one asks; empty with "*" (nothing to echo).
        self._origins = frozenset(o for o in origins if o != "*")
        if origins:
            fixed["Access-Control-Expose-Headers"] = EXPOSED
        if "*" in origins:
            fixed["Access-Control-Allow-Origin"] = "*"
            fixed["Timing-Allow-Origin"] = "*"
        if client_hints:
            fixed["Accept-CH"] = ACCEPT_CH
        self.fixed: tuple[tuple[str, str], ...] = tuple(fixed.items())
        self.vary: str | None = "Origin" if self._origins else None
        #: Whether the answer depends on the request's Origin (a list of origins).
        self.echoes = bool(self._origins)

    @classmethod
    def of(cls, config: Config) -> ImageHeaders:
        return cls(config.http.cors_origins, config.variants.client_hints)

    def allowed(self, request: web.BaseRequest) -> str | None:
        """The request's Origin when it is one of the listed ones."""
        origin = request.headers.get("Origin")
        return origin if origin is not None and origin in self._origins else None

    def apply(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """All of it, on an answer not built from the per-picture set (errors, JSON)."""
        headers = response.headers
        for name, value in self.fixed:
            headers[name] = value
        if self.vary:
            headers.add("Vary", self.vary)
        if (origin := self.allowed(request)) is not None:
            headers["Access-Control-Allow-Origin"] = headers["Timing-Allow-Origin"] = origin

    def preflight(self, request: web.BaseRequest) -> web.Response:
        """OPTIONS: 204 from these settings alone; no cache, origin or Redis is asked."""
        response = web.Response(status=204, headers={"Allow": "GET, HEAD, OPTIONS"})
        self.apply(request, response)
        if self._cors:
            response.headers["Access-Control-Allow-Methods"] = "GET, HEAD"
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        return response
