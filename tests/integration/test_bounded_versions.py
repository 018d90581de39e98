"""The app bounds purge versions by disk.ttl + disk.max_stale: the ``ver`` key a purge
writes expires then, and each worker's version map is swept with the same horizon."""

from __future__ import annotations

from gateway.cluster.redis import keys_for
from gateway.web.keys import PARTS

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_a_purge_version_lives_disk_ttl_plus_max_stale(gateway_client, s3_config,
                                                              redis_url, redis) -> None:
    config = s3_config(redis={"url": redis_url}, admin={"token": TOKEN},
                       disk={"ttl": 600, "max_stale": 300})
    client = await gateway_client(config)
    resp = await client.delete("/admin/images/a.png", headers=AUTH)
    assert resp.status == 200 and (await resp.json())["propagated"] is True
    assert 600 < await redis.ttl(keys_for(config).version("a.png")) <= 900
    assert client.app[PARTS].cache.version_horizon == 900
