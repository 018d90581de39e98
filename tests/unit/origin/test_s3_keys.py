"""S3Origin's side of object keys: a presigned URL must address exactly the key, and a
key the prefix makes too long for S3 is missing without any request. (The real
encoding against moto is in tests/integration/test_object_keys.py.)"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from gateway.errors import BadRequest, NotFound, OriginError
from gateway.model import MAX_KEY_BYTES
from gateway.observe.counters import Stats
from gateway.origin.presign import MemoryUrlStore
from gateway.origin.s3 import S3Origin

QUERY = "?X-Amz-Date=20300101T000000Z&X-Amz-Expires=3600&X-Amz-Signature=ab"


class Signer:
    """Stands in for botocore's presigner: answers a URL we choose, counts calls."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.calls = 0

    async def generate_presigned_url(self, operation: str, Params: dict[str, Any],
                                     ExpiresIn: int) -> str:
        self.calls += 1
        return f"http://s3.test{self.path}{QUERY}"


def origin(signer: Signer, prefix: str = "") -> tuple[S3Origin, MemoryUrlStore]:
    store = MemoryUrlStore(Stats())
    return S3Origin(signer, None, store, bucket="bkt", prefix=prefix,
                    expires=3600, url_ttl=3000, max_bytes=1000, allowed_types=frozenset(),
                    timeout=aiohttp.ClientTimeout(total=1)), store


async def test_url_addressing_the_key_is_kept():
    source, store = origin(Signer("/bkt/p/a%20b%2B%3D.png"), prefix="p/")
    signed = await source.sign("a b+=.png")
    assert signed.url.startswith("http://s3.test/bkt/p/a%20b%2B%3D.png?")
    assert await store.get("a b+=.png", lambda url: None) == signed


@pytest.mark.parametrize("path", ["/bkt/b.png", "/bkt/x/b.png/", "/other/x/b.png",
                                  "/bkt/x%2Fb.png", "/bkt/x/b%2epng"])
async def test_url_addressing_anything_else_is_refused_and_not_stored(path):
    source, store = origin(Signer(path))
    with pytest.raises(OriginError):
        await source.sign("x/b.png")
    assert await store.get("x/b.png", lambda url: None) is None


@pytest.mark.parametrize("key", ["../x.png", "a//b", "a/./b", "a\x00b", ""])
async def test_keys_outside_the_rules_are_never_signed(key):
    signer = Signer("/unused")
    source, _ = origin(signer)
    with pytest.raises(BadRequest):
        await source.fetch(key)
    with pytest.raises(BadRequest):
        await source.probe(key)
    assert signer.calls == 0


async def test_key_made_too_long_by_the_prefix_is_missing_without_a_request():
    signer = Signer("/unused")
    source, _ = origin(signer, prefix="pictures/")
    with pytest.raises(NotFound):
        await source.fetch("x" * (MAX_KEY_BYTES - len("pictures/") + 1))
    assert signer.calls == 0
