"""Cross-cutting response rules: errors as JSON, never a traceback."""

from __future__ import annotations

import logging
import time
from http import HTTPStatus

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.errors import Busy, GatewayError
from gateway.model import Layer
from gateway.web.keys import ANSWER_LAYER, PARTS
from gateway.web.responses import SERVER
from gateway.web.signing import UrlSigner, expired

log = logging.getLogger(__name__)

_HTTP_ANSWERS = {404: "not found", 405: "method not allowed",
                 413: "request body too large"}


def error_response(status: int, message: str) -> web.Response:
    headers = {"Cache-Control": "no-store", "X-Cache": "ERROR",
               "X-Content-Type-Options": "nosniff", "Server": SERVER}
    if status == 503:
        headers["Retry-After"] = "1"
    return web.json_response({"success": False, "error": message}, status=status,
                             headers=headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        if exc.status >= 500 and not isinstance(exc, Busy):
            log.warning("%s %s -> %d: %s", request.method, request.path, exc.status,
                        exc.detail)
        response = error_response(exc.status, exc.answer)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # a redirect is an answer, not an error
        # aiohttp's own (404 no route, 405, 413 body over client_max_size): its text
        # may quote the request, so the answer is a fixed message for the status.
        response = error_response(exc.status, _HTTP_ANSWERS.get(exc.status)
                                  or HTTPStatus(exc.status).phrase.lower())
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "GET, HEAD")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(500, "internal error")
    request[ANSWER_LAYER] = Layer.ERROR
    if request.path.startswith("/images/"):  # a script elsewhere may read why (CORS)
        request.app[PARTS].image_headers.apply(request, response)
    return response


def require_signature(signer: UrlSigner) -> Middleware:
    """Refuse /images requests whose URL does not carry a valid signature."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        # A preflight carries no credentials and gets no picture: nothing to sign.
        if request.path.startswith("/images/") and request.method != "OPTIONS":
            if not signer.verify(request.raw_path):
                return error_response(403, "missing or invalid signature")
            if expired(request.query, time.time()):
                return error_response(403, "link expired")
        return await handler(request)

    return check
