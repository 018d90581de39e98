"""The gateway as a process: SIGTERM drains in-flight requests and exits 0."""

from __future__ import annotations

import asyncio
import signal
import urllib.request

import aiohttp
import pytest

from tests.support.images import noise_png, sha


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigterm_drains_in_flight_requests_and_exits_0(spawn_gateway, s3, s3_proxy,
                                                             redis_url, workers):
    body = noise_png(7)
    s3.put("slow.png", body)
    several = ({"GATEWAY_REDIS_URL": redis_url, "GATEWAY_CLUSTER_SECRET": "s" * 32}
               if workers != "1" else {})  # more than one worker needs Redis
    gateway = spawn_gateway({**s3.env(s3_proxy.url), "GATEWAY_SERVER_WORKERS": workers,
                             **several, "GATEWAY_ORIGIN_READ_TIMEOUT": "5"})
    s3_proxy.delay_first_byte(1.5, match="slow.png")
    async with aiohttp.ClientSession() as session:
        async def get():
            async with session.get(f"{gateway.url}/images/slow.png") as resp:
                return resp.status, await resp.read()

        in_flight = asyncio.create_task(get())
        await asyncio.sleep(0.5)  # the request is waiting on the slow origin
        gateway.send_signal(signal.SIGTERM)
        status, got = await in_flight
    assert status == 200
    assert sha(got) == sha(body)
    assert await asyncio.to_thread(gateway.terminate) == 0


@pytest.mark.timeout(60)
def test_sigterm_while_a_worker_still_starts_exits_0(spawn_gateway, redis_url):
    """Ready means one worker answers; the other may still be loading when SIGTERM comes
    (a deploy rolled back at once). It held no request: a clean stop, exit 0."""
    for _ in range(3):
        gateway = spawn_gateway({"GATEWAY_SERVER_WORKERS": "2", "GATEWAY_REDIS_URL": redis_url,
                                 "GATEWAY_CLUSTER_SECRET": "s" * 32})
        assert gateway.terminate() == 0, gateway.stderr_text()


def test_workers_keep_what_they_built_out_of_the_collector(spawn_gateway):
    # Without gc.freeze() every full collection walks every object built at start
    # (hundreds of thousands): measured, it took 40 % of a worker's CPU on memory hits.
    gateway = spawn_gateway()
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    frozen = next(float(line.split()[-1]) for line in text.splitlines()
                  if line.startswith("gateway_gc_frozen_objects "))
    assert frozen > 10_000
