"""Observing every request, and GET /metrics.

The edge (web/edge.py) times each request and hands the final answer, after
exceptions became JSON answers, to ``Observer``, which records its route and
status, and for image answers the layer (``Served.layer``, left on the request by
the code that made the response), the latency, the body bytes and the object key
(top images). Latency is until the response is ready to send: the transfer to the
client measures the client's network, not the cache (the access log's ``ms`` covers
the whole exchange).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.model import Layer
from gateway.observe.counters import Stats
from gateway.observe.prometheus import render_prometheus
from gateway.observe.recorder import Recorder
from gateway.web.accesslog import body_bytes
from gateway.web.keys import IMAGE_KEY, PARTS


class Observer:
    """Records each answer the edge made: its route and status, and for an image
    answer its layer, latency, body bytes and object key (the top images)."""

    def __init__(self, recorder: Recorder, stats: Stats) -> None:
        self._recorder = recorder
        self._stats = stats

    def failure(self, route: str, status: int) -> None:
        """A request that ended with no answer of ours (the client left: 499)."""
        self._recorder.request(route, status)

    def observe(self, request: web.BaseRequest, response: web.StreamResponse, route: str,
                layer: Layer | None, elapsed: float) -> None:
        recorder = self._recorder
        status = response.status
        recorder.request(route, status)
        if layer is None:
            return
        # An image answer: any served layer, or an error of the image (404, 5xx) --
        # not a malformed id (400) or a wrong method, which no cache could answer.
        if layer is not Layer.ERROR or ((status == 404 or status >= 500)
                                        and _is_image_route(route)):
            size = body_bytes(request, response)
            self._stats.bytes_served += size
            recorder.answer(layer, elapsed, size, request.get(IMAGE_KEY))


_image_routes: dict[str, bool] = {}


def _is_image_route(route: str) -> bool:
    known = _image_routes.get(route)
    if known is None:
        known = _image_routes[route] = (route.startswith("/images/")
                                        and not route.endswith("/url"))
    return known


async def metrics(request: web.Request) -> web.Response:
    aggregate = await request.config_dict[PARTS].hub.aggregate()
    live = sum(1 for w in aggregate.workers if w.live)
    body = render_prometheus(aggregate.totals, live)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST,
                                            "Cache-Control": "no-store"})
