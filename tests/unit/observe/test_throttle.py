"""gateway.observe.throttle: recurring log lines, at most one per interval."""

from __future__ import annotations

import logging

from gateway.observe.throttle import Throttled


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_line_at_once_then_one_per_interval_with_the_count(caplog):
    clock = Clock()
    throttled = Throttled(logging.getLogger("test.throttle"), interval=60, clock=clock)
    with caplog.at_level(logging.INFO, "test.throttle"):
        assert throttled.log(logging.WARNING, "bad thing from %s", "a")
        for _ in range(50):
            clock.now += 1
            assert not throttled.log(logging.WARNING, "bad thing from %s", "b")
        clock.now += 10  # 60 s after the first line
        assert throttled.log(logging.WARNING, "bad thing from %s", "c")
    assert [r.getMessage() for r in caplog.records] == [
        "bad thing from a",
        "bad thing from c (and 50 more like it in the last 60 s)",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_reset_makes_the_next_occurrence_news(caplog):
    clock = Clock()
    throttled = Throttled(logging.getLogger("test.throttle"), interval=60, clock=clock)
    with caplog.at_level(logging.INFO, "test.throttle"):
        throttled.log(logging.WARNING, "down")
        throttled.log(logging.WARNING, "down")
        throttled.reset()
        clock.now += 1
        throttled.log(logging.WARNING, "down")
    assert [r.getMessage() for r in caplog.records] == ["down", "down"]
