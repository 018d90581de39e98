"""Thin handlers: parse the request, ask the service, shape the response."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.model import Served
from gateway.web.keys import IMAGE_KEY, PARTS, ROUTE, Parts
from gateway.web.paths import Route, image_path, image_route
from gateway.web.responses import answer_cache_control, image_response
from gateway.web.variants import variant_image, variant_spec


def images_handler(parts: Parts) -> Handler:
    """Every GET/HEAD under /images/: the route is decided on the raw path.

    A memory hit of an original (no query) is the hot path: a cached route, one
    dict lookup in the memory tier, no coroutine below this one."""
    service = parts.service
    http = parts.config.http
    usual = http.cache_control
    send_timeout = parts.config.server.send_timeout
    extra = parts.image_headers

    async def images(request: web.Request) -> web.StreamResponse:
        path = image_route(request.raw_path)
        route = path.route
        request[ROUTE] = route  # a str: Enum.value is a slow descriptor on this path
        if route is Route.OBJECT:
            key = path.name
            request[IMAGE_KEY] = key
            if request.query_string:
                return await _image(request, key)
            served = service.from_memory(key) or await service.beyond_memory(key)
            cache_control = answer_cache_control(served.layer, http, usual)
            return image_response(request, served, cache_control, send_timeout, extra=extra)
        if route is Route.USER:
            return await _user_image(request, path.name)
        if request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET"])
        return await _image_url(request, path.name)

    return images


async def _image(request: web.Request, key: str) -> web.StreamResponse:
    spec = variant_spec(request)  # issue 8: ?w=&h=&fit=&format=&q= (docs/variants.md)
    if spec is not None:
        return await variant_image(request, key, spec)
    parts = request.app[PARTS]
    served = await parts.service.get(key)
    config = parts.config
    cache_control = answer_cache_control(served.layer, config.http, config.http.cache_control)
    return image_response(request, served, cache_control, config.server.send_timeout,
                          extra=parts.image_headers)


async def _user_image(request: web.Request, user_id: str) -> web.StreamResponse:
    spec = variant_spec(request)
    service = request.app[PARTS].service
    key = await request.app[PARTS].aliases.resolve(user_id)
    if spec is not None:
        return await variant_image(request, key, spec, user=True)
    served = service.fallback_for_unknown() if key is None else await service.get(key)
    return _respond(request, served, request.app[PARTS].config.http.user_cache_control)


def _respond(request: web.Request, served: Served, cache_control: str) -> web.StreamResponse:
    parts = request.app[PARTS]
    cache_control = answer_cache_control(served.layer, parts.config.http, cache_control)
    return image_response(request, served, cache_control, parts.config.server.send_timeout,
                          extra=parts.image_headers)


async def _image_url(request: web.Request, key: str) -> web.Response:
    signed = await request.app[PARTS].service.url(key)
    if signed is None:  # an origin without presigned URLs: the stable URL is the URL
        url = str(request.url.with_path(image_path(key), encoded=True).with_query(None))
        expires_at = None
    else:
        url, expires_at = signed.url, int(signed.expires_at)
    response = web.json_response(
        {"success": True, "image_id": key, "url": url, "expires_at": expires_at},
        headers={"Cache-Control": "no-store", "X-Cache": "NONE"})
    request.app[PARTS].image_headers.apply(request, response)
    return response


async def preflight(request: web.Request) -> web.Response:
    """OPTIONS under /images/: a CORS preflight, answered from the settings alone."""
    return request.app[PARTS].image_headers.preflight(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    report = await request.app[PARTS].health.check()
    status = 503 if report["status"] == "draining" else 200
    return web.json_response(report, status=status, headers={"Cache-Control": "no-store"})
