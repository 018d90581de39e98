"""Per-client rate limiting: a token bucket per client address, 429 + Retry-After.

The client address comes from X-Forwarded-For only when the peer is a trusted
proxy (see clientaddr.py); otherwise every client behind one untrusted proxy
would share one bucket, or any client could pick its own bucket.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.web.clientaddr import ClientAddress
from gateway.web.middlewares import error_response


class TokenBuckets:
    """Buckets for at most ``max_clients`` addresses (least recently seen dropped),
    so a flood of distinct addresses cannot grow memory without bound."""

    def __init__(self, rate: float, burst: float, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """0 when the request may go; else seconds until a token is available."""
        now = self._clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def rate_limit(buckets: TokenBuckets, addresses: ClientAddress,
               exempt: tuple[str, ...] = ("/healthz", "/livez", "/readyz", "/metrics"),
               ) -> Middleware:
    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in exempt:
            return await handler(request)
        client = addresses.of(request.remote, request.headers.get("X-Forwarded-For"))
        wait = buckets.take(client)
        if wait > 0:
            response = error_response(429, "too many requests", request)
            response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return response
        return await handler(request)

    return limit
