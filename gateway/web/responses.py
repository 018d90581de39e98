"""Turning a served entry into an HTTP response: headers, 304, HEAD, sendfile."""

from __future__ import annotations

import asyncio
import functools
import os
from email.utils import formatdate
from typing import IO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from gateway.config import HttpConfig
from gateway.model import Blob, Layer, Served
from gateway.web.conditional import is_not_modified
from gateway.web.keys import ANSWER_LAYER
from gateway.web.requestid import HEADER as REQUEST_ID
from gateway.web.requestid import request_id_of

# aiohttp sets Server only when absent: ours names no versions for scanners to match.
SERVER = "image-gateway"
SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
_SENDFILE_CHUNK = 256 * 1024


# A hot picture is answered thousands of times a second with the same headers:
# build each set once (formatting the HTTP date alone costs microseconds). An entry
# is ~1.8 KB: 2048 of them (~3.5 MB) cover the hot set; cold pictures rebuild theirs.
@functools.lru_cache(maxsize=2048)
def _entity_headers(etag: str, last_modified: int, content_type: str, layer: str,
                    cache_control: str, vary: str | None
                    ) -> tuple[CIMultiDict[str], CIMultiDict[str]]:
    """The headers of a 304 and of a 200 (which adds Content-Type; aiohttp adds the
    length). Callers never change them: aiohttp copies them into each response."""
    headers = CIMultiDict({
        "ETag": etag,
        "Last-Modified": formatdate(last_modified, usegmt=True),
        "Cache-Control": cache_control,
        "X-Cache": layer,
        "X-Content-Type-Options": "nosniff",
        "Server": SERVER,
    })
    if content_type == "image/svg+xml":
        headers["Content-Security-Policy"] = SVG_POLICY
    if vary:  # on 304 too (RFC 9110 15.4.5)
        headers["Vary"] = vary
    full = headers.copy()
    full["Content-Type"] = content_type
    return headers, full


def answer_cache_control(layer: Layer, http: HttpConfig, usual: str) -> str:
    """The Cache-Control of an image answer: ``usual`` (the route's), unless the answer
    is the fallback (the image may appear any moment) or a stale copy (the origin
    failed; a fresh one should replace it soon)."""
    if layer is Layer.FALLBACK:
        return http.fallback_cache_control
    if layer is Layer.STALE:
        return http.stale_cache_control
    return usual


async def common_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, whoever made it (a handler, the router, a
    middleware), names no framework version, forbids sniffing and carries a request id
    (an error answer has its own already: its body quotes it)."""
    headers = response.headers
    headers["Server"] = SERVER  # aiohttp has set its own by now
    headers.setdefault("X-Content-Type-Options", "nosniff")
    if REQUEST_ID not in headers:
        headers[REQUEST_ID] = request_id_of(request.headers)


def image_response(request: web.Request, served: Served, cache_control: str,
                   send_timeout: float = 60.0, vary: str | None = None) -> web.StreamResponse:
    entry = served.entry
    meta = entry.meta
    request[ANSWER_LAYER] = served.layer
    not_modified, full = _entity_headers(meta.etag, meta.last_modified, meta.content_type,
                                         served.layer.value, cache_control, vary)
    request_headers = request.headers
    if is_not_modified(request_headers.get("If-None-Match"),
                       request_headers.get("If-Modified-Since"), meta):
        entry.close()
        return web.Response(status=304, headers=not_modified)
    if request.method == "HEAD":
        entry.close()
        response = web.Response(headers=full)
        response.headers["Content-Length"] = str(meta.size)
        return response
    if isinstance(entry, Blob):
        return web.Response(body=entry.body, headers=full)
    return SendfileResponse(entry.file, entry.offset, meta.size, full, send_timeout)


class SendfileResponse(web.StreamResponse):
    """Sends ``count`` bytes of an open file from ``offset`` with the kernel's sendfile."""

    def __init__(self, file: IO[bytes], offset: int, count: int,
                 headers: CIMultiDict[str], send_timeout: float) -> None:
        super().__init__(headers=headers)
        self._send_timeout = send_timeout
        self._file = file
        self._offset = offset
        self._count = count
        self.content_length = count

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            writer = await super().prepare(request)
            assert writer is not None
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("client went away")
            loop = asyncio.get_running_loop()
            # A client that stops reading must not hold the file and task forever.
            async with asyncio.timeout(self._send_timeout):
                try:
                    await loop.sendfile(transport, self._file, self._offset, self._count)
                except NotImplementedError:  # TLS transports, or no os.sendfile
                    await self._copy(writer)
            await super().write_eof()
            return writer
        finally:
            self._file.close()

    async def _copy(self, writer: AbstractStreamWriter) -> None:
        loop = asyncio.get_running_loop()
        fd = self._file.fileno()
        offset, left = self._offset, self._count
        while left > 0:
            chunk = await loop.run_in_executor(
                None, os.pread, fd, min(_SENDFILE_CHUNK, left), offset)
            if not chunk:
                raise ConnectionResetError("cached file shrank while sent")
            await writer.write(chunk)
            offset += len(chunk)
            left -= len(chunk)
