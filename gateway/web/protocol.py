"""aiohttp's own error answers, made to follow the gateway's rules.

A request that aiohttp's HTTP parser refuses (a malformed request line, a header
with a control character, a line over ``server.max_line_size``) never reaches the
app or its edge: ``RequestHandler.handle_error`` answers it, with a
text/plain body quoting the refused bytes back, aiohttp's own ``Server`` header,
and a logged traceback for every one. aiohttp offers no setting or signal for these
answers (aio-libs/aiohttp#3287), so the connections are made by a RequestHandler
whose ``handle_error`` answers like every other error of the gateway (JSON that
quotes nothing, ``no-store``, ``nosniff``, ``Server: image-gateway``), counts the
refusal, and logs a client's mistake as one WARNING line per minute at most.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadStatusLine, HttpProcessingError, LineTooLong

from gateway.observe.throttle import Throttled
from gateway.web.errors import error_response

log = logging.getLogger(__name__)

_client_mistakes = Throttled(log)


def _answer(status: int, exc: BaseException | None) -> str:
    """What went wrong, in words that quote nothing of the request."""
    if status >= 500:
        return "timed out" if status == 504 else "internal error"
    if isinstance(exc, LineTooLong):
        return "request line or header too long"
    if isinstance(exc, BadStatusLine):
        return "malformed request line"
    return "malformed request"


class GatewayRequestHandler(web.RequestHandler):
    """aiohttp's connection handler with the gateway's error answers."""

    __slots__ = ("_on_refused",)

    def __init__(self, manager: web.Server, *, on_refused: Callable[[], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._on_refused = on_refused

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError) and status < 500:
            # The parser's message quotes the request: only its kind goes to the log.
            _client_mistakes.log(logging.WARNING, "refused a malformed request from %s (%s)",
                                 request.remote, type(exc).__name__)
            if self._on_refused is not None:
                self._on_refused()
        else:
            self.log_exception("Error handling request from %s", request.remote,
                               exc_info=exc)
        if request.writer.output_size > 0:
            # Part of an answer is out: nothing sensible can follow it on this connection.
            raise ConnectionError("response already started; cannot send an error answer")
        response = error_response(status, _answer(status, exc), request)
        response.force_close()
        return response


class GatewayServer(web.Server):
    """aiohttp's protocol factory, making GatewayRequestHandler connections."""

    def __call__(self) -> web.RequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, **self._kwargs)


def answer_protocol_errors(runner: web.AppRunner) -> None:
    """Make the connections of a set-up ``runner`` answer protocol errors the gateway's
    way. Application._make_handler builds a plain web.Server; this turns it into a
    GatewayServer, the same object with one method replaced (its state untouched).
    Call it after ``runner.setup()`` and before any site starts; extra keyword
    arguments given to the AppRunner (``on_refused``) reach GatewayRequestHandler."""
    server = runner.server
    if server is None or type(server) is not web.Server:
        raise RuntimeError("answer_protocol_errors needs a set-up AppRunner's own Server")
    server.__class__ = GatewayServer
