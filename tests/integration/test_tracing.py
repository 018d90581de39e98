"""Tracing in process: the span tree of each kind of answer, on real S3 (moto behind
the counting proxy) and real Redis, exported to the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.cluster.redis import keys_for
from gateway.web.accesslog import ACCESS_LOGGER, access_log_settings
from gateway.web.app import create_app

SECRET = {"secret": "s" * 32}


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class Spans:
    """The finished spans, as a tree."""

    def __init__(self, spans: Sequence[ReadableSpan]) -> None:
        self.all = list(spans)

    def servers(self) -> list[ReadableSpan]:
        return [s for s in self.all if s.kind is SpanKind.SERVER]

    def server(self, cache: str) -> ReadableSpan:
        found = [s for s in self.servers() if s.attributes.get("image_gateway.cache") == cache]
        assert len(found) == 1, [(s.name, dict(s.attributes or {})) for s in self.servers()]
        return found[0]

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.all
                if s.parent is not None and s.parent.span_id == span.context.span_id]

    def child(self, span: ReadableSpan, name: str) -> ReadableSpan:
        found = [s for s in self.children(span) if s.name == name]
        assert len(found) == 1, [s.name for s in self.children(span)]
        return found[0]

    def below(self, span: ReadableSpan) -> Iterator[ReadableSpan]:
        for child in self.children(span):
            yield child
            yield from self.below(child)

    def names_below(self, span: ReadableSpan) -> list[str]:
        return sorted(s.name for s in self.below(span))


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(aiohttp_client: Any, exporter: InMemorySpanExporter):
    async def start(config: Any) -> TestClient[Any, Any]:
        app = await create_app(config, span_exporter=exporter)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return start


def spans(exporter: InMemorySpanExporter) -> Spans:
    return Spans(exporter.get_finished_spans())


def assert_no_key(all_spans: Spans, key: str) -> None:
    """No span says the key (it may be personal): names and attribute values."""
    for span in all_spans.all:
        assert key not in span.name
        for name, value in (span.attributes or {}).items():
            assert key not in str(value), (span.name, name, value)


async def test_miss_then_hit(traced, exporter, s3_config, s3, s3_proxy, make_image,
                             redis_url):
    client = await traced(s3_config(endpoint=s3_proxy.url, redis={"url": redis_url},
                                    cluster=SECRET))
    s3.put("people/jane doe.png", make_image(seed=1))
    miss = await client.get("/images/people/jane%20doe.png")
    assert (miss.status, miss.headers["X-Cache"]) == (200, "MISS")
    hit = await client.get("/images/people/jane%20doe.png")
    assert hit.headers["X-Cache"] == "HIT-MEMORY"

    got = spans(exporter)
    server = got.server("MISS")
    assert server.name == "GET /images/{image_id}"
    assert server.attributes["http.route"] == "/images/{image_id}"
    assert server.attributes["image_gateway.key_hash"] == key_hash("people/jane doe.png")
    fetch = got.child(server, "origin.fetch")
    assert fetch.attributes["image_gateway.key_hash"] == key_hash("people/jane doe.png")
    assert fetch.attributes["image_gateway.origin_result"] == "ok"
    # The presigned GET (aiohttp-client instrumentation); Redis's GET is named alike.
    [s3_get] = [s for s in got.children(fetch) if "http.method" in s.attributes]
    assert (s3_get.name, s3_get.kind) == ("GET", SpanKind.CLIENT)
    assert s3_get.attributes["http.url"] == s3_proxy.url  # no path (key), no signature
    # Redis: the lease taken and given back, the presigned URL looked up and stored.
    redis_below = [s for s in got.below(server) if s.attributes.get("db.system") == "redis"]
    assert {s.name for s in redis_below} >= {"SET", "GET", "EVAL"}
    assert all("jane" not in (s.attributes.get("db.statement") or "") for s in redis_below)

    # traceparent reached S3: this trace, the S3 client span as the parent.
    sent = [r for r in s3_proxy.requests() if r.method == "GET" and "jane" in r.path]
    assert len(sent) == 1
    sent_traceparent = sent[0].header("traceparent").split("-")
    assert sent_traceparent[:3] == ["00", f"{server.context.trace_id:032x}",
                                    f"{s3_get.context.span_id:016x}"]

    hit_span = got.server("HIT-MEMORY")
    assert got.children(hit_span) == []  # no origin, no Redis, no lease
    assert hit_span.attributes["image_gateway.key_hash"] == key_hash("people/jane doe.png")
    assert_no_key(got, "jane")


async def test_coalesced_answer_has_no_fetch_of_its_own(traced, exporter, s3_config, s3,
                                                        s3_proxy, make_image):
    client = await traced(s3_config(endpoint=s3_proxy.url))
    s3.put("c.png", make_image(seed=2))
    s3_proxy.delay_first_byte(0.5)  # the leader's fetch is still out when the joiner comes

    async def get() -> str:
        resp = await client.get("/images/c.png")
        await resp.read()
        return resp.headers["X-Cache"]

    assert sorted(await asyncio.gather(get(), get())) == ["COALESCED", "MISS"]
    assert s3_proxy.gets("c.png") == 1
    got = spans(exporter)
    assert got.names_below(got.server("MISS")) == ["GET", "origin.fetch"]
    assert got.children(got.server("COALESCED")) == []


async def test_stale_answer_shows_the_failed_fetch(traced, exporter, s3_config, s3, s3_proxy,
                                                   make_image):
    client = await traced(s3_config(
        endpoint=s3_proxy.url, disk={"ttl": 1, "ttl_jitter": 0}, fetch={"refresh_ahead": 0},
        origin={"retries": 1, "retry_backoff": 0.01, "breaker_threshold": 5}))
    s3.put("st.png", make_image(seed=3))
    assert (await client.get("/images/st.png")).headers["X-Cache"] == "MISS"
    await asyncio.sleep(1.1)
    s3_proxy.fail_with(500)
    stale = await client.get("/images/st.png")
    assert (stale.status, stale.headers["X-Cache"]) == (200, "STALE")
    got = spans(exporter)
    server = got.server("STALE")
    fetch = got.child(server, "origin.fetch")
    assert fetch.status.status_code is StatusCode.ERROR
    assert fetch.attributes["image_gateway.revalidation"] is True  # If-None-Match sent
    tries = [s for s in got.children(fetch) if s.name == "GET"]
    assert [s.attributes["http.status_code"] for s in tries] == [500, 500]  # one retry


async def test_lease_wait_is_a_span(traced, exporter, s3_config, s3, s3_proxy, make_image,
                                    redis_url, redis):
    config = s3_config(endpoint=s3_proxy.url, redis={"url": redis_url}, cluster={
        **SECRET, "poll_interval": 0.02})
    client = await traced(config)
    s3.put("lw.png", make_image(seed=4))
    # Another replica holds the lease for a moment and leaves no result: wait, then fetch.
    await redis.set(keys_for(config).lease("0::lw.png"), "someone-else", px=300)
    resp = await client.get("/images/lw.png")
    assert resp.headers["X-Cache"] == "MISS"
    got = spans(exporter)
    server = got.server("MISS")
    wait = got.child(server, "cluster.lease_wait")
    assert wait.attributes["image_gateway.lease_wait"] == "fetch"
    fetch = got.child(server, "origin.fetch")
    assert wait.end_time <= fetch.start_time  # waited first, then fetched itself
    assert {s.name for s in got.children(wait)} >= {"MGET"}  # the polls, in Redis


async def test_variant_has_a_transform_span(traced, exporter, gateway_config, origin_dir,
                                            make_image):
    (origin_dir / "v.png").write_bytes(make_image(size=(200, 200), seed=5))
    client = await traced(gateway_config())
    resp = await client.get("/images/v.png?w=64")
    assert resp.status == 200
    got = spans(exporter)
    server = got.server(resp.headers["X-Cache"])
    assert server.attributes["http.route"] == "/images/{image_id}"
    assert "transform" in got.names_below(server)
    assert "origin.fetch" in got.names_below(server)


async def test_routes_are_templates_and_paths_stay_out(traced, exporter, gateway_config):
    client = await traced(gateway_config())
    await (await client.get("/images/user/secret-user-42?cb=secret-q")).read()
    await (await client.get("/images/secret-a.png/url")).read()
    await (await client.get("/healthz")).read()
    await (await client.get("/secret-nowhere")).read()
    got = spans(exporter)
    assert sorted(s.name for s in got.servers()) == [
        "GET /healthz", "GET /images/user/{user_id}", "GET /images/{image_id}/url",
        "GET unmatched"]
    assert_no_key(got, "secret")


async def test_access_line_carries_the_trace_id(exporter, gateway_config, aiohttp_client,
                                                caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    config = gateway_config(server={"access_log": True})
    server = TestServer(await create_app(config, span_exporter=exporter))
    await server.start_server(**access_log_settings(config.server))
    client = await aiohttp_client(server)
    resp = await client.get("/images/default_pfp.png", headers={"X-Request-Id": "r-1"})
    await resp.read()
    for _ in range(200):
        lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
        if lines:
            break
        await asyncio.sleep(0.01)
    record = json.loads(lines[0])
    span = spans(exporter).servers()[0]
    assert record["trace_id"] == f"{span.context.trace_id:032x}"
    assert record["request_id"] == "r-1"
