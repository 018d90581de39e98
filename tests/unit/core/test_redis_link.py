"""RedisLink: the one place Redis errors become defaults (guarded) or 503s (required),
and where RedisHealth learns whether Redis answers."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError, ResponseError

from gateway.cluster.redis import RedisHealth, RedisKeys, RedisLink
from gateway.errors import Unavailable
from tests.support.redis_server import RedisServer

from .conftest import MakeLink

CLIENT: Any = object()  # never touched: the calls below ignore their argument


class Call:
    """A Redis call that counts how often it runs: answers ``result`` or raises ``error``."""

    def __init__(self, result: object = "answer", error: BaseException | None = None) -> None:
        self.result = result
        self.error = error
        self.count = 0

    async def __call__(self, client: Any) -> Any:
        self.count += 1
        if self.error is not None:
            raise self.error
        return self.result


def fake_link(backoff: float = 3600.0) -> RedisLink:
    return RedisLink(CLIENT, RedisKeys("test", "dep"), RedisHealth(True, backoff=backoff))


async def test_not_configured_answers_defaults_without_calling(no_redis: RedisLink) -> None:
    call = Call()
    assert not no_redis.enabled and no_redis.health.state == "disabled"
    assert await no_redis.guarded(call, "default") == "default"
    assert await no_redis.guarded(call, "default", when_down=True) == "default"
    assert await no_redis.ping() is False
    with pytest.raises(Unavailable, match="cannot do that") as info:
        await no_redis.required(call, "cannot do that")
    assert info.value.status == 503
    assert call.count == 0 and no_redis.health.state == "disabled"


async def test_success_answers_and_keeps_healthy() -> None:
    link = fake_link()
    call = Call(result=42)
    assert await link.guarded(call, 0) == 42
    assert await link.required(call, "x") == 42
    assert call.count == 2 and link.health.state == "up" and link.health.failures == 0


@pytest.mark.parametrize("error", [RedisConnectionError("refused"), ConnectionResetError(),
                                   TimeoutError(), ResponseError("LOADING")],
                         ids=["redis", "oserror", "timeout", "response"])
async def test_failure_answers_the_default_and_marks_down(error: BaseException) -> None:
    link = fake_link()
    assert await link.guarded(Call(error=error), "default") == "default"
    assert link.health.state == "down" and link.health.failures == 1


async def test_other_errors_are_not_swallowed() -> None:
    link = fake_link()
    with pytest.raises(ValueError, match="bug"):
        await link.guarded(Call(error=ValueError("bug")), "default")
    assert link.health.state == "up"


async def test_back_off_skips_calls_until_redis_answers_again() -> None:
    link = fake_link(backoff=3600)
    await link.guarded(Call(error=RedisConnectionError()), None)
    skipped = Call()
    for _ in range(3):
        assert await link.guarded(skipped, "default") == "default"
    assert skipped.count == 0  # no socket timeout paid on every request
    assert link.health.failures == 1
    urgent = Call(result="done")
    assert await link.guarded(urgent, "default", when_down=True) == "done"
    assert urgent.count == 1 and link.health.state == "up"
    assert await link.guarded(skipped, "default") == "answer"  # healthy: tried again
    assert skipped.count == 1


async def test_when_down_call_that_fails_again_stays_down() -> None:
    link = fake_link(backoff=3600)
    await link.guarded(Call(error=RedisConnectionError()), None)
    again = Call(error=TimeoutError())
    assert await link.guarded(again, "default", when_down=True) == "default"
    assert again.count == 1 and link.health.state == "down" and link.health.failures == 2


async def test_after_the_back_off_the_next_call_probes() -> None:
    link = fake_link(backoff=0.0)
    await link.guarded(Call(error=RedisConnectionError()), None)
    assert link.health.state == "down"
    probe = Call(result="back")
    assert await link.guarded(probe, "default") == "back"
    assert probe.count == 1 and link.health.state == "up"


async def test_required_raises_unavailable_and_marks_down() -> None:
    link = fake_link()
    with pytest.raises(Unavailable, match="alias not changed") as info:
        await link.required(Call(error=RedisConnectionError()), "alias not changed")
    assert info.value.status == 503 and info.value.__cause__ is None
    assert link.health.state == "down" and link.health.failures == 1


async def test_required_tries_even_during_the_back_off() -> None:
    link = fake_link(backoff=3600)
    await link.guarded(Call(error=RedisConnectionError()), None)
    call = Call(result="stored")
    assert await link.required(call, "x") == "stored"
    assert call.count == 1 and link.health.state == "up"


async def test_ping_real_redis(make_link: MakeLink, redis_server: RedisServer) -> None:
    link = make_link(backoff=3600)
    assert await link.ping() is True
    assert await link.guarded(lambda r: r.set("k", "v"), None) is True
    assert await link.guarded(lambda r: r.get("k"), None) == b"v"
    try:
        redis_server.kill()
        assert await link.ping() is False
        assert link.health.state == "down"
        assert await link.guarded(lambda r: r.get("k"), "skipped") == "skipped"
        redis_server.ensure_running()
        assert await link.ping() is True  # ping ignores the back-off
        assert link.health.state == "up"
    finally:
        redis_server.ensure_running()


def test_an_outage_is_one_warning_a_reminder_now_and_then_and_one_info(caplog) -> None:
    now = [1000.0]
    health = RedisHealth(True, remind_every=300, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, "gateway.cluster.redis"):
        for _ in range(1200):  # ten minutes of a listener retrying twice a second
            health.failed(RedisConnectionError("refused"))
            now[0] += 0.5
        health.ok()
        health.ok()
        health.failed(ConnectionResetError())  # a new outage is news again
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "redis unavailable (ConnectionError); serving without it"),
        ("WARNING", "redis still unavailable after 300 s (ConnectionError)"),
        ("INFO", "redis reachable again after 600 s"),
        ("WARNING", "redis unavailable (ConnectionResetError); serving without it"),
    ]
