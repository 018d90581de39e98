"""One contract for every origin: the local folder and S3 (moto over HTTP) answer the
same cases the same way."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from gateway.config import IMAGE_TYPES
from gateway.errors import NotFound, TooLarge, UnsupportedMedia
from gateway.observe.counters import Stats
from gateway.origin import Fetched, NotModified, Origin, Uploadable
from gateway.origin.local import LocalOrigin
from gateway.origin.presign import MemoryUrlStore
from gateway.origin.s3 import S3Origin
from tests.support.images import noise_png

MAX_BYTES = 20_000
ALLOWED = frozenset(IMAGE_TYPES)
Put = Callable[[str, bytes], None]


@contextlib.asynccontextmanager
async def local_origin(tmp_path: Path, _: Any) -> AsyncIterator[tuple[Origin, Put]]:
    def put(name: str, body: bytes) -> None:
        path = tmp_path.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)

    yield LocalOrigin(tmp_path, max_bytes=MAX_BYTES, allowed_types=ALLOWED), put


@contextlib.asynccontextmanager
async def s3_origin(_: Path, s3: Any) -> AsyncIterator[tuple[Origin, Put]]:
    def put(name: str, body: bytes) -> None:
        s3.put(name, body, content_type="application/octet-stream")

    config = AioConfig(signature_version="s3v4", s3={"addressing_style": "path"},
                       retries={"max_attempts": 1})
    async with get_session().create_client(
            "s3", endpoint_url=s3.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=config) as client, aiohttp.ClientSession() as http:
        yield S3Origin(client, http, MemoryUrlStore(Stats()), bucket=s3.bucket, prefix="",
                       expires=3600, url_ttl=3000, max_bytes=MAX_BYTES,
                       allowed_types=ALLOWED, timeout=aiohttp.ClientTimeout(total=5)), put


@pytest.fixture(params=[local_origin, s3_origin], ids=["local", "s3"])
async def origin(request, tmp_path, s3) -> AsyncIterator[tuple[Origin, Put]]:
    async with request.param(tmp_path, s3) as pair:
        yield pair


async def test_fetch_gives_checked_bytes_and_a_validator(origin):
    source, put = origin
    body = noise_png(1)
    put("a.png", body)
    fetched = await source.fetch("a.png")
    assert isinstance(fetched, Fetched)
    assert fetched.body == body
    assert fetched.content_type == "image/png"  # from the bytes, not the label
    assert fetched.origin_etag
    assert fetched.last_modified > 0


async def test_fetch_with_current_validator_is_not_modified(origin):
    source, put = origin
    put("b.png", noise_png(2))
    first = await source.fetch("b.png")
    assert isinstance(first, Fetched)
    assert isinstance(await source.fetch("b.png", first.origin_etag), NotModified)
    put("b.png", noise_png(3))
    changed = await source.fetch("b.png", first.origin_etag)
    assert isinstance(changed, Fetched) and changed.body == noise_png(3)


async def test_missing_object_is_not_found(origin):
    source, _ = origin
    with pytest.raises(NotFound):
        await source.fetch("missing.png")
    with pytest.raises(NotFound):
        await source.probe("missing.png")


async def test_probe_gives_size_and_validator(origin):
    source, put = origin
    body = noise_png(4)
    put("c.png", body)
    info = await source.probe("c.png")
    assert info.size == len(body)
    assert info.origin_etag
    fetched = await source.fetch("c.png")
    assert isinstance(fetched, Fetched)
    assert (info.origin_etag, info.last_modified) == (fetched.origin_etag,
                                                     fetched.last_modified)


@pytest.mark.parametrize("body", [b"<html><body>not a picture</body></html>",
                                  b"\x89PNG", b""])
async def test_non_image_bytes_refused(origin, body):
    source, put = origin
    put("page.png", body)
    with pytest.raises(UnsupportedMedia):
        await source.fetch("page.png")
    with pytest.raises(UnsupportedMedia):
        await source.probe("page.png")


async def test_object_over_max_bytes_refused(origin):
    source, put = origin
    put("big.png", noise_png(5, size=(100, 100)))  # ~30 KB of noise
    with pytest.raises(TooLarge):
        await source.fetch("big.png")
    with pytest.raises(TooLarge):
        await source.probe("big.png")


async def test_object_at_max_bytes_passes_the_probe(origin):
    source, put = origin
    body = noise_png(6, size=(80, 80))
    body += b"\0" * (MAX_BYTES - len(body))  # trailing bytes after IEND: still a PNG
    put("edge.png", body)
    assert (await source.probe("edge.png")).size == MAX_BYTES


@pytest.mark.parametrize("key", ["a/b/c.png", "sp ace/+%=?#&!'()*$^|.png", "日本/Кир/עב.png",
                                 "a..b/.../x.png", "user:1/url"])
async def test_nested_and_odd_keys(origin, key):
    source, put = origin
    put(key, noise_png(6))
    put(key.rsplit("/", 1)[0] + "/other.png", noise_png(7))
    fetched = await source.fetch(key)
    assert isinstance(fetched, Fetched) and fetched.body == noise_png(6)
    assert (await source.probe(key)).size == len(noise_png(6))
    with pytest.raises(NotFound):
        await source.fetch(key.upper() + "x")


async def test_store_then_fetch_a_nested_key(origin):
    source, _ = origin
    assert isinstance(source, Uploadable)
    await source.store("up/日本 a+b.png", noise_png(8), "image/png")
    fetched = await source.fetch("up/日本 a+b.png")
    assert isinstance(fetched, Fetched) and fetched.body == noise_png(8)


async def test_ping(origin):
    source, _ = origin
    assert await source.ping() is True
