"""Observing every request, GET /metrics, and wiring the stats/dashboard routes.

``install_observability(app, admin)`` is the one call create_app makes:

- a middleware, outermost, times each request and records its route and status,
  and for image answers the layer (X-Cache), the latency, the body bytes and the
  image id (top images). It sees the final response, after the error middleware
  turned exceptions into JSON answers. Latency is until the response is ready to
  send: the transfer to the client measures the client's network, not the cache
  (the access log's ``ms`` covers the whole exchange);
- the service's origin is wrapped in a TimedOrigin (origin fetch latency by result);
- GET /metrics: Prometheus text, every worker added up (gateway/statshub.py);
- with an admin sub-app: /admin/stats, /admin/stats/reset, /admin/cache/clear and
  /admin/dashboard.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from time import perf_counter

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.observe.counters import Stats
from gateway.observe.hub import StatsHub
from gateway.observe.metrics import Recorder, TimedOrigin, render_prometheus
from gateway.observe.workerdir import SHARED_DIR_ENV
from gateway.service import Layer
from gateway.web import dashboard, stats_view
from gateway.web.accesslog import body_bytes
from gateway.web.keys import REDIS_HEALTH, SERVICE, STATS, VARIANTS
from gateway.web.stats_view import HUB, clear_caches

RECORDER = web.AppKey("recorder", Recorder)

_LAYERS = frozenset(layer.value for layer in Layer)
_UNMATCHED = "unmatched"


def _route(request: web.BaseRequest) -> str:
    """The route's pattern (``/images/{image_id}``): bounded label values."""
    match_info = getattr(request, "match_info", None)
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else _UNMATCHED


_image_routes: dict[str, bool] = {}


def _is_image_route(route: str) -> bool:
    known = _image_routes.get(route)
    if known is None:
        known = _image_routes[route] = (route.startswith("/images/")
                                        and not route.endswith("/url"))
    return known


def observe(recorder: Recorder, stats: Stats) -> Middleware:
    @web.middleware
    async def observing(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            recorder.request(_route(request), exc.status)
            raise
        except asyncio.CancelledError:
            recorder.request(_route(request), 499)  # the client went away (nginx's 499)
            raise
        except Exception:
            recorder.request(_route(request), 500)
            raise
        elapsed = perf_counter() - start
        route = _route(request)
        status = response.status
        recorder.request(route, status)
        layer = response.headers.get("X-Cache")
        if layer is None:
            return response
        # An image answer: any served layer, or an error of the image (404, 5xx) --
        # not a malformed id (400) or a wrong method, which no cache could answer.
        if layer in _LAYERS or (layer == "ERROR" and (status == 404 or status >= 500)
                                and _is_image_route(route)):
            size = body_bytes(request, response)
            stats.bytes_served += size
            recorder.answer(layer, elapsed, size, request.match_info.get("image_id"))
        return response

    return observing


async def metrics(request: web.Request) -> web.Response:
    aggregate = await request.config_dict[HUB].aggregate()
    live = sum(1 for w in aggregate.workers if w.live)
    body = render_prometheus(aggregate.totals, live)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                            "Cache-Control": "no-store"})


def install_observability(app: web.Application, admin: web.Application | None) -> None:
    """Metrics, stats and dashboard for an app built by create_app (before it freezes)."""
    service = app[SERVICE]
    stats = app[STATS]
    recorder = Recorder()
    if not isinstance(service.origin, TimedOrigin):
        service.origin = TimedOrigin(service.origin, recorder)

    async def clear() -> None:
        await clear_caches(service)

    variants = app.get(VARIANTS)

    def variant_figures() -> tuple[dict[str, float], dict[str, float]]:
        if variants is None:
            return {}, {}
        counters: dict[str, float] = {f"variants.{name}": value
                                      for name, value in vars(variants.stats).items()}
        counters["variants.pool_completed"] = variants.pool.completed
        counters["variants.pool_rejected"] = variants.pool.rejected
        return counters, {"variants.pool_pending": variants.pool.pending}

    hub = StatsHub(stats=stats, recorder=recorder, service=service,
                   redis_health=app.get(REDIS_HEALTH),
                   shared_dir=os.environ.get(SHARED_DIR_ENV) or None, on_clear=clear,
                   extra=variant_figures)
    app[RECORDER] = recorder
    app[HUB] = hub

    async def run_hub(_: web.Application) -> AsyncIterator[None]:
        await hub.start()
        yield
        await hub.close()

    app.cleanup_ctx.append(run_hub)
    app.middlewares.insert(0, observe(recorder, stats))
    app.router.add_get("/metrics", metrics, allow_head=False)
    if admin is not None:
        stats_view.add_routes(admin)
        dashboard.add_routes(admin)
