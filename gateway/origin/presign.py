"""Presigned URLs: what one is (SignedUrl, its expiry), the UrlStore the S3 origin
keeps them in (the in-process one here; Redis's is cluster/urls.py), and
``StoredUrlCheck``: whether a stored URL is one this deployment would have signed
for that very key (same endpoint, bucket, key; SigV4, not expired). A store hands
every URL it did not write itself to that check; a URL that fails it is treated as
a miss, so no request leaves for a host, bucket or key that a shared store names.
"""

from __future__ import annotations

import re
import time
from calendar import timegm
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

from botocore.utils import percent_encode

from gateway.observe.counters import Stats

T = TypeVar("T")
V = TypeVar("V")

#: A stored object description back to what it says; ValueError (why) when it cannot.
KnownRead = Callable[[str], T]


@dataclass(frozen=True, slots=True)
class SignedUrl:
    url: str
    expires_at: float  # epoch seconds when the signature stops working


def expiry_of(url: str) -> float | None:
    """When a SigV4 presigned URL expires, read from its own query (X-Amz-Date + Expires)."""
    query = parse_qs(urlsplit(url).query)
    try:
        signed = time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
        return float(timegm(signed) + int(query["X-Amz-Expires"][0]))
    except (KeyError, ValueError, IndexError):
        return None


#: url -> None when it may be used, else what is wrong with it.
UrlCheck = Callable[[str], str | None]

_SIGV4 = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                    "X-Amz-SignedHeaders", "X-Amz-Signature"})
_SIGV4_OPTIONAL = frozenset({"X-Amz-Security-Token"})  # temporary credentials
# RFC 3986 characters only: no backslash, space or non-ASCII on which two URL
# parsers (this check's and the HTTP client's) could disagree about the host.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SECONDS = re.compile(r"[0-9]{1,7}")
_MAX_EXPIRES = 7 * 24 * 3600  # SigV4's limit; S3 answers 400, not 403, beyond it


class StoredUrlCheck:
    """Whether a presigned URL is one this deployment signs for a key: same scheme,
    host and port as the S3 client's endpoint (botocore's AWS endpoint when none is
    configured), path exactly ``/{bucket}/{key}`` as botocore encodes it (path
    style), only SigV4 query parameters, not expired."""

    def __init__(self, endpoint_url: str, bucket: str,
                 clock: Callable[[], float] = time.time) -> None:
        endpoint = urlsplit(endpoint_url)
        scheme = endpoint.scheme.lower()
        host = (endpoint.hostname or "").lower()
        if ":" in host:
            host = f"[{host}]"
        port = endpoint.port or _DEFAULT_PORTS.get(scheme)
        # Either spelling of the authority: with the port, or without a default one.
        self._origins = {f"{scheme}://{host}:{port}"}
        if port == _DEFAULT_PORTS.get(scheme):
            self._origins.add(f"{scheme}://{host}")
        self._path_head = f"{endpoint.path.rstrip('/')}/{bucket}/"
        self._clock = clock

    def problem(self, url: str, object_key: str) -> str | None:
        if not _URL_CHARS.fullmatch(url):
            return "not a plain URL"
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}".lower() not in self._origins:
            return "another endpoint"
        if parts.path != self._path_head + percent_encode(object_key, safe="/~"):
            return "another bucket or key"
        if parts.fragment:
            return "a fragment"
        query = parse_qs(parts.query, keep_blank_values=True)
        names = set(query)
        if (any(len(values) != 1 for values in query.values())
                or not _SIGV4 <= names <= _SIGV4 | _SIGV4_OPTIONAL
                or query["X-Amz-Algorithm"] != ["AWS4-HMAC-SHA256"]
                or not _SECONDS.fullmatch(query["X-Amz-Expires"][0])
                or not 0 < int(query["X-Amz-Expires"][0]) <= _MAX_EXPIRES):
            return "not a SigV4 presigned URL"
        expires_at = expiry_of(url)
        if expires_at is None or expires_at <= self._clock():
            return "expired"
        return None


class UrlStore(Protocol):
    async def get(self, image_id: str, check: UrlCheck) -> SignedUrl | None: ...

    async def put(self, image_id: str, signed: SignedUrl, ttl: int) -> None: ...

    async def get_known(self, image_id: str, read: KnownRead[T]) -> T | None:
        """What a probe learned about the object (see origin/known.py), if kept."""
        ...

    async def put_known(self, image_id: str, value: str, ttl: int) -> None: ...

    async def delete(self, image_id: str) -> None:
        """Forget the URL and what was learned with it (a purge, a refused URL)."""
        ...


class MemoryUrlStore:
    """For a single development process without Redis."""

    def __init__(self, stats: Stats) -> None:
        self._urls: dict[str, tuple[SignedUrl, float]] = {}
        self._known: dict[str, tuple[str, float]] = {}
        self._stats = stats

    async def get(self, image_id: str, check: UrlCheck) -> SignedUrl | None:
        # Nobody else writes here: what this process signed needs no check.
        return counted(self._stats, "store", _unexpired(self._urls, image_id))

    async def put(self, image_id: str, signed: SignedUrl, ttl: int) -> None:
        self._urls[image_id] = (signed, time.time() + ttl)

    async def get_known(self, image_id: str, read: KnownRead[T]) -> T | None:
        text = counted(self._stats, "known", _unexpired(self._known, image_id))
        return None if text is None else read(text)  # written by this process: it reads back

    async def put_known(self, image_id: str, value: str, ttl: int) -> None:
        self._known[image_id] = (value, time.time() + ttl)

    async def delete(self, image_id: str) -> None:
        self._urls.pop(image_id, None)
        self._known.pop(image_id, None)


def _unexpired(items: dict[str, tuple[V, float]], image_id: str) -> V | None:
    item = items.get(image_id)
    if item is None or item[1] <= time.time():
        items.pop(image_id, None)
        return None
    return item[0]


def counted(stats: Stats, what: Literal["store", "known"], found: V | None) -> V | None:
    """``found``, counted as a hit or a miss of a store's URLs (``url_store_*``) or of
    what probes learned (``url_known_*``): one place for both stores' counting."""
    hit = found is not None
    if what == "store":
        stats.url_store_hits += hit
        stats.url_store_misses += not hit
    else:
        stats.url_known_hits += hit
        stats.url_known_misses += not hit
    return found
