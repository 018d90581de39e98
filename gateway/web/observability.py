"""Observing every request, and GET /metrics.

The ``observe`` middleware, outermost, times each request and records its route
and status, and for image answers the layer (``Served.layer``, left on the request
by the code that made the response), the latency, the body bytes and the object key
(top images). It sees the final response, after the error middleware turned
exceptions into JSON answers. Latency is until the response is ready to send: the
transfer to the client measures the client's network, not the cache (the access
log's ``ms`` covers the whole exchange).
"""

from __future__ import annotations

import asyncio
from time import perf_counter

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.model import Layer
from gateway.observe.counters import Stats
from gateway.observe.prometheus import render_prometheus
from gateway.observe.recorder import Recorder
from gateway.web.accesslog import body_bytes
from gateway.web.keys import ANSWER_LAYER, IMAGE_KEY, PARTS, ROUTE

_UNMATCHED = "unmatched"


def _route(request: web.BaseRequest) -> str:
    """The route's pattern (``/images/{image_id}``): bounded label values. Under
    /images/ the handler names it (web/paths.py): one aiohttp route serves three."""
    named: str | None = request.get(ROUTE)
    if named is not None:
        return named
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
        layer = request.get(ANSWER_LAYER)
        if layer is None:
            return response
        # An image answer: any served layer, or an error of the image (404, 5xx) --
        # not a malformed id (400) or a wrong method, which no cache could answer.
        if layer is not Layer.ERROR or ((status == 404 or status >= 500)
                                        and _is_image_route(route)):
            size = body_bytes(request, response)
            stats.bytes_served += size
            recorder.answer(layer.value, elapsed, size, request.get(IMAGE_KEY))
        return response

    return observing


async def metrics(request: web.Request) -> web.Response:
    aggregate = await request.config_dict[PARTS].hub.aggregate()
    live = sum(1 for w in aggregate.workers if w.live)
    body = render_prometheus(aggregate.totals, live)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                            "Cache-Control": "no-store"})
