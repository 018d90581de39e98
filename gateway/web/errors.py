"""Errors as JSON answers, never a traceback (the edge turns every exception into one)."""

from __future__ import annotations

import logging
from http import HTTPStatus

from aiohttp import web

from gateway.errors import Busy, GatewayError
from gateway.model import Layer
from gateway.observe.throttle import Throttled
from gateway.web.keys import ANSWER_LAYER
from gateway.web.requestid import HEADER as REQUEST_ID, request_id_of

log = logging.getLogger(__name__)

# aiohttp sets Server only when absent: ours names no versions for scanners to match.
SERVER = "image-gateway"

_client_gone = Throttled(log)

_HTTP_ANSWERS = {404: "not found", 405: "method not allowed",
                 413: "request body too large"}


def error_response(status: int, message: str, request: web.BaseRequest) -> web.Response:
    """The JSON error answer; its body and X-Request-Id name the request, so a user's
    report can be matched to the access log line. Recorded on the request as an
    ERROR answer, as image_response records its layer."""
    request[ANSWER_LAYER] = Layer.ERROR
    request_id = request_id_of(request.headers)
    headers = {"Cache-Control": "no-store", "X-Cache": "ERROR",
               "X-Content-Type-Options": "nosniff", "Server": SERVER, REQUEST_ID: request_id}
    if status == 503:
        headers["Retry-After"] = "1"
    return web.json_response({"success": False, "error": message, "request_id": request_id},
                             status=status, headers=headers)


def client_left(request: web.BaseRequest, exc: Exception) -> bool:
    """Whether ``exc`` is the client's connection ending under the handler (an upload
    cut off mid-body): its doing, not an error of ours, so one INFO line (a minute at
    most), no traceback, and nobody to answer."""
    transport = request.transport
    if not isinstance(exc, ConnectionError) or (transport is not None
                                                and not transport.is_closing()):
        return False
    _client_gone.log(logging.INFO, "%s %s: the client went away (%s)", request.method,
                     request.path, type(exc).__name__)
    return True


def error_answer(request: web.BaseRequest, exc: Exception) -> web.Response | None:
    """The JSON answer for what a handler raised; None for a redirect (not an error:
    the caller raises it on)."""
    if isinstance(exc, GatewayError):
        if exc.status >= 500 and not isinstance(exc, Busy) and not exc.quiet:
            log.warning("%s %s -> %d: %s", request.method, request.path, exc.status,
                        exc.detail)
        return error_response(exc.status, exc.answer, request)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        # aiohttp's own (404 no route, 405, 413 body over client_max_size): its text
        # may quote the request, so the answer is a fixed message for the status.
        response = error_response(exc.status, _HTTP_ANSWERS.get(exc.status)
                                  or HTTPStatus(exc.status).phrase.lower(), request)
        if exc.status == 405:
            response.headers["Allow"] = exc.headers.get("Allow", "GET, HEAD")
        return response
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal error", request)
