"""S3Origin reading bodies over real HTTP: a chunked or lying body is cut at the limit."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from gateway.config import IMAGE_TYPES
from gateway.errors import OriginError, TooLarge
from gateway.observe.counters import Stats
from gateway.origin.presign import MemoryUrlStore
from gateway.origin.s3 import S3Origin
from tests.support.images import noise_png

BODY = noise_png(1, size=(40, 40))  # ~4.8 KB


async def chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for i in range(0, len(BODY), 512):
        await response.write(BODY[i:i + 512])
    await response.write_eof()
    return response


@pytest.fixture
async def origin(aiohttp_server):
    app = web.Application()
    app.router.add_get("/chunked.png", chunked)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as http:
        def make(max_bytes: int) -> tuple[S3Origin, str]:
            s3 = S3Origin(None, http, MemoryUrlStore(Stats()), bucket="b", prefix="",
                          expires=3600, url_ttl=3000, max_bytes=max_bytes,
                          allowed_types=frozenset(IMAGE_TYPES),
                          timeout=aiohttp.ClientTimeout(total=5))
            return s3, str(server.make_url("/chunked.png"))

        yield make


async def test_chunked_body_over_limit_is_refused(origin):
    s3, url = origin(max_bytes=len(BODY) - 1)
    with pytest.raises(TooLarge):
        await s3._get(url, {})


async def test_chunked_body_within_limit_is_read_whole(origin):
    s3, url = origin(max_bytes=len(BODY))
    fetched = await s3._get(url, {})
    assert fetched.body == BODY
    assert issubclass(TooLarge, OriginError)
