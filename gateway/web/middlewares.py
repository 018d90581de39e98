"""Cross-cutting response rules: errors as JSON, never a traceback."""

from __future__ import annotations

import logging
from http import HTTPStatus

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.errors import Busy, GatewayError
from gateway.model import Layer
from gateway.web.keys import ANSWER_LAYER
from gateway.web.requestid import HEADER as REQUEST_ID
from gateway.web.requestid import request_id_of
from gateway.web.responses import SERVER
from gateway.web.signing import UrlSigner

log = logging.getLogger(__name__)

_HTTP_ANSWERS = {404: "not found", 405: "method not allowed",
                 413: "request body too large"}


def error_response(status: int, message: str, request: web.BaseRequest) -> web.Response:
    """The JSON error answer; its body and X-Request-Id name the request, so a user's
    report can be matched to the access log line."""
    request_id = request_id_of(request.headers)
    headers = {"Cache-Control": "no-store", "X-Cache": "ERROR",
               "X-Content-Type-Options": "nosniff", "Server": SERVER, REQUEST_ID: request_id}
    if status == 503:
        headers["Retry-After"] = "1"
    return web.json_response({"success": False, "error": message, "request_id": request_id},
                             status=status, headers=headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        if exc.status >= 500 and not isinstance(exc, Busy):
            log.warning("%s %s -> %d: %s", request.method, request.path, exc.status,
                        exc.detail)
        response = error_response(exc.status, exc.answer, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # a redirect is an answer, not an error
        # aiohttp's own (404 no route, 405, 413 body over client_max_size): its text
        # may quote the request, so the answer is a fixed message for the status.
        response = error_response(exc.status, _HTTP_ANSWERS.get(exc.status)
                                  or HTTPStatus(exc.status).phrase.lower(), request)
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "GET, HEAD")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(500, "internal error", request)
    request[ANSWER_LAYER] = Layer.ERROR
    return response


def require_signature(signer: UrlSigner) -> Middleware:
    """Refuse /images requests whose URL does not carry a valid signature."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/images/") and not signer.verify(request.raw_path):
            return error_response(403, "missing or invalid signature", request)
        return await handler(request)

    return check
