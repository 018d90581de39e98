"""OpenTelemetry tracing: on only when the standard OTEL_* variables ask for it.

Everything that touches OpenTelemetry is in this module, and web/app.py imports it
only when ``wanted()`` says so: with tracing off the process never imports an
OpenTelemetry package and the request path runs no code of it (the optional extra
``image-gateway[tracing]`` need not even be installed).

What a traced request gives, per process (the SDK reads OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_*, OTEL_BSP_*):

- one SERVER span (aiohttp-server instrumentation, which honours an incoming W3C
  ``traceparent``), renamed to the route template, with ``http.route``,
  ``image_gateway.cache`` (the X-Cache layer) and ``image_gateway.key_hash``. The
  path and query the instrumentation recorded are replaced by the template: a key
  may be personal (a user's name in a file name), so no span carries one;
- child spans ``origin.fetch`` (with its retries inside), ``cluster.lease_wait``
  (another replica is fetching) and ``transform`` (a variant rendered);
- Redis commands (redis instrumentation; arguments are masked as ``?``), S3 API
  calls (botocore instrumentation, which wraps aiobotocore's clients) and every
  aiohttp client request (aiohttp-client instrumentation: the presigned GET to S3
  carries ``traceparent``; its recorded URL is cut to scheme, host and port).
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web, web_app
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.aiohttp_server import (
    AioHttpServerInstrumentor,
    create_aiohttp_middleware,
)
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from yarl import URL

from gateway.cluster.lease import ClusterFlight, Landed
from gateway.model import Blob
from gateway.origin import Fetched, NotModified, Origin, OriginWrapper
from gateway.variants.transform import TransformPool
from gateway.web.keys import ANSWER_LAYER, IMAGE_KEY, ROUTE, TRACE_ID

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_SERVICE_NAME = "image-gateway"
SCOPE = "image_gateway"
#: Request attributes the instrumentation fills from the raw URL (old and new semantic
#: conventions): overwritten with the route template, which names no key.
_URL_ATTRIBUTES = ("http.target", "http.url", "url.path", "url.full", "url.query")


def key_hash(key: str) -> str:
    """What spans say instead of an object key: 16 hex digits of its sha256 (the same
    for the same key everywhere, so one picture's traces can be found)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip().lower() for n in
             environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    out: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                                   environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
            if protocol != "http/protobuf":
                log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: only http/protobuf is "
                            "installed; using it", protocol)
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
            out.append(OTLPSpanExporter())
        elif name == "console":
            out.append(ConsoleSpanExporter())
        elif name != "none":
            log.warning("OTEL_TRACES_EXPORTER: %r is not supported (otlp, console); "
                        "ignored", name)
    return out


