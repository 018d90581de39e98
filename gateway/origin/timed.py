"""An origin that times every fetch and reports it, by result, to a callback.

A callback (not the metrics recorder itself) keeps origin/ free of observe/:
whoever wraps the origin decides where the figures go.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.errors import NotFound, OriginTimeout
from gateway.origin import Fetched, NotModified, Origin, OriginWrapper

#: ``on_fetch(result, seconds)``; result is ok, not_modified, not_found, timeout or error.
OnFetch = Callable[[str, float], None]


def _failure(exc: Exception) -> str:
    if isinstance(exc, NotFound):
        return "not_found"
    if isinstance(exc, OriginTimeout):
        return "timeout"
    return "error"


class TimedOrigin(OriginWrapper):
    def __init__(self, inner: Origin, on_fetch: OnFetch) -> None:
        super().__init__(inner)
        self.on_fetch = on_fetch

    async def fetch(self, image_id: str, if_none_match: str | None = None
                    ) -> Fetched | NotModified:
        start = time.perf_counter()
        try:
            fetched = await self.inner.fetch(image_id, if_none_match)
        except Exception as exc:  # not a cancellation: nobody waits for that answer
            self.on_fetch(_failure(exc), time.perf_counter() - start)
            raise
        result = "not_modified" if isinstance(fetched, NotModified) else "ok"
        self.on_fetch(result, time.perf_counter() - start)
        return fetched
