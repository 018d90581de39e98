"""Which Redis the bus talks to, and whether it still holds what it held.

A Redis that restarted without persistence, was flushed, or failed over to a
replica that had not caught up has lost version keys: the versions read back no
longer cover every purge. Two marks tell: the server's run id (new at every
start) and an epoch token that the first gateway to find it missing stores
(SET NX) and nobody changes afterwards. Either one differing from what the bus
saw when it subscribed means purges may have been missed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.cluster.redis import RedisKeys

_EPOCH = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""


@dataclass(frozen=True, slots=True)
class Identity:
    run_id: str  # "" where INFO is refused (some managed Redis): the epoch alone decides
    epoch: str


async def identity_of(redis: Redis, keys: RedisKeys) -> Identity:
    """Redis's identity now, creating the epoch if it is gone; raises on Redis errors."""
    epoch = await redis.eval(_EPOCH, 1, keys.epoch(), secrets.token_hex(16))
    try:
        info = await redis.info("server")
    except ResponseError:
        info = {}
    return Identity(str(info.get("run_id", "")), _text(epoch))


def _text(value: object) -> str:
    # Only ever compared for equality: whatever Redis holds there is fine.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