class Tracing:
    """The process's tracer provider and the instrumented client libraries."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(SCOPE)
        self._instrumentors = (RedisInstrumentor(),
                               BotocoreInstrumentor(),  # type: ignore[no-untyped-call]
                               AioHttpClientInstrumentor(), AioHttpServerInstrumentor())

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ,
                         exporter: SpanExporter | None = None) -> Tracing:
        """A provider configured by the OTEL_* variables; ``exporter`` (tests) replaces
        the configured ones and exports each span as it ends."""
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            for each in _exporters(environ):
                provider.add_span_processor(BatchSpanProcessor(each))
        return cls(provider)

    def instrument(self) -> None:
        """Patch the client libraries (process-wide; undone by ``close``)."""
        redis, botocore, aiohttp_client, aiohttp_server = self._instrumentors
        redis.instrument(tracer_provider=self.provider)
        botocore.instrument(tracer_provider=self.provider)
        aiohttp_client.instrument(tracer_provider=self.provider, url_filter=_origin_only)
        # Sets what its middleware reads (excluded URLs, semantic conventions) and
        # replaces web.Application with a class that adds that middleware to every app:
        # the admin sub-app would get a second SERVER span, with the raw path in it.
        # So the class is put back and the root app is given the middleware itself.
        with warnings.catch_warnings():  # aiohttp frowns on that subclass: not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            aiohttp_server.instrument(tracer_provider=self.provider)
        web.Application = web_app.Application  # type: ignore[misc]

    def close(self) -> None:
        """Undo ``instrument`` and export what is left (at shutdown)."""
        for instrumentor in self._instrumentors:
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
        self.provider.shutdown()

    # -- the parts ------------------------------------------------------------------

    def middlewares(self) -> list[Middleware]:
        """Outermost first: the SERVER span, then what the gateway adds to it."""
        return [create_aiohttp_middleware(tracer_provider=self.provider), _annotate]

    def origin(self, inner: Origin) -> Origin:
        return TracedOrigin(inner, self.tracer)

    def flight(self, flight: ClusterFlight) -> ClusterFlight:
        """``cluster.lease_wait``: the wait for another replica's fetch, and how it
        ended (landed, missing, or fetch: this replica fetches after all)."""
        tracer = self.tracer
        wait = flight.wait

        async def traced_wait(key: str, local: Callable[[], Awaitable[Blob | None]]
                              ) -> Landed | None:
            with tracer.start_as_current_span("cluster.lease_wait") as span:
                landed = await wait(key, local)
                span.set_attribute("image_gateway.lease_wait", _outcome(landed))
                return landed

        flight.wait = traced_wait  # type: ignore[method-assign]
        return flight

    def pool(self, pool: TransformPool) -> TransformPool:
        tracer = self.tracer
        run = pool.run

        async def traced_run(fn: Callable[..., T], *args: Any) -> T:
            with tracer.start_as_current_span(
                    "transform", attributes={"image_gateway.transform": fn.__name__}):
                return await run(fn, *args)

        pool.run = traced_run  # type: ignore[method-assign,assignment]
        return pool


def _origin_only(url: URL) -> str:
    """The URL a client span records: scheme, host and port. A presigned URL's path
    holds the key and its query a signature; neither belongs in a trace."""
    return str(url.origin())


def _outcome(landed: Landed | None) -> str:
    if landed is None:
        return "fetch"  # gave up waiting, or the holder left no result
    return "missing" if landed.blob is None else "landed"


class TracedOrigin(OriginWrapper):
    """``origin.fetch``: one span around the fetch, retries and all; the HTTP request
    to S3 (aiohttp-client instrumentation) is its child and carries its traceparent."""

    def __init__(self, inner: Origin, tracer: trace.Tracer) -> None:
        super().__init__(inner)
        self._tracer = tracer

    async def fetch(self, image_id: str, if_none_match: str | None = None
                    ) -> Fetched | NotModified:
        attributes: dict[str, str | bool] = {
            "image_gateway.key_hash": key_hash(image_id),
            "image_gateway.revalidation": if_none_match is not None}
        with self._tracer.start_as_current_span("origin.fetch", attributes=attributes) as span:
            fetched = await self.inner.fetch(image_id, if_none_match)
            span.set_attribute("image_gateway.origin_result",
                               "not_modified" if isinstance(fetched, NotModified) else "ok")
            if isinstance(fetched, Fetched):
                span.set_attribute("image_gateway.bytes", len(fetched.body))
            return fetched


@web.middleware
async def _annotate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Inside the SERVER span: no raw path in it, the route template, the layer, the
    key's hash; the trace id for the access log line."""
    span = trace.get_current_span()
    if not span.is_recording():
        return await handler(request)
    context = span.get_span_context()
    request[TRACE_ID] = format(context.trace_id, "032x")
    match_info = request.match_info
    resource = match_info.route.resource if match_info is not None else None
    _name(span, request.method, resource.canonical if resource is not None else "unmatched")
    response = await handler(request)
    route = request.get(ROUTE)
    if route is not None:  # an /images/ route: the one the handler saw in the raw path
        _name(span, request.method, route)
    layer = request.get(ANSWER_LAYER)
    if layer is not None:
        span.set_attribute("image_gateway.cache", layer.value)
    key = request.get(IMAGE_KEY)
    if key is not None:
        span.set_attribute("image_gateway.key_hash", key_hash(key))
    return response


def _name(span: trace.Span, method: str, route: str) -> None:
    span.update_name(f"{method} {route}")
    span.set_attribute("http.route", route)
    recorded = getattr(span, "attributes", None) or {}
    for name in _URL_ATTRIBUTES:
        if name in recorded:
            span.set_attribute(name, "" if name == "url.query" else route)

