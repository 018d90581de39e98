"""RedisRejections: every rejected Redis value counted; the warning rate-limited per kind,
never showing the value."""

from __future__ import annotations

import logging

import pytest

from gateway.observe.counters import Stats
from gateway.observe.rejected import RedisRejections


def test_counted_by_kind_logged_once_a_minute_per_kind(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    now = [1000.0]
    stats = Stats()
    rejected = RedisRejections(stats, log_every=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "gateway.observe.rejected"):
        for _ in range(3):
            rejected("url", "image a.png", "another endpoint")
        rejected("alias", "user bob", "not a valid image key")
        now[0] += 61
        rejected("url", "image b.png", "expired")
    assert (stats.redis_rejected_url, stats.redis_rejected_alias,
            stats.redis_rejected_fill) == (4, 1, 0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "image a.png: another endpoint" in lines[0] and "alias" in lines[1]
    assert "image b.png: expired (and 2 more like it in the last 60 s)" in lines[2]
