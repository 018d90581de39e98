"""Replicas on separate hosts, and the network between them failing.

Network namespaces (tests/support/netns.py) make four hosts on one switch: a Redis
host (redis-server), an S3 host (moto's server), two gateway hosts; nginx in front
runs in the test's own namespace, which reaches the switch through one more veth.
Faults, each healed before the next: one gateway cut from Redis only, one gateway cut
from S3 only, the Redis host cut from everyone. Packets are dropped (iptables DROP, a
link down), not refused: what a real partition does.

Every answer any client got is counted: no wrong bytes (every 200 body is a version
put for that key), nothing purged served after its purge returned (except by a
gateway that could not hear Redis at the time, which the README documents, and only
until it hears Redis again), no request longer than the configured budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.support import free_port, wait_for
from tests.support.fakes import until
from tests.support.gateway_process import GatewayProcess
from tests.support.images import noise_png as png, sha
from tests.support.netns import Topology, skip_reason
from tests.support.nginx import SHIPPED_CONF, NginxServer, render_nginx_conf
from tests.support.redis_server import RedisServer
from tests.support.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Bucket, s3_client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
S3_PORT = 9000
# The budgets the gateways get, and so what no answer may exceed: a request waits at
# most fetch.lock_timeout for a fetch, which is bounded by the origin's timeouts.
SETTINGS = {
    "GATEWAY_ORIGIN_CONNECT_TIMEOUT": "0.5", "GATEWAY_ORIGIN_READ_TIMEOUT": "1.5",
    "GATEWAY_ORIGIN_RETRIES": "1", "GATEWAY_ORIGIN_BREAKER_THRESHOLD": "3",
    "GATEWAY_ORIGIN_BREAKER_RESET": "2", "GATEWAY_FETCH_LOCK_TIMEOUT": "5",
    "GATEWAY_CLUSTER_LEASE_TTL": "4", "GATEWAY_CLUSTER_WAIT_TIMEOUT": "4",
    # Short-lived entries, so that an S3 cut finds expired copies to serve stale.
    "GATEWAY_DISK_TTL": "3", "GATEWAY_DISK_TTL_JITTER": "0", "GATEWAY_FETCH_REFRESH_AHEAD": "0",
    "GATEWAY_ADMIN_TOKEN": TOKEN, "GATEWAY_SERVER_ACCESS_LOG": "false",
}
BUDGET = 5.0 + 0.5 + 1.5  # fetch.lock_timeout + origin connect + read timeouts
LOAD_KEYS = [f"load{i}.png" for i in range(8)]
# What a gateway logs when it finds its subscription deaf (a ping went unanswered), when
# it hears Redis again, and when it applies purges it missed meanwhile.
DEAF = "invalidation messages may have been missed"
BACK = "redis reachable again"
CAUGHT_UP = "purges missed while disconnected"


@dataclass
class Answer:
    key: str
    via: str  # "edge" (nginx), "gw1", "gw2"
    sent: float
    took: float
    status: int
    digest: str = ""
    layer: str = ""


@dataclass
class Purge:
    key: str
    old: set[str]
    returned: float
    deaf: dict[str, float] = field(default_factory=dict)  # gateway -> heard Redis again


@dataclass
class Lab:
    net: Topology
    redis: RedisServer
    bucket: S3Bucket
    gateways: dict[str, GatewayProcess]
    edge: NginxServer
    versions: dict[str, set[str]] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    purges: list[Purge] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def put(self, key: str, body: bytes) -> None:
        self.bucket.put(key, body)
        self.versions.setdefault(key, set()).add(sha(body))

    def url(self, via: str) -> str:
        return self.edge.url if via == "edge" else self.gateways[via].url

    async def get(self, session: aiohttp.ClientSession, via: str, key: str) -> Answer:
        sent = time.monotonic()
        try:
            async with session.get(f"{self.url(via)}/images/{key}") as resp:
                body = await resp.read()
                answer = Answer(key, via, sent, time.monotonic() - sent, resp.status,
                                sha(body) if resp.status == 200 else "",
                                resp.headers.get("X-Cache", ""))
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors.append(f"{via} {key}: {type(exc).__name__} after "
                               f"{time.monotonic() - sent:.1f} s")
            return Answer(key, via, sent, time.monotonic() - sent, 0)
        self.answers.append(answer)
        return answer

    async def purge(self, session: aiohttp.ClientSession, via: str, key: str,
                    deaf: tuple[str, ...] = ()) -> bool:
        async with session.delete(f"{self.url(via)}/admin/images/{key}",
                                  headers=AUTH) as resp:
            assert resp.status == 200
            propagated = bool((await resp.json())["propagated"])
        current = self.bucket.get(key)
        old = self.versions[key] - {sha(current)}
        self.purges.append(Purge(key, old, time.monotonic(),
                                 {gw: float("inf") for gw in deaf}))
        return propagated

    def logged(self, gw: str, text: str) -> int:
        """How often ``gw`` has logged ``text`` so far."""
        return self.gateways[gw].stderr_text().count(text)

    async def logs_again(self, gw: str, text: str, before: int) -> None:
        await until(lambda: self.logged(gw, text) > before, timeout=30, interval=0.1,
                    what=f"{gw} logging {text!r}")

    async def ready(self, session: aiohttp.ClientSession, gw: str) -> dict[str, object]:
        async with session.get(f"{self.url(gw)}/readyz") as resp:
            data: dict[str, object] = await resp.json()
            return data


def _moto(net: Topology, folder: Path) -> subprocess.Popen[bytes]:
    with open(folder / "moto.log", "ab") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [*net.prefix("s3"), sys.executable, "-m", "moto.server", "-H",
             net.address("s3"), "-p", str(S3_PORT)], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)  # the one allowed skip: no network namespaces here
    net = Topology(["redis", "s3", "gw1", "gw2"])
    started: list[object] = []
    try:
        redis = RedisServer(bind=net.address("redis"), prefix=net.prefix("redis"))
        started.append(redis)
        moto = _moto(net, tmp_path)
        started.append(moto)
        endpoint = f"http://{net.address('s3')}:{S3_PORT}"
        client = s3_client(endpoint)

        def s3_up() -> bool:
            try:
                client.list_buckets()
                return True
            except Exception:
                return False

        wait_for(s3_up, timeout=30, what="moto's S3 in its namespace")
        client.create_bucket(Bucket="partitions")
        bucket = S3Bucket(endpoint, "partitions", client)
        env = {**bucket.env(), **SETTINGS, "GATEWAY_REDIS_URL": redis.url,
               "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
               "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}
        gateways = {}
        for name in ("gw1", "gw2"):
            gw = GatewayProcess(env, host=net.address(name), prefix=net.prefix(name))
            started.append(gw)
            gateways[name] = gw.start()
        conf = render_nginx_conf(
            SHIPPED_CONF.read_text(), listen_port=free_port(), tmp_dir=tmp_path,
            upstreams=[f"{gw.host}:{gw.port}" for gw in gateways.values()],
            micro_cache=False)  # every answer is a gateway's (the edge cache: 1 s)
        edge = NginxServer(conf, tmp_path)
        started.append(edge)
        edge.start()
        yield Lab(net, redis, bucket, gateways, edge)
    finally:
        for thing in reversed(started):  # a process outlives its namespace: stop first
            with contextlib.suppress(Exception):
                if isinstance(thing, subprocess.Popen):
                    _stop(thing)
                elif isinstance(thing, GatewayProcess | RedisServer):
                    thing.close()
                elif isinstance(thing, NginxServer):
                    thing.stop()
        net.close()


async def _load(lab: Lab, session: aiohttp.ClientSession, stop: asyncio.Event,
                worker: int) -> None:
    """A client of the edge for the whole run: the load keys, round and round."""
    turn = worker
    while not stop.is_set():
        await lab.get(session, "edge", LOAD_KEYS[turn % len(LOAD_KEYS)])
        turn += 1
        await asyncio.sleep(0.02)


async def test_partitions_between_gateways_redis_and_s3(lab: Lab) -> None:
    timeout = aiohttp.ClientTimeout(total=3 * BUDGET)  # past the budget: counted as hung
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for i, key in enumerate([*LOAD_KEYS, "p0.png", "p1.png", "c0.png", "c1.png"]):
            lab.put(key, png(i))
        for key in ["p0.png", "p1.png", "c0.png", "c1.png"]:
            for gw in ("gw1", "gw2"):
                assert (await lab.get(session, gw, key)).status == 200
        stop = asyncio.Event()
        load = [asyncio.create_task(_load(lab, session, stop, w)) for w in range(3)]
        try:
            await _gateway_cut_from_redis(lab, session)
            await _gateway_cut_from_s3(lab, session)
            await _redis_cut_from_everyone(lab, session)
        finally:
            stop.set()
            await asyncio.gather(*load)
    _check_everything(lab)


async def _gateway_cut_from_redis(lab: Lab, session: aiohttp.ClientSession) -> None:
    lab.net.cut("gw1", "redis")
    ready = await lab.ready(session, "gw1")
    assert ready["status"] == "degraded" and ready["checks"]["redis"] == "failing"  # type: ignore[index]
    assert (await lab.ready(session, "gw2"))["status"] == "ok"
    # Served from its caches, and from S3 for what it has not cached.
    assert (await lab.get(session, "gw1", "c0.png")).status == 200
    lab.put("n1.png", png(101))
    assert (await lab.get(session, "gw1", "n1.png")).status == 200
    # A purge through the other replica: gw1 cannot hear it until the heal.
    lab.put("p0.png", png(200))
    assert await lab.purge(session, "gw2", "p0.png", deaf=("gw1",)) is True
    assert (await lab.get(session, "gw2", "p0.png")).digest == sha(png(200))
    await lab.get(session, "gw1", "p0.png")  # its old copy: counted, allowed while deaf
    # A cut that drops packets breaks no socket: gw1 finds out by its unanswered ping.
    deaf, caught_up = lab.logged("gw1", DEAF), lab.logged("gw1", CAUGHT_UP)
    await lab.logs_again("gw1", DEAF, deaf)
    lab.net.heal()
    await lab.logs_again("gw1", CAUGHT_UP, caught_up)  # the purge, applied after the heal
    lab.purges[-1].deaf["gw1"] = time.monotonic()
    for gw in ("gw1", "gw2"):
        assert (await lab.get(session, gw, "p0.png")).digest == sha(png(200))


async def _gateway_cut_from_s3(lab: Lab, session: aiohttp.ClientSession) -> None:
    metrics_before = await _breaker_trips(session, lab.url("gw1"))
    # Only a copy S3 confirmed since gw1 was last deaf may be served stale: one faults
    # at a time, so gw1 revalidates what it holds before S3 goes (a picture it had not
    # revalidated yet would get 502/504 during the cut, not its unconfirmed copy).
    assert (await lab.get(session, "gw1", "c1.png")).layer == "REVALIDATED"
    for key in LOAD_KEYS:
        assert (await lab.get(session, "gw1", key)).status == 200
    lab.net.cut("gw1", "s3")
    await asyncio.sleep(3.2)  # disk.ttl: gw1's copy of c1.png has expired
    stale = await lab.get(session, "gw1", "c1.png")
    assert (stale.status, stale.layer, stale.digest) == (200, "STALE", sha(png(11)))
    lab.put("n2.png", png(102))
    misses = [await lab.get(session, "gw1", "n2.png") for _ in range(6)]
    assert {m.status for m in misses} <= {502, 504}
    assert await _breaker_trips(session, lab.url("gw1")) > metrics_before
    # Once the breaker is open S3 is not asked: an answer at once, not after a timeout.
    assert misses[-1].status == 502 and misses[-1].took < 0.5
    assert (await lab.get(session, "gw2", "n2.png")).digest == sha(png(102))
    lab.net.heal()

    async def fresh_again() -> bool:
        return (await lab.get(session, "gw1", "n2.png")).digest == sha(png(102))

    await until(fresh_again, timeout=30, interval=0.3)


async def _redis_cut_from_everyone(lab: Lab, session: aiohttp.ClientSession) -> None:
    lab.net.isolate("redis")
    for gw in ("gw1", "gw2"):
        assert (await lab.ready(session, gw))["status"] == "degraded"
        assert (await lab.get(session, gw, "c0.png")).status == 200
    lab.put("n3.png", png(103))
    for gw in ("gw1", "gw2"):
        assert (await lab.get(session, gw, "n3.png")).digest == sha(png(103))
    # A purge now reaches only the replica that took it.
    lab.put("p1.png", png(201))
    assert await lab.purge(session, "gw1", "p1.png", deaf=("gw2",)) is False
    assert (await lab.get(session, "gw1", "p1.png")).digest == sha(png(201))
    # An alias change cannot be made without Redis: 503, nothing half-done.
    async with session.put(f"{lab.url('gw1')}/admin/users/u1", json={"image_id": "p1.png"},
                           headers=AUTH) as resp:
        assert resp.status == 503
    deaf = {gw: lab.logged(gw, DEAF) for gw in ("gw1", "gw2")}
    back = {gw: lab.logged(gw, BACK) for gw in ("gw1", "gw2")}
    for gw in ("gw1", "gw2"):
        await lab.logs_again(gw, DEAF, deaf[gw])
    lab.net.heal()
    for gw in ("gw1", "gw2"):
        await lab.logs_again(gw, BACK, back[gw])
    # gw2 never heard of gw1's purge (Redis never had it): having been deaf, it
    # revalidates what it cached before it serves it, and S3 has the new bytes.
    lab.purges[-1].deaf["gw2"] = time.monotonic()
    assert (await lab.get(session, "gw2", "p1.png")).digest == sha(png(201))
    lab.put("p1.png", png(202))

    async def propagates() -> bool:
        return await lab.purge(session, "gw2", "p1.png")

    await until(propagates, timeout=30, interval=0.3)
    for gw in ("gw1", "gw2"):
        answer = await lab.get(session, gw, "p1.png")
        if answer.digest != sha(png(202)):
            print(lab.gateways[gw].stderr_text()[-4000:])
        assert answer.digest == sha(png(202)), answer


async def _breaker_trips(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("gateway_origin_breaker_trips_total "):
            return float(line.split()[1])
    return 0.0


def _check_everything(lab: Lab) -> None:
    wrong = [a for a in lab.answers
             if a.status == 200 and a.digest not in lab.versions.get(a.key, set())]
    purged_served = [
        a for a in lab.answers for p in lab.purges
        if a.key == p.key and a.status == 200 and a.digest in p.old and a.sent > p.returned
        and not (a.via in p.deaf and a.sent < p.deaf[a.via])]
    deaf_served = [
        a for a in lab.answers for p in lab.purges
        if a.key == p.key and a.status == 200 and a.digest in p.old and a.sent > p.returned
        and a.via in p.deaf and a.sent < p.deaf[a.via]]
    slow = [a for a in lab.answers if a.took > BUDGET]
    statuses = Counter((a.via, a.status) for a in lab.answers)
    print(f"\npartitions: {len(lab.answers)} answers {dict(statuses)}; wrong bytes "
          f"{len(wrong)}; purged bytes after the purge returned {len(purged_served)} "
          f"(+{len(deaf_served)} from a gateway that could not hear Redis); over the "
          f"{BUDGET:.0f} s budget {len(slow)} (longest {max(a.took for a in lab.answers):.2f} s);"
          f" client errors {len(lab.errors)}")
    assert not lab.errors, lab.errors
    assert not wrong, wrong
    assert not purged_served, purged_served
    assert not slow, slow
    edge = [a for a in lab.answers if a.via == "edge"]
    assert edge and all(a.status == 200 for a in edge), Counter(a.status for a in edge)
