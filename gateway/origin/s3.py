"""MinIO/S3 as the origin.

Bytes are fetched through presigned GET URLs with one shared aiohttp session;
the URLs are kept in the URL store (Redis) so that every replica reuses them.
This module is the one place where botocore and aiohttp client errors become
the project's own errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError
from yarl import URL

from gateway.errors import NotFound, OriginError, OriginTimeout, TooLarge, UnsupportedMedia
from gateway.model import MAX_KEY_BYTES, encode_key, validate_key
from gateway.origin import NOT_MODIFIED, Fetched, NotModified, ObjectInfo
from gateway.origin.content import SNIFF_BYTES, checked_type
from gateway.origin.headers import entity_tag, http_date
from gateway.origin.known import KnownCheck, encode
from gateway.origin.presign import SignedUrl, StoredUrlCheck, UrlStore
from gateway.tasks import BackgroundTasks

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
T = TypeVar("T")


class S3Origin:
    kind = "s3"

    def __init__(self, client: Any, http: aiohttp.ClientSession, store: UrlStore, *,
                 bucket: str, prefix: str, expires: int, url_ttl: int, max_bytes: int,
                 allowed_types: frozenset[str], timeout: aiohttp.ClientTimeout) -> None:
        self._client = client
        self._http = http
        self._store = store
        self.bucket = bucket
        self.prefix = prefix
        self.expires = expires
        self.url_ttl = url_ttl
        self.max_bytes = max_bytes
        self.allowed_types = allowed_types
        self._timeout = timeout
        self._resigning = BackgroundTasks("resign")

    def object_key(self, image_id: str) -> str:
        # Checked here too: whatever asks (a handler, an alias read from Redis), no
        # request leaves for a path the key rules refuse.
        key = f"{self.prefix}{validate_key(image_id)}"
        if len(key.encode()) > MAX_KEY_BYTES:  # the prefix made it longer than S3 allows
            raise NotFound()
        return key

    # -- presigned URLs -------------------------------------------------------------

    async def _presign(self, image_id: str) -> SignedUrl:
        key = self.object_key(image_id)
        url: str = await self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.expires)
        # Our own RFC 3986 encoding of the key: a URL naming anything else (a client
        # library that normalised the path) is never used.
        if not URL(url, encoded=True).raw_path.endswith(f"/{self.bucket}/{encode_key(key)}"):
            raise OriginError("presigned URL does not address the object's key")
        return SignedUrl(url, time.time() + self.expires)

    async def sign(self, image_id: str) -> SignedUrl:
        """A fresh presigned GET URL, stored for every replica to reuse."""
        signed = await self._presign(image_id)
        await self._store.put(image_id, signed, self.url_ttl)
        return signed

    @cached_property
    def _url_check(self) -> StoredUrlCheck:
        # The endpoint botocore really signs for: s3.endpoint, or AWS's for the region.
        return StoredUrlCheck(self._client.meta.endpoint_url, self.bucket)

    async def url(self, image_id: str) -> SignedUrl:
        stored = await self._stored(image_id)
        return stored if stored is not None else await self.sign(image_id)

    async def _stored(self, image_id: str) -> SignedUrl | None:
        key = self.object_key(image_id)
        stored = await self._store.get(image_id,
                                       lambda url: self._url_check.problem(url, key))
        if stored is not None and time.time() - (stored.expires_at - self.expires) \
                >= self.refresh_after:
            self._resign_soon(image_id)
        return stored

    @property
    def refresh_after(self) -> float:
        """Age at which a stored URL is re-signed in the background: before the store
        drops it (url_ttl), so under steady traffic no request waits for signing."""
        return self.url_ttl * 0.8

    def _resign_soon(self, image_id: str) -> None:
        self._resigning.spawn(self._resign(image_id), key=image_id)

    async def _resign(self, image_id: str) -> None:
        try:
            await self.sign(image_id)
        except Exception:  # the stored URL still works; the next request tries again
            log.warning("background re-signing of %s failed", image_id, exc_info=True)

    # -- bytes ------------------------------------------------------------------------

    async def fetch(self, image_id: str, if_none_match: str | None = None
                    ) -> Fetched | NotModified:
        headers = {"If-None-Match": if_none_match} if if_none_match else {}
        answer: tuple[Fetched | NotModified, SignedUrl] = await self._signed(
            image_id, lambda url: self._get(url, headers))
        return answer[0]

    @cached_property
    def _known_check(self) -> KnownCheck:
        return KnownCheck(self.max_bytes, self.allowed_types)

    async def probe(self, image_id: str) -> ObjectInfo:
        # What the last probe learned is kept as long as the URL it used: the old API
        # asks for the same objects on every page view.
        self.object_key(image_id)  # no store lookup for a key the rules refuse
        known = await self._store.get_known(image_id, self._known_check)
        if known is not None:
            return known
        info, signed = await self._signed(image_id, self._peek)
        left = self.url_ttl - (time.time() - (signed.expires_at - self.expires))
        if left >= 1:
            await self._store.put_known(image_id, encode(info), int(left))
        return info

    async def _signed(self, image_id: str, send: Callable[[str], Awaitable[T | _Refused]]
                      ) -> tuple[T, SignedUrl]:
        """``send`` to the object's presigned URL, mapping aiohttp's errors; the answer
        and the URL that got it."""
        stored = await self._stored(image_id)
        signed = stored if stored is not None else await self._presign(image_id)
        try:
            result = await send(signed.url)
            if isinstance(result, _Refused):
                # An expired URL, rotated credentials, or a stored URL someone else
                # wrote (bad signature or parameters): sign again, once.
                await self._store.delete(image_id)
                signed = await self._presign(image_id)
                stored = None
                result = await send(signed.url)
                if isinstance(result, _Refused):
                    raise OriginError(f"origin refused the URL ({result.status}) "
                                      "after re-signing")
        except TimeoutError:
            raise OriginTimeout() from None
        except aiohttp.ClientPayloadError:
            raise OriginError("origin body ended early", retryable=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise OriginError(f"origin unreachable: {type(exc).__name__}",
                              retryable=True) from None
        assert not isinstance(result, _Refused)
        if stored is None:
            # Kept only once the object proved to exist: a request for a missing id
            # must not leave a key in Redis behind it.
            await self._store.put(image_id, signed, self.url_ttl)
        return result, signed

    async def _get(self, url: str, headers: dict[str, str]
                   ) -> Fetched | NotModified | _Refused:
        # encoded=True: sent byte for byte as signed. Parsed plainly, yarl would remove
        # dot segments and decode escapes such as %21 or %27: another path, or one
        # that no longer matches its signature.
        async with self._http.get(URL(url, encoded=True), headers=headers,
                                  timeout=self._timeout,
                                  allow_redirects=False, auto_decompress=False) as resp:
            if resp.status == 304:
                return NOT_MODIFIED
            if resp.status == 404:
                raise NotFound()
            if resp.status in (400, 403):  # S3's answers to a bad presigned URL
                return _Refused(resp.status)
            if resp.status != 200:
                raise OriginError(f"origin answered {resp.status}",
                                  retryable=resp.status >= 500)
            if resp.content_length is not None and resp.content_length > self.max_bytes:
                raise TooLarge(f"origin object is {resp.content_length} bytes")
            body = await self._read_capped(resp)
            content_type = checked_type(body, resp.headers.get("Content-Type"),
                                        self.allowed_types)
            return Fetched(body, content_type, http_date(resp.headers.get("Last-Modified")),
                           entity_tag(resp.headers.get("ETag")))

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > self.max_bytes:
                raise TooLarge("origin body exceeded origin.max_bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- metadata -------------------------------------------------------------------

    async def _peek(self, url: str) -> ObjectInfo | _Refused:
        """One GET of the object's first bytes (a HEAD would show the label, not what
        the bytes are): its size, and whether fetch would serve it."""
        async with self._http.get(URL(url, encoded=True),  # byte for byte, as in _get
                                  headers={"Range": f"bytes=0-{SNIFF_BYTES - 1}"},
                                  timeout=self._timeout, allow_redirects=False,
                                  auto_decompress=False) as resp:
            if resp.status == 404:
                raise NotFound()
            if resp.status in (400, 403):  # S3's answers to a bad presigned URL
                return _Refused(resp.status)
            if resp.status == 416:  # no byte 0: an empty object
                raise UnsupportedMedia("origin object is empty")
            if resp.status not in (200, 206):
                raise OriginError(f"origin answered {resp.status}",
                                  retryable=resp.status >= 500)
            size = _object_size(resp)
            if size is None:
                raise OriginError("origin answered without the object's size")
            if size > self.max_bytes:
                raise TooLarge(f"origin object is {size} bytes")
            head = b""
            while len(head) < SNIFF_BYTES and (
                    chunk := await resp.content.read(SNIFF_BYTES - len(head))):
                head += chunk
            content_type = checked_type(head, resp.headers.get("Content-Type"),
                                        self.allowed_types)
            return ObjectInfo(size, http_date(resp.headers.get("Last-Modified")),
                              entity_tag(resp.headers.get("ETag")), content_type)

    async def store(self, image_id: str, body: bytes, content_type: str) -> None:
        """PUT the object (uploads through the admin API)."""
        key = self.object_key(image_id)
        try:
            await self._client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                          ContentType=content_type)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise OriginError(f"origin PUT failed: {code}") from None
        except (TimeoutError, BotoCoreError, aiohttp.ClientError) as exc:
            raise OriginError(f"origin unreachable: {type(exc).__name__}") from None

    async def ping(self) -> bool:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except (TimeoutError, ClientError, BotoCoreError, aiohttp.ClientError, OSError):
            return False
        return True

    async def close(self) -> None:
        # The client and session belong to create_app's cleanup context.
        await self._resigning.cancel_all()


@dataclass(frozen=True, slots=True)
class _Refused:
    status: int


def _object_size(resp: aiohttp.ClientResponse) -> int | None:
    """The whole object's size: after the '/' of a 206's Content-Range, or a 200's
    Content-Length (an origin that ignored the Range)."""
    if resp.status == 200:
        return resp.content_length
    total = resp.headers.get("Content-Range", "").rpartition("/")[2]
    return int(total) if total.isascii() and total.isdigit() else None

