"""Optional signed image URLs: HMAC-SHA256 over the path (and query), key rotation.

A signed URL carries ``s=<signature>`` as its last query parameter; the
signature covers the path and every query parameter before it, so nothing can
be added or changed. Several keys may be valid at once (``id:secret`` pairs):
URLs are signed with the first, verified against all, so a key can be rotated
in without breaking URLs already handed out, and retired later.

    python -m gateway sign /images/abc.png    # prints the signed path
    python -m gateway sign --ttl 3600 /images/abc.png   # ... valid for an hour

A link may expire: ``exp=<unix time>`` before the signature is covered by it like
any parameter, and a request after that time is refused (403) however valid the
signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.config_checks import split_signing_key

if TYPE_CHECKING:  # the CLI signs without loading the server's libraries
    from multidict import MultiMapping

PARAM = "s"
EXPIRES = "exp"


def _digest(secret: bytes, message: str) -> str:
    mac = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


def parse_keys(keys: Sequence[str]) -> list[tuple[str, bytes]]:
    """(id, secret bytes) pairs; ValueError for a key not in the ``id:secret`` format."""
    return [(key_id, secret.encode()) for key_id, secret in map(split_signing_key, keys)]


class UrlSigner:
    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = parse_keys(keys)

    def sign(self, path_qs: str, expires_at: int | None = None) -> str:
        """``path_qs`` with the signature appended (made with the first key); with
        ``expires_at``, an ``exp`` parameter the signature covers comes first."""
        _, secret = self.keys[0]
        if expires_at is not None:
            path_qs = f"{path_qs}{'&' if '?' in path_qs else '?'}{EXPIRES}={int(expires_at)}"
        joiner = "&" if "?" in path_qs else "?"
        return f"{path_qs}{joiner}{PARAM}={_digest(secret, path_qs)}"

    def verify(self, raw_path_qs: str) -> bool:
        """Whether the URL as sent (raw, undecoded) carries a valid signature."""
        signed, sep, signature = raw_path_qs.rpartition(f"{PARAM}=")
        if not sep or not signed or signed[-1] not in "?&" or not signature:
            return False
        message = signed[:-1]
        return any(hmac.compare_digest(_digest(secret, message), signature)
                   for _, secret in self.keys)



def expired(query: MultiMapping[str], now: float) -> bool:
    """Whether a (verified) URL's ``exp`` has passed; one that is repeated or not a
    plain unix time counts as passed: the link is refused, never taken as eternal."""
    values = query.getall(EXPIRES, [])
    if not values:
        return False
    raw = values[0]
    if len(values) > 1 or not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        return True
    return int(raw) <= now
