"""gateway.origin.timed: every fetch timed and reported by result, cancellations not."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import NotFound, OriginError, OriginTimeout, OriginUnavailable
from gateway.observe.recorder import Recorder
from gateway.origin import NOT_MODIFIED, Fetched
from gateway.origin.timed import TimedOrigin

FETCHED = Fetched(b"x", "image/png", 0, None)


class Fake:
    """An origin answering each fetch with the next outcome: a value, an exception
    to raise, or "slow" (sleeps until cancelled)."""

    kind = "fake"

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)

    async def fetch(self, image_id, if_none_match=None):
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "slow":
            await asyncio.sleep(10)
        return outcome


def timed(*outcomes: object) -> tuple[TimedOrigin, list[tuple[str, float]]]:
    calls: list[tuple[str, float]] = []
    return TimedOrigin(Fake(*outcomes), lambda result, s: calls.append((result, s))), calls


async def test_timed_origin_records_each_result():
    # Through the Recorder's own callback: a label it does not know would raise.
    fake = Fake()
    recorder = Recorder()
    origin = TimedOrigin(fake, recorder.origin_fetch)
    assert origin.kind == "fake"
    fake.outcomes = [Fetched(b"x", "image/png", 0, None), NOT_MODIFIED, NotFound(),
                     OriginTimeout(), OriginError("boom"), "slow"]
    assert isinstance(await origin.fetch("a"), Fetched)
    assert await origin.fetch("a", '"etag"') is NOT_MODIFIED
    for exc in (NotFound, OriginTimeout, OriginError):
        with pytest.raises(exc):
            await origin.fetch("a")
    task = asyncio.create_task(origin.fetch("a"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    counts = {result: h.count for result, h in recorder.origin.items()}
    assert counts == {"ok": 1, "not_modified": 1, "not_found": 1, "timeout": 1, "error": 1}


@pytest.mark.parametrize(("outcome", "label"), [
    (FETCHED, "ok"),
    (NOT_MODIFIED, "not_modified"),
])
async def test_an_answer_is_returned_and_reported(outcome, label):
    origin, calls = timed(outcome)
    assert await origin.fetch("a", '"etag"') is outcome
    assert [result for result, _ in calls] == [label]


@pytest.mark.parametrize(("exc", "label"), [
    (NotFound("gone"), "not_found"),
    (OriginTimeout("slow"), "timeout"),
    (OriginError("boom"), "error"),
    (OriginUnavailable("circuit open"), "error"),  # any other failure of the origin
    (RuntimeError("bug"), "error"),
])
async def test_a_failure_is_raised_unchanged_and_reported(exc, label):
    origin, calls = timed(exc)
    with pytest.raises(type(exc)) as raised:
        await origin.fetch("a")
    assert raised.value is exc
    assert [result for result, _ in calls] == [label]


async def test_a_cancelled_fetch_is_not_reported():
    origin, calls = timed("slow", FETCHED)
    task = asyncio.create_task(origin.fetch("a"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == []
    await origin.fetch("a")  # the next one is reported as usual
    assert [result for result, _ in calls] == ["ok"]


async def test_the_time_reported_is_the_fetch_time():
    class Slow(Fake):
        async def fetch(self, image_id, if_none_match=None):
            await asyncio.sleep(0.05)
            return FETCHED

    calls: list[tuple[str, float]] = []
    origin = TimedOrigin(Slow(), lambda result, s: calls.append((result, s)))
    await origin.fetch("a")
    [(result, seconds)] = calls
    assert result == "ok"
    assert 0.05 <= seconds < 5
