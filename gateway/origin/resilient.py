"""Protection around any origin: bounded retries, a circuit breaker, a fetch cap.

- Retries: only failures a retry may cure (5xx, connection lost), at most
  ``retries`` more times, with exponential backoff and full jitter so that many
  replicas do not retry in step. Timeouts are not retried: they already used
  the request's time budget.
- Circuit breaker: after ``threshold`` consecutive availability failures the
  origin is not asked for ``reset_after`` seconds (requests fail fast, or are
  answered stale by the service); then one trial request is let through
  (half-open): success closes the circuit, failure opens it again.
- Fetch cap: at most ``max_concurrent`` origin fetches at once per process; the
  rest queue for up to ``queue_timeout`` seconds, then get 503 (Busy).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from gateway.errors import Busy, NotFound, OriginError, OriginTimeout, OriginUnavailable
from gateway.origin import Fetched, NotModified, ObjectInfo, Origin, OriginWrapper

log = logging.getLogger(__name__)


class CircuitBreaker:
    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

    def __init__(self, threshold: int, reset_after: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self._clock = clock
        self.failures = 0
        self.opened_at = 0.0
        self.state = self.CLOSED
        self.trips = 0

    def allow(self) -> bool:
        """Whether a request may go to the origin now."""
        if self.state == self.CLOSED:
            return True
        if self.state == self.OPEN and self._clock() - self.opened_at >= self.reset_after:
            self.state = self.HALF_OPEN  # let exactly this one through as a trial
            return True
        return False

    def success(self) -> None:
        if self.state != self.CLOSED:
            log.info("origin answered again; circuit closed")
        self.state = self.CLOSED
        self.failures = 0

    def failure(self) -> None:
        self.failures += 1
        if self.state == self.HALF_OPEN or (self.state == self.CLOSED
                                            and self.failures >= self.threshold):
            if self.state == self.CLOSED:
                log.warning("origin failed %d times in a row; circuit open for %.0fs",
                            self.failures, self.reset_after)
            self.state = self.OPEN
            self.opened_at = self._clock()
            self.trips += 1


class ResilientOrigin(OriginWrapper):
    def __init__(self, inner: Origin, *, retries: int, backoff: float,
                 breaker: CircuitBreaker, max_concurrent: int, queue_timeout: float) -> None:
        super().__init__(inner)
        self.retries = retries
        self.backoff = backoff
        self.breaker = breaker
        self.queue_timeout = queue_timeout
        self._slots = asyncio.Semaphore(max_concurrent)
        self.retried = 0

    async def fetch(self, image_id: str, if_none_match: str | None = None
                    ) -> Fetched | NotModified:
        if not self.breaker.allow():
            raise OriginUnavailable("circuit open: origin failing, not asked")
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_timeout)
        except TimeoutError:
            raise Busy("too many origin fetches in progress") from None
        try:
            return await self._fetch_with_retries(image_id, if_none_match)
        finally:
            self._slots.release()

    async def _fetch_with_retries(self, image_id: str, if_none_match: str | None
                                  ) -> Fetched | NotModified:
        attempt = 0
        while True:
            try:
                result = await self.inner.fetch(image_id, if_none_match)
            except NotFound:
                self.breaker.success()  # the origin answered; the object is missing
                raise
            except OriginTimeout:
                self.breaker.failure()
                raise
            except OriginError as exc:
                if not exc.retryable:
                    self.breaker.success()  # an answer we refuse, not an outage
                    raise
                if attempt >= self.retries or not self.breaker.allow():
                    self.breaker.failure()
                    raise
                attempt += 1
                self.retried += 1
                await asyncio.sleep(random.uniform(0, self.backoff * 2 ** (attempt - 1)))
                continue
            self.breaker.success()
            return result

    async def probe(self, image_id: str) -> ObjectInfo:
        if not self.breaker.allow():
            raise OriginUnavailable("circuit open: origin failing, not asked")
        return await self.inner.probe(image_id)
