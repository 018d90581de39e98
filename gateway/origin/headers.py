"""What an origin says about an object, checked like a client's input: a date no
calendar holds or an entity tag no grammar allows is dropped, never a 500.

The dates end up in ``Last-Modified`` (``formatdate`` refuses years past 9999) and
the entity tags in the next ``If-None-Match`` sent to the origin (visible ASCII only).
"""

from __future__ import annotations

import re
import time
from email.utils import parsedate_to_datetime

#: What S3 and MinIO send: a quoted (maybe weak) entity tag of visible ASCII.
ENTITY_TAG = re.compile(r'(W/)?"[\x21\x23-\x7e]{1,200}"')
#: The first second an HTTP date cannot show (year 10000).
END_OF_DATES = 253_402_300_800


def entity_tag(value: str | None) -> str | None:
    """``value`` when it is an entity tag we can send back; else None (no conditional
    request: the object is fetched whole, as if the origin had sent none)."""
    if value is None or not ENTITY_TAG.fullmatch(value):
        return None
    return value


def epoch(seconds: float) -> int:
    """``seconds`` since the epoch as an HTTP date can show it; now when it cannot."""
    if 0 <= seconds < END_OF_DATES:
        return int(seconds)
    return int(time.time())


def http_date(value: str | None) -> int:
    """The seconds of an HTTP date header; now when it is absent or no date."""
    if not value:
        return int(time.time())
    try:
        # OverflowError: a year or offset past what a C int or a datetime holds.
        return epoch(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, OverflowError, IndexError):
        return int(time.time())
