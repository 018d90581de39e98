"""An origin that times every fetch, by result, for the origin latency histogram."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.errors import NotFound, OriginTimeout
from gateway.origin import Fetched, NotModified, Origin, OriginWrapper

#: (result label, seconds): ok, not_modified, not_found, error, timeout.
OnFetch = Callable[[str, float], None]


class TimedOrigin(OriginWrapper):
    def __init__(self, inner: Origin, on_fetch: OnFetch) -> None:
        super().__init__(inner)
        self.on_fetch = on_fetch

    async def fetch(self, image_id: str, if_none_match: str | None = None
                    ) -> Fetched | NotModified:
        start = time.perf_counter()
        result = "error"
        try:
            fetched = await self.inner.fetch(image_id, if_none_match)
            result = "not_modified" if isinstance(fetched, NotModified) else "ok"
            return fetched
        except NotFound:
            result = "not_found"
            raise
        except OriginTimeout:
            result = "timeout"
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception):  # cancelled: no answer to time
                result = ""
            raise
        finally:
            if result:
                self.on_fetch(result, time.perf_counter() - start)
