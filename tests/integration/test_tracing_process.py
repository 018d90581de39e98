"""Tracing of a real gateway process: spans exported over OTLP/HTTP to a receiver in
this test (the OpenTelemetry Collector is not on these machines), and, with tracing
off, not one OpenTelemetry module imported."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from gateway.web.tracing_switch import tracing_wanted

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver:
    """POST /v1/traces as an OTLP/HTTP collector takes it (protobuf)."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, span)
        self.arrived = asyncio.Event()

    async def traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            resource = {a.key: a.value.string_value
                        for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append((resource, span))
        self.arrived.set()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")


@pytest.fixture
async def receiver(aiohttp_server: Any) -> tuple[Receiver, str]:
    got = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", got.traces)
    server = await aiohttp_server(app)
    return got, f"http://127.0.0.1:{server.port}"


def get(url: str, **headers: str) -> tuple[int, dict[str, str]]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                timeout=10) as resp:
        resp.read()
        return resp.status, dict(resp.headers)


def attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        value = a.value
        out[a.key] = getattr(value, value.WhichOneof("value"))
    return out


@pytest.mark.timeout(60)
async def test_spans_reach_an_otlp_endpoint(spawn_gateway, receiver):
    got, endpoint = receiver
    gateway = await asyncio.to_thread(spawn_gateway, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "gw-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50"})
    status, headers = await asyncio.to_thread(
        get, f"{gateway.url}/images/default_pfp.png",
        traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01", **{"X-Request-Id": "otlp-1"})
    assert (status, headers["X-Cache"], headers["X-Request-Id"]) == (200, "FALLBACK", "otlp-1")

    async with asyncio.timeout(20):
        while not any(s.trace_id.hex() == TRACE_ID for _, s in got.spans):
            got.arrived.clear()
            await got.arrived.wait()
    ours = [(r, s) for r, s in got.spans if s.trace_id.hex() == TRACE_ID]
    [(resource, server)] = [(r, s) for r, s in ours if s.kind == s.SPAN_KIND_SERVER]
    assert resource["service.name"] == "gw-under-test"
    assert server.name == "GET /images/{image_id}"
    assert server.parent_span_id.hex() == PARENT_ID  # the incoming traceparent's span
    assert attributes(server)["image_gateway.cache"] == "FALLBACK"
    assert attributes(server)["http.route"] == "/images/{image_id}"
    [fetch] = [s for _, s in ours if s.name == "origin.fetch"]  # missing: the fallback
    assert fetch.parent_span_id == server.span_id
    # The access line of that request names the same trace.
    await asyncio.to_thread(gateway.terminate)
    line = next(s for s in gateway.stdout_text().splitlines() if '"otlp-1"' in s)
    assert f'"trace_id":"{TRACE_ID}"' in line


def imported(stderr: str) -> set[str]:
    """The modules a process imported, from its -X importtime listing."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines()
            if line.startswith("import time:")}


@pytest.mark.timeout(60)
async def test_tracing_off_imports_no_opentelemetry(spawn_gateway):
    """Without OTEL_* variables the gateway imports no OpenTelemetry module, not even
    when it serves requests (-X importtime lists every module a process imports).
    redis-py 8 imports a few itself (its optional metrics, inactive unless configured)
    whenever the SDK is installed: what the gateway imports must be no more than that."""
    gateway = await asyncio.to_thread(spawn_gateway, {"PYTHONPROFILEIMPORTTIME": "1"})
    for path in ("/images/default_pfp.png", "/images/default_pfp.png?w=32", "/readyz",
                 "/metrics", "/images/nothing.png"):
        status, _ = await asyncio.to_thread(get, gateway.url + path)
        assert status == 200
    await asyncio.to_thread(gateway.terminate)
    modules = imported(gateway.stderr_text())
    assert {"aiohttp.web", "gateway.web.app", "gateway.web.requestid"} <= modules
    assert "gateway.web.tracing" not in modules
    otel = {m for m in modules if m.startswith("opentelemetry")}
    redis_alone = imported(subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import redis.asyncio"],
        capture_output=True, text=True, check=True).stderr)
    assert otel <= redis_alone, sorted(otel - redis_alone)
    assert not {m for m in otel if m.startswith((
        "opentelemetry.instrumentation", "opentelemetry.sdk.trace", "opentelemetry.exporter",
        "opentelemetry.propagate"))}


@pytest.mark.parametrize(("environ", "wanted"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
    ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, True),
])
def test_which_variables_turn_it_on(environ, wanted):
    assert tracing_wanted(environ) is wanted
