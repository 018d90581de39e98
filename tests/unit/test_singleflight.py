import asyncio

import pytest

from gateway.errors import LockTimeout, OriginError
from gateway.singleflight import SingleFlight


async def test_concurrent_callers_share_one_run():
    calls = 0
    gate = asyncio.Event()

    async def work():
        nonlocal calls
        calls += 1
        await gate.wait()
        return "value"

    flights: SingleFlight[str] = SingleFlight(lock_timeout=5)
    tasks = [asyncio.create_task(flights.run("k", work)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert [r[0] for r in results] == ["value"] * 50
    assert sum(joined for _, joined in results) == 49
    assert len(flights) == 0


async def test_failure_reaches_every_waiter_and_is_not_cached():
    calls = 0

    async def work():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise OriginError("boom")

    flights: SingleFlight[str] = SingleFlight(lock_timeout=5)
    results = await asyncio.gather(*(flights.run("k", work) for _ in range(10)),
                                   return_exceptions=True)
    assert all(isinstance(r, OriginError) for r in results)
    assert calls == 1
    with pytest.raises(OriginError):
        await flights.run("k", work)
    assert calls == 2


async def test_cancelled_leader_does_not_fail_joiners():
    gate = asyncio.Event()

    async def work():
        await gate.wait()
        return "ok"

    flights: SingleFlight[str] = SingleFlight(lock_timeout=5)
    leader = asyncio.create_task(flights.run("k", work))
    await asyncio.sleep(0)
    joiner = asyncio.create_task(flights.run("k", work))
    await asyncio.sleep(0)
    leader.cancel()
    await asyncio.sleep(0)
    gate.set()
    assert await joiner == ("ok", True)
    assert leader.cancelled()


async def test_hung_work_releases_waiters_and_next_caller_starts_fresh():
    started = 0

    async def hang():
        nonlocal started
        started += 1
        await asyncio.sleep(3600)

    flights: SingleFlight[str] = SingleFlight(lock_timeout=0.05)
    results = await asyncio.gather(*(flights.run("k", hang) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, LockTimeout) for r in results)
    assert results[0].status == 504

    async def quick():
        return "fresh"

    assert await flights.run("k", quick) == ("fresh", False)
    assert started == 1
    await flights.close()


async def test_different_keys_run_separately():
    flights: SingleFlight[str] = SingleFlight(lock_timeout=5)

    async def work(v):
        await asyncio.sleep(0.01)
        return v

    a, b = await asyncio.gather(flights.run("a", lambda: work("A")),
                                flights.run("b", lambda: work("B")))
    assert (a, b) == (("A", False), ("B", False))
