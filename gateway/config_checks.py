"""The bounds of one setting, for gateway/config.py's fields: ``checked(8080,
tcp_port)`` puts the checks in the field's metadata, and one walk there applies them.

A check takes one value (each item of a list setting) and returns what is wrong with
it, without the setting's name, or None when it is fine. Like config.py, this module
imports nothing from gateway.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

ASSETS = Path(__file__).parent / "assets"


def split_signing_key(item: str) -> tuple[str, str]:
    """``id:secret`` -> (id, secret); ValueError for anything else.

    The format is defined here, not in web/signing.py, because this module is the leaf
    both import: the start refuses a bad signing.keys entry with the setting's name,
    and a UrlSigner built by hand refuses it by the very same rule.
    """
    key_id, sep, secret = item.partition(":")
    if not sep or not key_id or len(secret) < 16:
        raise ValueError("each key is 'id:secret' with a secret of 16+ characters")
    return key_id, secret


def resolve_fallback(name: str) -> Path | None:
    """The fallback picture: a path as given, else one of the bundled assets."""
    for candidate in (Path(name), ASSETS / name):
        if candidate.is_file() and os.access(candidate, os.R_OK):
            return candidate
    return None


Check = Callable[[Any], str | None]
T = TypeVar("T")
CHECKS = "checks"


def checked(default: T, *checks: Check, secret: bool = False) -> T:
    """A field with its default and its checks; a secret one is left out of repr()."""
    return field(default=default, repr=not secret, metadata={CHECKS: checks})


def rule(test: Callable[[Any], object], complaint: str) -> Check:
    """A check from a test and the complaint, a template in which {v} is the value."""
    return lambda value: None if test(value) else complaint.format(v=value)


def optional(check: Check) -> Check:
    """``check``, except that an empty value (the setting left unset) passes."""
    return lambda value: check(value) if value else None


def at_least(low: float) -> Check:
    return rule(lambda v: v >= low, f"{{v}} must be at least {low}")


def between(low: int, high: int) -> Check:
    return rule(lambda v: low <= v <= high, f"{{v}} must be in {low}-{high}")


def one_of(*allowed: str) -> Check:
    return rule(lambda v: v in allowed, f"{{v!r}} is not one of {', '.join(allowed)}")


def matches(pattern: str, complaint: str) -> Check:
    return rule(lambda v: re.fullmatch(pattern, v), "{v!r} " + complaint)


def url(*schemes: str, secret: bool = False) -> Check:
    def check(value: str) -> str | None:
        shown = "(value not shown)" if secret else repr(value)
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises on a bad port
        except ValueError:
            return f"{shown} is not a URL"
        if parts.scheme not in schemes:
            return f"{shown} must be a {'/'.join(schemes)} URL"
        if parts.scheme != "unix" and not parts.hostname:
            return f"{shown} has no host"
        return None
    return check


positive = rule(lambda v: v > 0, "{v} must be greater than 0")
fraction = rule(lambda v: 0 <= v < 1, "{v} must be in [0, 1)")
tcp_port = rule(lambda v: 0 <= v <= 65535, "{v} is not a TCP port (0-65535)")
not_empty = rule(bool, "must not be empty")
header_value = rule(lambda v: v and not any(ord(c) < 0x20 for c in v),
                    "{v!r} is not a usable header value")
readable_file = rule(resolve_fallback, "{v!r} is not a readable file")
readable_path = rule(lambda v: os.access(v, os.R_OK) and Path(v).is_file(),
                     "{v!r} is not a readable file")
host_port = matches(r"[^\s:]+:\d{1,5}|\[[0-9A-Fa-f:]+\]:\d{1,5}", "is not host:port")
admin_token = rule(lambda v: len(v) >= 16, "must be at least 16 characters (value not shown)")
cluster_secret = rule(lambda v: len(v) >= 32,
                      "must be at least 32 characters (value not shown)")
cors_origin = matches(r"\*|https?://([A-Za-z0-9.-]+|\[[0-9a-fA-F:.]+\])(:\d{1,5})?",
                      "is not '*' or an origin (scheme://host[:port], no path)")


def ip_network(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"{value!r} is not an IP network"
    return None


def signing_key(value: str) -> str | None:
    try:
        split_signing_key(value)
    except ValueError as exc:
        return f"{exc} (values not shown)"
    return None
