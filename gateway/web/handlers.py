"""Thin handlers: parse the request, ask the service, shape the response."""

from __future__ import annotations

from aiohttp import web

from gateway.model import Served, validate_image_id, validate_user_id
from gateway.web.keys import PARTS
from gateway.web.responses import answer_cache_control, image_response
from gateway.web.variants import variant_image, variant_spec


async def get_image(request: web.Request) -> web.StreamResponse:
    image_id = validate_image_id(request.match_info["image_id"])
    spec = variant_spec(request)  # issue 8: ?w=&h=&fit=&format=&q= (docs/variants.md)
    if spec is not None:
        return await variant_image(request, image_id, spec)
    served = await request.app[PARTS].service.get(image_id)
    return _respond(request, served, request.app[PARTS].config.http.cache_control)


async def get_user_image(request: web.Request) -> web.StreamResponse:
    user_id = validate_user_id(request.match_info["user_id"])
    spec = variant_spec(request)
    service = request.app[PARTS].service
    image_id = await request.app[PARTS].aliases.resolve(user_id)
    if spec is not None:
        return await variant_image(request, image_id, spec, user=True)
    served = service.fallback_for_unknown() if image_id is None else await service.get(image_id)
    return _respond(request, served, request.app[PARTS].config.http.user_cache_control)


def _respond(request: web.Request, served: Served, cache_control: str) -> web.StreamResponse:
    config = request.app[PARTS].config
    cache_control = answer_cache_control(served.layer, config.http, cache_control)
    return image_response(request, served, cache_control, config.server.send_timeout)


async def get_image_url(request: web.Request) -> web.Response:
    image_id = validate_image_id(request.match_info["image_id"])
    signed = await request.app[PARTS].service.url(image_id)
    if signed is None:  # an origin without presigned URLs: the stable URL is the URL
        url, expires_at = str(request.url.with_path(f"/images/{image_id}")
                              .with_query(None)), None
    else:
        url, expires_at = signed.url, int(signed.expires_at)
    return web.json_response(
        {"success": True, "image_id": image_id, "url": url, "expires_at": expires_at},
        headers={"Cache-Control": "no-store", "X-Cache": "NONE"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    report = await request.app[PARTS].health.check()
    status = 503 if report["status"] == "draining" else 200
    return web.json_response(report, status=status, headers={"Cache-Control": "no-store"})
