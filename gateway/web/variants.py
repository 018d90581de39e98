"""HTTP side of variants: ``GET /images/{key}?w=&h=&fit=&format=&q=`` and uploads
(``PUT /admin/images/{key}``). See docs/variants.md."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import BadRequest, UploadsUnsupported
from gateway.model import Served, digest_of, etag_for
from gateway.variants.spec import VariantSpec
from gateway.web.keys import PARTS
from gateway.web.paths import admin_key
from gateway.web.responses import answer_cache_control, image_response


def variant_spec(request: web.Request) -> VariantSpec | None:
    """The negotiated variant the query asks for (400 for disallowed values); None
    for the original: no variant parameter at all (``?v=123`` cache-busters are
    ignored)."""
    query_string = request.query_string
    if not query_string:
        return None
    return request.app[PARTS].variants.spec_for(query_string, lambda: request.query,
                                                request.headers)


async def variant_image(request: web.Request, image_id: str | None, spec: VariantSpec, *,
                        user: bool = False) -> web.StreamResponse:
    """Answer with the variant ``spec`` (negotiated, as ``variant_spec`` gives it) of the
    object ``image_id`` (None: an unknown user -> the fallback)."""
    variants = request.app[PARTS].variants
    service = request.app[PARTS].service
    vary = spec.vary
    served: Served
    if spec.identity:  # e.g. format=auto for a client that takes neither AVIF nor WebP
        served = (service.fallback_for_unknown() if image_id is None
                  else await service.get(image_id))
    elif image_id is None:
        served = await variants.for_unknown(spec)
    else:
        served = variants.from_memory(image_id, spec) or await variants.get(image_id, spec)
    config = request.app[PARTS].config
    cache_control = answer_cache_control(
        served.layer, config.http,
        config.http.user_cache_control if user else config.http.cache_control)
    return image_response(request, served, cache_control, config.server.send_timeout,
                          vary=vary, extra=request.app[PARTS].image_headers)


async def upload_image(request: web.Request) -> web.Response:
    """PUT /admin/images/{key}: the body is the picture. It must be an image by
    its bytes; it is stored as ``transform.upload_size`` square (cover crop),
    metadata stripped, then every cached copy and variant is purged everywhere."""
    image_id = admin_key(request)
    uploader = request.config_dict[PARTS].uploader
    if uploader is None:
        raise UploadsUnsupported()
    body = await request.read()
    if not body:
        raise BadRequest("empty body: send the picture's bytes")
    stored = await request.config_dict[PARTS].variants.prepare_upload(body)
    await uploader.store(image_id, stored.body, stored.content_type)
    result = await request.config_dict[PARTS].invalidator.purge(image_id)
    return web.json_response({
        "success": True, "image_id": image_id, "content_type": stored.content_type,
        "width": stored.width, "height": stored.height, "size": len(stored.body),
        "etag": etag_for(digest_of(stored.body)), "version": result.version,
        "propagated": result.propagated})
