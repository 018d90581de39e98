"""Traffic through the operator's stack: nginx (TLS, HTTP/2) -> two gateway
containers -> Redis + S3. Origin requests are counted at the S3 proxy."""

from __future__ import annotations

import asyncio
import ssl
import threading
import urllib.error
import urllib.request
import uuid
from typing import Any

import aiohttp
import pytest

from tests.container.stack import TOKEN, Stack, start_gateway
from tests.support import compose, wait_for
from tests.support.curl import curl
from tests.support.images import noise_png, sha
from tests.support.podman import volume

# The first test of the module starts the stack (and may build the image).
pytestmark = pytest.mark.timeout(900)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}.png"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_pictures_byte_exact_over_http2_with_304(stack: Stack) -> None:
    name = _name("exact")
    body = noise_png(101, size=(64, 64))
    stack.bucket.put(name, body)
    url = f"{stack.nginx.https_url}/images/{name}"
    first = curl(url, "--http2", cacert=stack.tls.cert)
    assert (first.version, first.status) == ("2", 200)
    assert first.body == body
    assert first.headers["content-type"] == "image/png"
    assert first.headers["x-cache"] == "MISS"
    etag = first.headers["etag"]
    again = curl(url, "--http2", cacert=stack.tls.cert)
    assert again.body == body and again.headers["etag"] == etag
    cond = curl(url, "--http2", "-H", f"If-None-Match: {etag}", cacert=stack.tls.cert)
    assert (cond.status, cond.body) == (304, b"")
    assert cond.headers["etag"] == etag
    assert stack.proxy.gets(name) == 1
    # Each container answers the conditional request itself too (not just the edge),
    # with the same ETag: it is derived from the bytes, not from the replica.
    for gateway in stack.gateways:
        status, headers, got = _get(f"{gateway.url}/images/{name}",
                                    {"If-None-Match": etag})
        assert (status, got) == (304, b"")
        assert headers["ETag"] == etag


async def test_one_origin_get_for_a_burst_across_both_containers(stack: Stack) -> None:
    name = _name("burst")
    body = noise_png(202, size=(48, 48))
    stack.bucket.put(name, body)
    # A slow origin keeps the first fetch in flight while every request arrives.
    stack.proxy.delay_first_byte(1.0, match=name)
    context = ssl.create_default_context(cafile=str(stack.tls.cert))
    urls = [f"{g.url}/images/{name}" for g in stack.gateways] * 8
    urls += [f"{stack.nginx.https_url}/images/{name}"] * 4
    try:
        async with aiohttp.ClientSession() as session:
            async def fetch(url: str) -> tuple[int, str, bytes]:
                async with session.get(url, ssl=context) as resp:
                    return resp.status, resp.headers.get("X-Cache", ""), await resp.read()

            answers = await asyncio.gather(*(fetch(u) for u in urls))
    finally:
        stack.proxy.heal()
    assert [status for status, _, _ in answers] == [200] * len(urls)
    assert {sha(got) for _, _, got in answers} == {sha(body)}
    assert stack.proxy.gets(name) == 1
    layers = {layer for _, layer, _ in answers}
    assert "MISS" in layers and layers <= {"MISS", "COALESCED", "HIT-MEMORY", "HIT-DISK"}, layers


def test_purge_through_one_container_reaches_the_other(stack: Stack) -> None:
    name = _name("purge")
    old, new = noise_png(301), noise_png(302)
    stack.bucket.put(name, old)
    one, other = stack.gateways
    for gateway in stack.gateways:
        status, _, got = _get(f"{gateway.url}/images/{name}")
        assert (status, got) == (200, old)
    status, headers, _ = _get(f"{other.url}/images/{name}")
    assert headers["X-Cache"] in ("HIT-MEMORY", "HIT-DISK")  # cached there before the purge
    stack.bucket.put(name, new)

    request = urllib.request.Request(f"{one.url}/admin/images/{name}", method="DELETE",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=20) as resp:
        assert resp.status == 200

    wait_for(lambda: _get(f"{other.url}/images/{name}")[2] == new, timeout=10,
             what="the other container serving the new bytes")
    # And through the edge (its micro-cache lives a second).
    url = f"{stack.nginx.https_url}/images/{name}"
    wait_for(lambda: curl(url, "--http2", cacert=stack.tls.cert).body == new, timeout=10,
             what="nginx serving the new bytes")


# The gateway's log line when SIGTERM reaches it (gateway/server.py).
DRAIN_LINE = "draining in-flight requests"


@pytest.mark.parametrize("init", [True, False], ids=["init", "gateway-as-pid-1"])
async def test_sigterm_drains_an_in_flight_request_and_exits_0(stack: Stack, init: bool) -> None:
    """A third container of the same definition: `podman stop` (SIGTERM, compose's
    grace period) while a request waits on a slow origin. The gateway logs that it
    drains while that request is still unanswered (so the signal came in flight),
    the request then completes, and the container exits 0, so before the grace
    period ran out (else SIGKILL, 137). With compose's `init: true` (catatonit passes
    the signal on) and without (the gateway is PID 1, as in Kubernetes or a plain
    `docker run`: the kernel delivers PID 1 only the signals it handles)."""
    name = _name("drain")
    body = noise_png(401, size=(40, 40))
    stack.bucket.put(name, body)
    box_name = f"igw-test-drain-{uuid.uuid4().hex[:8]}"
    service = {**compose.gateway_service(), "init": init}
    with volume(f"{box_name}-cache") as cache:
        gateway = start_gateway(stack.image, box_name, bucket=stack.bucket, proxy=stack.proxy,
                                redis=stack.redis, cache_volume=cache, service=service)
        box = gateway.container
        try:
            assert bool(box.inspect()["HostConfig"].get("Init")) is init
            pid1 = box.exec("cat", "/proc/1/comm").stdout.strip()
            assert (pid1 == "image-gateway") is not init, pid1
            # Slow enough that the answer cannot come before the drain is logged, and
            # below the gateway's origin read timeout (5 s: a 504 after that).
            stack.proxy.delay_first_byte(3.5, match=name)
            stopped: dict[str, Any] = {}

            def stop() -> None:
                stopped["code"] = box.stop(timeout=gateway.run.stop_timeout)

            async with aiohttp.ClientSession() as session:
                async def get() -> tuple[int, bytes]:
                    async with session.get(f"{gateway.url}/images/{name}") as resp:
                        return resp.status, await resp.read()

                in_flight = asyncio.create_task(get())
                await asyncio.to_thread(
                    wait_for, lambda: stack.proxy.gets(name) == 1, 10, 0.02,
                    "the request to reach the slow origin")
                assert DRAIN_LINE not in box.logs()
                stopper = threading.Thread(target=stop)
                stopper.start()
                await asyncio.to_thread(
                    wait_for, lambda: DRAIN_LINE in box.logs(), 10, 0.05,
                    "the gateway to log the SIGTERM")
                # The signal arrived while the request was in flight.
                answered_before_the_signal = in_flight.done()
                status, got = await in_flight
                await asyncio.to_thread(stopper.join, 60)
        finally:
            stack.proxy.heal()
            logs = box.logs()
            box.remove()
    assert not answered_before_the_signal, logs[-3000:]
    assert status == 200
    assert sha(got) == sha(body)
    assert stack.proxy.gets(name) == 1
    assert stopped.get("code") == 0, logs[-3000:]
