"""Conditional requests (RFC 9110 section 13): If-None-Match before If-Modified-Since."""

from __future__ import annotations

import re
from email.utils import parsedate_to_datetime

from gateway.model import ObjectMeta

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE ; etagc = %x21 / %x23-7E / obs-text
_ETAG = re.compile(r'\s*(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


def parse_etags(header: str) -> list[str] | None:
    """The opaque tags (quotes kept, weakness dropped) of a list; None if malformed."""
    tags: list[str] = []
    pos = 0
    header = header.strip()
    while pos < len(header):
        match = _ETAG.match(header, pos)
        if match is None or match.end() == pos:
            return None
        tags.append(match.group(1))
        pos = match.end()
    return tags or None


def none_match(header: str, etag: str) -> bool:
    """If-None-Match is false (i.e. answer 304) when any listed tag weakly matches."""
    if header.strip() == "*":
        return True
    tags = parse_etags(header)
    if tags is None:
        return False  # a malformed header never turns a 200 into a 304
    opaque = etag[2:] if etag.startswith("W/") else etag
    return opaque in tags


def modified_since(header: str, last_modified: int) -> bool | None:
    """Whether the object changed after the date; None when the date is unusable."""
    try:
        since = parsedate_to_datetime(header)
        if since.tzinfo is None:
            return None  # HTTP dates are always GMT; a zone-less date is not one
        stamp = since.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        # A client's date the calendar cannot hold (year 99999999999) is no date.
        return None
    return last_modified > stamp


def is_not_modified(if_none_match: str | None, if_modified_since: str | None,
                    meta: ObjectMeta) -> bool:
    if if_none_match is not None:
        return none_match(if_none_match, meta.etag)
    if if_modified_since is not None:
        return modified_since(if_modified_since, meta.last_modified) is False
    return False
