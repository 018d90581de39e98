"""Turning a served entry into an HTTP response: headers, 304, HEAD, sendfile."""

from __future__ import annotations

import asyncio
import os
from typing import IO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from gateway.model import Blob, Entry, FileBlob, ObjectMeta
from gateway.web.conditional import is_not_modified

SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
_SENDFILE_CHUNK = 256 * 1024


def entity_headers(meta: ObjectMeta, layer: str, cache_control: str) -> dict[str, str]:
    headers = {
        "ETag": meta.etag,
        "Last-Modified": meta.http_date,
        "Cache-Control": cache_control,
        "X-Cache": layer,
        "X-Content-Type-Options": "nosniff",
    }
    if meta.content_type == "image/svg+xml":
        headers["Content-Security-Policy"] = SVG_POLICY
    return headers


def image_response(request: web.Request, entry: Entry, layer: str,
                   cache_control: str, send_timeout: float = 60.0,
                   vary: str | None = None) -> web.StreamResponse:
    meta = entry.meta
    headers = entity_headers(meta, layer, cache_control)
    if vary:  # on 304 too (RFC 9110 15.4.5)
        headers["Vary"] = vary
    if is_not_modified(request.headers.get("If-None-Match"),
                       request.headers.get("If-Modified-Since"), meta):
        _release(entry)
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = meta.content_type
    if isinstance(entry, Blob):
        if request.method == "HEAD":
            headers["Content-Length"] = str(meta.size)
            return web.Response(headers=headers)
        return web.Response(body=entry.body, headers=headers)
    if request.method == "HEAD":
        entry.file.close()
        headers["Content-Length"] = str(meta.size)
        return web.Response(headers=headers)
    return SendfileResponse(entry.file, entry.offset, meta.size, headers, send_timeout)


def _release(entry: Entry) -> None:
    if isinstance(entry, FileBlob):
        entry.file.close()


class SendfileResponse(web.StreamResponse):
    """Sends ``count`` bytes of an open file from ``offset`` with the kernel's sendfile."""

    def __init__(self, file: IO[bytes], offset: int, count: int,
                 headers: dict[str, str], send_timeout: float) -> None:
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
