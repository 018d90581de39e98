import asyncio

import pytest

from gateway.errors import Busy, NotFound, OriginError, OriginTimeout, OriginUnavailable
from gateway.origin import Fetched
from gateway.origin.resilient import CircuitBreaker, ResilientOrigin
from gateway.web.ratelimit import TokenBuckets
from gateway.web.signing import UrlSigner, parse_keys
from tests.support.fakes import FakeClock

OK = Fetched(b"x", "image/png", 0, None)


class ScriptedOrigin:
    """Answers from a script of results/exceptions; counts calls."""

    kind = "scripted"

    def __init__(self, *script, delay=0.0):
        self.script = list(script)
        self.calls = 0
        self.delay = delay

    async def fetch(self, image_id, if_none_match=None):
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, BaseException):
            raise item
        return item


def resilient(origin, *, retries=2, threshold=3, reset=10.0, clock=None, slots=8,
              queue_timeout=1.0):
    breaker = CircuitBreaker(threshold, reset, clock or FakeClock(1000.0))
    return ResilientOrigin(origin, retries=retries, backoff=0.001, breaker=breaker,
                           max_concurrent=slots, queue_timeout=queue_timeout)


async def test_retries_retryable_errors_then_succeeds():
    origin = ScriptedOrigin(OriginError("503", retryable=True),
                            OriginError("500", retryable=True), OK)
    assert await resilient(origin).fetch("a") is OK
    assert origin.calls == 3


async def test_retries_are_bounded():
    origin = ScriptedOrigin(OriginError("503", retryable=True))
    with pytest.raises(OriginError):
        await resilient(origin, retries=2).fetch("a")
    assert origin.calls == 3


@pytest.mark.parametrize("error", [OriginError("bad type"), NotFound(), OriginTimeout()])
async def test_not_retried(error):
    origin = ScriptedOrigin(error)
    with pytest.raises(type(error)):
        await resilient(origin).fetch("a")
    assert origin.calls == 1


async def test_breaker_opens_fails_fast_then_half_opens():
    clock = FakeClock(1000.0)
    origin = ScriptedOrigin(OriginError("503", retryable=True))
    guarded = resilient(origin, retries=0, threshold=3, reset=5, clock=clock)
    for _ in range(3):
        with pytest.raises(OriginError):
            await guarded.fetch("a")
    assert guarded.breaker.state == "open"
    with pytest.raises(OriginUnavailable):
        await guarded.fetch("a")
    assert origin.calls == 3  # not asked while open
    clock.now += 5
    origin.script = [OK]
    assert await guarded.fetch("a") is OK  # the half-open trial
    assert guarded.breaker.state == "closed"


async def test_failed_trial_reopens():
    clock = FakeClock(1000.0)
    origin = ScriptedOrigin(OriginError("503", retryable=True))
    guarded = resilient(origin, retries=0, threshold=1, reset=5, clock=clock)
    with pytest.raises(OriginError):
        await guarded.fetch("a")
    clock.now += 5
    with pytest.raises(OriginError):
        await guarded.fetch("a")
    assert guarded.breaker.state == "open"
    with pytest.raises(OriginUnavailable):
        await guarded.fetch("a")


async def test_content_errors_and_404_do_not_trip_the_breaker():
    origin = ScriptedOrigin(OriginError("text/html"))
    guarded = resilient(origin, threshold=1)
    for _ in range(3):
        with pytest.raises(OriginError):
            await guarded.fetch("a")
    assert guarded.breaker.state == "closed"


async def test_fetch_cap_queues_then_refuses():
    origin = ScriptedOrigin(OK, delay=0.3)
    guarded = resilient(origin, slots=2, queue_timeout=0.05)
    results = await asyncio.gather(*(guarded.fetch(str(i)) for i in range(5)),
                                   return_exceptions=True)
    assert sum(r is OK for r in results) == 2
    assert sum(isinstance(r, Busy) for r in results) == 3


def test_token_bucket_burst_then_rate():
    clock = FakeClock(1000.0)
    buckets = TokenBuckets(rate=2, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0  # another client has its own bucket
    clock.now += 0.5
    assert buckets.take("a") == 0


def test_token_buckets_bounded():
    buckets = TokenBuckets(rate=1, burst=1, max_clients=100, clock=FakeClock(1000.0))
    for i in range(1000):
        buckets.take(f"10.0.{i // 256}.{i % 256}")
    assert len(buckets) == 100


def test_signer_round_trip_and_tamper():
    signer = UrlSigner(["k1:0123456789abcdef0123"])
    url = signer.sign("/images/a.png?w=64")
    assert signer.verify(url)
    assert not signer.verify(url.replace("a.png", "b.png"))
    assert not signer.verify(url.replace("w=64", "w=65"))
    assert not signer.verify("/images/a.png")
    assert not signer.verify(url + "&x=1")
    assert not signer.verify(url[:-2])


def test_signer_key_rotation():
    old = UrlSigner(["old:0123456789abcdef0123"])
    rotated = UrlSigner(["new:fedcba9876543210fedc", "old:0123456789abcdef0123"])
    url = old.sign("/images/a.png")
    assert rotated.verify(url)  # old URLs keep working during rotation
    assert rotated.sign("/images/a.png") != url  # new ones use the new key
    retired = UrlSigner(["new:fedcba9876543210fedc"])
    assert not retired.verify(url)


@pytest.mark.parametrize("keys", [["nocolon"], ["k:short"], [":0123456789abcdef0"]])
def test_bad_keys_refused(keys):
    with pytest.raises(ValueError):
        parse_keys(keys)
