"""ClusterFlight against a real redis-server: the lease, the ``fill`` result the holder
leaves, and the bounded wait of the other replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from gateway.cluster.fill import FillCodec
from gateway.cluster.lease import ClusterFlight, Landed, Lease
from gateway.cluster.redis import RedisLink
from gateway.model import Blob
from tests.support.fakes import blob
from tests.support.redis_server import RedisServer

from .conftest import CountedRejections, MakeLink, fill_codec

K = "a.png/3/"
LEASE_KEY = f"test:dep:lease:{K}"
FILL_KEY = f"test:dep:fill:{K}"
PNG = b"\x89PNG\r\n\x1a\n"  # what the fill check sniffs: a result must be an image
BOUND = 5.0  # how long a test lets a wait run before calling it hung


def flight(link: RedisLink, codec: FillCodec | None = None,
           rejected: CountedRejections | None = None, **options: float) -> ClusterFlight:
    settings: dict[str, float] = dict(lease_ttl=5.0, wait_timeout=30.0, poll_interval=0.01,
                                      fill_max_bytes=10_000, fill_ttl=30)
    settings.update(options)
    return ClusterFlight(link, lease_ttl=settings["lease_ttl"],
                         wait_timeout=settings["wait_timeout"],
                         poll_interval=settings["poll_interval"],
                         fill_max_bytes=int(settings["fill_max_bytes"]),
                         fill_ttl=int(settings["fill_ttl"]),
                         codec=codec or fill_codec(),
                         rejected=rejected or CountedRejections())


async def nothing_local() -> Blob | None:
    return None


async def wait(cluster: ClusterFlight, local: Callable[[], object] = nothing_local
               ) -> Landed | None:
    return await asyncio.wait_for(cluster.wait(K, local), BOUND)  # type: ignore[arg-type]


# -- the lease ----------------------------------------------------------------------------


async def test_one_replica_takes_the_lease(make_link: MakeLink, redis: Redis) -> None:
    first, second = flight(make_link()), flight(make_link())
    lease = await first.acquire(K)
    assert isinstance(lease, Lease) and lease.key == K
    assert await redis.get(LEASE_KEY) == lease.token.encode()
    assert 0 < await redis.pttl(LEASE_KEY) <= 5000  # expires by itself
    assert await second.acquire(K) is False
    assert await first.acquire(K) is False
    assert isinstance(await first.acquire("b.png/0/"), Lease)  # per cache key


async def test_no_lease_without_redis(no_redis: RedisLink) -> None:
    cluster = flight(no_redis)
    assert await cluster.acquire(K) is None
    assert await cluster.wait(K, nothing_local) is None
    await cluster.release(Lease(K, "t"), blob())  # nothing to do, nothing raised


@pytest.mark.parametrize("outage", ["pause", "kill"])
async def test_no_lease_while_redis_is_down(make_link: MakeLink, redis_server: RedisServer,
                                            outage: str) -> None:
    cluster = flight(make_link(backoff=0.0))
    try:
        getattr(redis_server, outage)()
        assert await cluster.acquire(K) is None
        assert await cluster.wait(K, nothing_local) is None  # fetch yourself
        await cluster.release(Lease(K, "t"), blob())  # never raises
    finally:
        redis_server.ensure_running()
    assert isinstance(await cluster.acquire(K), Lease)


async def test_only_the_token_holder_releases(make_link: MakeLink, redis: Redis) -> None:
    holder, other = flight(make_link()), flight(make_link())
    lease = await holder.acquire(K)
    assert isinstance(lease, Lease)
    await other.release(Lease(K, "not-the-token"), None)
    assert await redis.get(LEASE_KEY) == lease.token.encode()
    assert await other.acquire(K) is False
    await holder.release(lease, None)
    assert await redis.exists(LEASE_KEY) == 0
    assert isinstance(await other.acquire(K), Lease)


# -- the result left for the others ---------------------------------------------------------


async def test_waiter_gets_the_holders_bytes(make_link: MakeLink, redis: Redis) -> None:
    holder, waiter = flight(make_link()), flight(make_link())
    lease = await holder.acquire(K)
    assert isinstance(lease, Lease)
    waiting = asyncio.create_task(wait(waiter))
    fetched = blob(PNG + bytes(range(256)) * 4, origin_etag='"o7"')
    await holder.release(lease, fetched)
    landed = await waiting
    assert landed == Landed(fetched)  # meta and body intact
    assert await redis.exists(LEASE_KEY) == 0
    assert 0 < await redis.ttl(FILL_KEY) <= 30


async def test_waiter_learns_the_object_is_missing(make_link: MakeLink) -> None:
    holder, waiter = flight(make_link()), flight(make_link())
    lease = await holder.acquire(K)
    assert isinstance(lease, Lease)
    waiting = asyncio.create_task(wait(waiter))
    await holder.release(lease, None, missing=True)
    assert await waiting == Landed(None)


async def test_release_without_a_result_sends_the_waiter_to_the_origin(
        make_link: MakeLink) -> None:
    holder, waiter = flight(make_link()), flight(make_link())
    lease = await holder.acquire(K)
    assert isinstance(lease, Lease)
    waiting = asyncio.create_task(wait(waiter))  # its own timeout: 30 s
    await holder.release(lease, None)
    assert await waiting is None


async def test_a_large_result_is_not_left_in_redis(make_link: MakeLink, redis: Redis) -> None:
    holder, waiter = flight(make_link(), fill_max_bytes=100), flight(make_link())
    lease = await holder.acquire(K)
    assert isinstance(lease, Lease)
    await holder.release(lease, blob(bytes(101)))
    assert await redis.exists(FILL_KEY) == 0 and await redis.exists(LEASE_KEY) == 0
    assert await wait(waiter) is None


async def test_wait_gives_up_after_its_timeout(make_link: MakeLink) -> None:
    holder, waiter = flight(make_link()), flight(make_link(), wait_timeout=0.2)
    assert isinstance(await holder.acquire(K), Lease)  # never released
    assert await wait(waiter) is None


async def test_a_copy_on_the_shared_disk_ends_the_wait(make_link: MakeLink) -> None:
    holder, waiter = flight(make_link()), flight(make_link())
    assert isinstance(await holder.acquire(K), Lease)
    written = blob(b"written by a process sharing the disk")

    async def local() -> Blob | None:
        return written

    assert await wait(waiter, local) == Landed(written)


def damaged(raw: bytes, how: str) -> bytes:
    if how == "body":  # same length, other bytes: only the digest tells
        return raw[:-1] + bytes([raw[-1] ^ 0xFF])
    if how == "truncated":
        return raw[:-10]
    return b"\x00\x00\x00\x05{nope" + raw[9:]


@pytest.mark.parametrize("how", ["body", "truncated", "header"])
async def test_a_damaged_result_is_dropped_and_counted(make_link: MakeLink, redis: Redis,
                                                       how: str) -> None:
    rejected = CountedRejections()
    holder, waiter = flight(make_link()), flight(make_link(), rejected=rejected)
    lease = await holder.acquire(K)
    assert isinstance(lease, Lease)
    await holder.release(lease, blob(PNG + b"pixels" * 50))
    raw = await redis.get(FILL_KEY)
    assert raw is not None and raw.endswith(b"pixels")
    await redis.set(FILL_KEY, damaged(raw, how))
    assert await wait(waiter) is None  # not served: fetch from the origin
    assert rejected.stats.redis_rejected_fill == 1
    assert await redis.exists(FILL_KEY) == 0


# -- hostile values written straight into Redis ----------------------------------------------

HTML = b"<html><script>alert(1)</script></html>"


async def forge(redis: Redis, value: bytes) -> None:
    """Another writer of the shared Redis: a lease 'held' and a result 'left' for it."""
    await redis.set(LEASE_KEY, "someone", px=30_000)
    await redis.set(FILL_KEY, value)


@pytest.mark.parametrize("value", [
    HTML,
    fill_codec(key=b"not the cluster key" * 2).pack(K, blob(HTML, content_type="text/html")),
    fill_codec(key=b"not the cluster key" * 2).pack(K, blob(PNG + b"x")),
    fill_codec(key=b"not the cluster key" * 2).pack(K, None),  # a forged 'missing'
    fill_codec(deployment="another").pack(K, blob(PNG + b"x")),  # another deployment's
    fill_codec().pack("b.png/3/", blob(PNG + b"x")),  # signed for another image
    fill_codec().pack("a.png/2/", blob(PNG + b"x")),  # ... or another version
    fill_codec().pack(K, blob(HTML)),  # a replica's HTML labelled image/png
    fill_codec().pack(K, blob(PNG + b"x" * 200)),  # over origin.max_bytes (100)
], ids=["raw-html", "html-unsigned", "png-unsigned", "missing-unsigned", "other-deployment",
        "other-image", "other-version", "signed-html", "signed-too-large"])
async def test_a_forged_result_is_never_used(make_link: MakeLink, redis: Redis,
                                             value: bytes) -> None:
    rejected = CountedRejections()
    waiter = flight(make_link(), codec=fill_codec(max_bytes=100), rejected=rejected)
    await forge(redis, value)
    # The lease is still held for 30 s: only the rejection ends the wait at once.
    assert await wait(waiter) is None  # fetch the origin yourself
    assert rejected.stats.redis_rejected_fill == 1
    assert await redis.exists(FILL_KEY) == 0  # dropped for the other replicas too


async def test_a_genuine_missing_marker_is_used(make_link: MakeLink, redis: Redis) -> None:
    await forge(redis, fill_codec().pack(K, None))
    assert await wait(flight(make_link())) == Landed(None)


async def test_wait_ends_when_redis_fails(make_link: MakeLink,
                                          redis_server: RedisServer) -> None:
    holder, waiter = flight(make_link()), flight(make_link())
    assert isinstance(await holder.acquire(K), Lease)
    try:
        redis_server.kill()
        assert await wait(waiter) is None
    finally:
        redis_server.ensure_running()
