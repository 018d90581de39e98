"""The admin API under /admin/: bearer token, compared in constant time.

Mounted only when ``admin.token`` is set, so a deployment without a token has
no admin surface at all (404, not 401).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import BadRequest, GatewayError
from gateway.model import Layer, validate_key, validate_user_id
from gateway.web.edge import Gate, Routes
from gateway.web.errors import error_response
from gateway.web.keys import PARTS
from gateway.web.paths import admin_key
from gateway.web.variants import upload_image


def admin_check(token: str) -> Gate:
    """The bearer token, compared in constant time: a 401, or None to let it in."""
    expected = token.encode()

    def check(request: web.Request) -> web.StreamResponse | None:
        # The dashboard page holds no data; the calls it makes do.
        if request.method == "GET" and request.path.rstrip("/") == "/admin/dashboard":
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip().encode(),
                                                              expected):
            return None
        refusal = error_response(401, "unauthorized", request)
        refusal.headers["WWW-Authenticate"] = 'Bearer realm="image-gateway admin"'
        return refusal

    return check


def admin_guard(token: str) -> Callable[[Handler], Handler]:
    """Around each admin handler: the token (``admin_check``), and
    ``Cache-Control: no-store`` on every answer: stats, purge results and the
    dashboard are each true once. (Error answers are no-store already.)"""
    check = admin_check(token)

    def guard(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            refusal = check(request)
            if refusal is not None:
                return refusal
            response = await handler(request)
            response.headers["Cache-Control"] = "no-store"
            return response

        return guarded

    return guard


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError, RecursionError, LookupError):
        # RecursionError: "[[[[..." nested past the decoder's limit is no JSON we take;
        # LookupError: a charset Python has no text codec for ("bogus", "rot13").
        raise BadRequest("body must be JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


async def purge_image(request: web.Request) -> web.Response:
    image_id = admin_key(request)
    result = await request.config_dict[PARTS].invalidator.purge(image_id)
    return web.json_response({"success": True, "image_id": image_id,
                              "version": result.version, "propagated": result.propagated})


async def put_alias(request: web.Request) -> web.Response:
    user_id = validate_user_id(request.match_info["user_id"])
    data = await _json_body(request)
    image_id = data.get("image_id")
    if not isinstance(image_id, str):
        raise BadRequest("image_id must be a string")
    validate_key(image_id)
    propagated = await request.config_dict[PARTS].invalidator.set_alias(user_id, image_id)
    return web.json_response({"success": True, "user_id": user_id, "image_id": image_id,
                              "propagated": propagated})


async def delete_alias(request: web.Request) -> web.Response:
    user_id = validate_user_id(request.match_info["user_id"])
    propagated = await request.config_dict[PARTS].invalidator.delete_alias(user_id)
    return web.json_response({"success": True, "user_id": user_id,
                              "propagated": propagated})


async def prefetch(request: web.Request) -> web.Response:
    config = request.config_dict[PARTS].config.admin
    data = await _json_body(request)
    ids = data.get("image_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest("image_ids must be a list of strings")
    if len(ids) > config.prefetch_max:
        raise BadRequest(f"at most {config.prefetch_max} image_ids per call")
    unique = list(dict.fromkeys(validate_key(i) for i in ids))  # keys, not URL paths
    service = request.config_dict[PARTS].service
    gate = asyncio.Semaphore(config.prefetch_concurrency)
    counts = {"fetched": 0, "already_cached": 0, "missing": 0, "failed": 0}

    async def warm(image_id: str) -> None:
        async with gate:
            if await service.cached(image_id):
                counts["already_cached"] += 1
                return
            try:
                served = await service.get(image_id)
            except GatewayError:
                counts["failed"] += 1
                return
            served.entry.close()
            if served.layer is Layer.FALLBACK:
                counts["missing"] += 1
            else:
                counts["fetched"] += 1

    await asyncio.gather(*(warm(i) for i in unique))
    return web.json_response({"success": True, "requested": len(unique), **counts})


def add_routes(routes: Routes) -> None:
    # The key is read from the raw path (web/paths.py), whatever it holds.
    routes.delete(r"/images/{image_id:[\s\S]+}", purge_image)
    routes.put(r"/images/{image_id:[\s\S]+}", upload_image)
    routes.put("/users/{user_id}", put_alias)
    routes.delete("/users/{user_id}", delete_alias)
    routes.post("/prefetch", prefetch)
