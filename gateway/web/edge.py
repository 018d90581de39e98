"""The edge of every route: one frame around each handler instead of a middleware chain.

aiohttp runs middlewares as a chain of coroutines, plus one of its own per app,
on every request of every route. Measured in-process (``python -m bench.inproc``)
that chain cost ~4.7 us of a ~40 us memory hit. So no app has middlewares: each
handler is wrapped once, when its route is added (``Routes``), by ``Edge``, which
does in one frame what the middlewares did, in this order:

    gates (rate limit, signature; each route names its own)
      -> handler
      -> errors as JSON answers (web/errors.py), never a traceback
      -> the request observed (web/observability.py: route, status, layer, latency)
      -> Server and nosniff on answers that are not an image's (those carry them)
    -> X-Request-Id on every answer (web/requestid.py)

A URL that no route matches reaches ``unmatched`` through a catch-all route added
last, so 404 and 405 are JSON answers observed like any other.

An ``Expect`` header is answered before the handler runs, by ``Edge.expect`` in place
of aiohttp's own handler (a text/plain 417 quoting the header, and a ``100 Continue``
to anyone, before any check): anything but ``100-continue`` is our JSON 417, and a
route's ``before_body`` gates (the admin token) run before the client is told to send
its body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.typedefs import Handler

from gateway.web.errors import SERVER, client_left, error_answer, error_response
from gateway.web.keys import ANSWER_LAYER, ROUTE
from gateway.web.observability import Observer
from gateway.web.requestid import HEADER as REQUEST_ID, request_id_of
from gateway.web.signing import UrlSigner, expired

#: A gate runs before the handler: an answer refuses the request, None lets it in.
Gate = Callable[[web.Request], web.StreamResponse | None]
#: Adds a route's own headers to the answers its handler did not make (errors, refusals).
Finish = Callable[[web.BaseRequest, web.StreamResponse], None]
#: What aiohttp calls when a request has an Expect header, before its handler.
ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]

UNMATCHED = "unmatched"


class Edge:
    def __init__(self, observer: Observer) -> None:
        self._observer = observer

    def __call__(self, handler: Handler, route: str, gates: Sequence[Gate] = (),
                 finish: Finish | None = None) -> Handler:
        """``handler`` with the edge around it; ``route`` is its label in the metrics
        (the handler may name a finer one in ``request[ROUTE]``); ``finish`` completes
        the answers made here (the image routes' CORS headers: a script on another
        origin may read why it was refused)."""
        observe = self._observer.observe
        observe_failure = self._observer.failure
        gates = tuple(gates)

        async def edge(request: web.Request) -> web.StreamResponse:
            start = perf_counter()
            try:
                for gate in gates:
                    refusal = gate(request)
                    if refusal is not None:
                        response = refusal
                        if finish is not None:
                            finish(request, refusal)
                        break
                else:
                    response = await handler(request)
            except asyncio.CancelledError:  # the client went away (nginx's 499)
                observe_failure(request.get(ROUTE, route), 499)
                raise
            except Exception as exc:
                if client_left(request, exc):  # nobody to answer: as if cancelled
                    observe_failure(request.get(ROUTE, route), 499)
                    return web.Response(status=400)  # never sent: the connection is gone
                answer = error_answer(request, exc)
                if answer is None:  # a redirect is an answer, not an error
                    observe_failure(request.get(ROUTE, route), getattr(exc, "status", 500))
                    raise
                response = answer  # error_answer recorded it as an ERROR answer
                if finish is not None:
                    finish(request, answer)
            layer = request.get(ANSWER_LAYER)
            headers = response.headers
            if layer is None:
                headers["Server"] = SERVER  # else aiohttp names itself and its version
                headers.setdefault("X-Content-Type-Options", "nosniff")
            if REQUEST_ID not in headers:  # an error answer has its own: its body quotes it
                headers[REQUEST_ID] = request_id_of(request.headers)
            observe(request, response, request.get(ROUTE, route), layer,
                    perf_counter() - start)
            return response

        return edge

    def expect(self, route: str, before_body: Sequence[Gate] = (),
               finish: Finish | None = None) -> ExpectHandler:
        """The answer to an ``Expect`` header (HTTP/1.1 only: 1.0 has none, RFC 9110
        10.1.1): None after ``100 Continue`` when every ``before_body`` gate lets the
        request in; else the refusal, or a 417 that quotes nothing of the header."""
        observe = self._observer.observe
        before_body = tuple(before_body)

        async def expect(request: web.Request) -> web.StreamResponse | None:
            if request.version != HttpVersion11:
                return None
            start = perf_counter()
            asked = ",".join(request.headers.getall(hdrs.EXPECT, ()))
            response: web.StreamResponse | None = None
            if asked.strip().lower() != "100-continue":
                response = error_response(417, "unsupported Expect header", request)
            for gate in before_body:
                if response is not None:
                    break
                response = gate(request)
            if response is None:
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.writer.output_size = 0  # the answer proper has not started
                return None
            if finish is not None:
                finish(request, response)
            # aiohttp sends this answer as it is: the edge never sees it.
            observe(request, response, request.get(ROUTE, route), None,
                    perf_counter() - start)
            return response

        return expect


def signature_check(signer: UrlSigner) -> Gate:
    """The gate of the image routes when signing is required: 403 unless the URL as
    sent (raw, undecoded) carries a valid signature."""

    def gate(request: web.Request) -> web.StreamResponse | None:
        if not signer.verify(request.raw_path):
            return error_response(403, "missing or invalid signature", request)
        if expired(request.query, time.time()):
            return error_response(403, "link expired", request)
        return None

    return gate


class Routes:
    """Adds routes to an app, each handler behind the edge, labelled by its pattern."""

    def __init__(self, app: web.Application, edge: Edge, gates: Sequence[Gate] = (),
                 label_prefix: str = "",
                 guard: Callable[[Handler], Handler] | None = None,
                 before_body: Sequence[Gate] = ()) -> None:
        """``before_body``: gates that must pass before a client that sent
        ``Expect: 100-continue`` is told to send its body (the guard checks them
        again: most clients send no Expect)."""
        self._app = app
        self._edge = edge
        self._gates = tuple(gates)
        self._before_body = tuple(before_body)
        self._label_prefix = label_prefix
        self._guard = guard

    def add(self, method: str, path: str, handler: Handler, *,
            gates: Sequence[Gate] | None = None, finish: Finish | None = None) -> None:
        """``gates`` replaces the routes' usual gates for this one route."""
        if self._guard is not None:
            handler = self._guard(handler)
        # the metrics label: the pattern without its regular expressions
        resource = self._app.router.add_resource(path)
        label = self._label_prefix + resource.canonical
        resource.add_route(method, self._edge(
            handler, label, self._gates if gates is None else gates, finish),
            expect_handler=self._edge.expect(label, self._before_body, finish))

    def get(self, path: str, handler: Handler, *, allow_head: bool = True,
            gates: Sequence[Gate] | None = None, finish: Finish | None = None) -> None:
        self.add("GET", path, handler, gates=gates, finish=finish)
        if allow_head:
            self.add("HEAD", path, handler, gates=gates, finish=finish)

    def post(self, path: str, handler: Handler) -> None:
        self.add("POST", path, handler)

    def put(self, path: str, handler: Handler) -> None:
        self.add("PUT", path, handler)

    def delete(self, path: str, handler: Handler) -> None:
        self.add("DELETE", path, handler)

    def catch_all(self) -> None:
        """Last: every URL no route of this app took answers 404 or 405 through the
        edge (a sub-app needs its own: aiohttp asks no other app once a sub-app's
        prefix matched)."""
        handler = unmatched if self._guard is None else self._guard(unmatched)
        self._app.router.add_route("*", "/{path:.*}", self._edge(
            handler, UNMATCHED, self._gates),
            expect_handler=self._edge.expect(UNMATCHED, self._before_body))


async def unmatched(request: web.Request) -> web.StreamResponse:
    """404, or 405 (with Allow) when another route takes the path with other methods.
    Only refused requests come here: asking every route again is cheap enough."""
    request[ROUTE] = UNMATCHED  # the label of what no route took (metrics, trace span)
    allowed: set[str] = set()
    own = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not own:
            match, methods = await resource.resolve(request)
            if match is None:
                allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))
    raise web.HTTPNotFound()
