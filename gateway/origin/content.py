"""What an origin object really is: its label must be acceptable and its bytes
must look like an allowed image. We serve the type the bytes prove, never the
label alone, so an HTML page stored as ``image/png`` is refused, not served."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.errors import UnsupportedMedia
from gateway.model import Blob, make_meta

# Labels that say nothing about the type; S3 gives these to uploads without one.
_NEUTRAL_LABELS = frozenset({"", "application/octet-stream", "binary/octet-stream"})


#: How many leading bytes sniff() looks at: enough to judge an object by its start.
SNIFF_BYTES = 1024


def sniff(body: bytes) -> str | None:
    """The image type the leading bytes prove, or None."""
    head = body[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp" and _is_avif(head):
        return "image/avif"
    if _looks_like_svg(body[:SNIFF_BYTES]):
        return "image/svg+xml"
    return None


def _is_avif(head: bytes) -> bool:
    box_size = int.from_bytes(head[0:4], "big")
    brands = head[8:min(box_size, len(head))]
    return any(brands[i:i + 4] in (b"avif", b"avis") for i in range(0, len(brands) - 3, 4))


def _looks_like_svg(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not text.startswith((b"<svg", b"<?xml", b"<!--", b"<!doctype svg")):
        return False
    return b"<svg" in text


def media_type_of(label: str | None) -> str:
    """The bare media type of a Content-Type value; a list or junk gives a marker."""
    if label is None:
        return ""
    if "," in label:
        return "<list>"  # 'image/png, text/html' is a smuggling attempt, not a type
    return label.split(";", 1)[0].strip().lower()


def checked_type(body: bytes, label: str | None, allowed: frozenset[str]) -> str:
    """The Content-Type to serve ``body`` with; raises UnsupportedMedia."""
    labelled = media_type_of(label)
    if labelled not in _NEUTRAL_LABELS and labelled not in allowed:
        raise UnsupportedMedia(f"origin labelled the object {labelled!r}")
    actual = sniff(body)
    if actual is None or actual not in allowed:
        raise UnsupportedMedia(f"origin object bytes are {actual or 'not an image'}")
    return actual


def load_fallback(path: str, *, allowed: frozenset[str]) -> Blob:
    """Read the configured fallback picture once, at start-up: checked like origin
    bytes (an allowed image by its magic numbers)."""
    file = Path(path)
    body = file.read_bytes()
    content_type = checked_type(body, None, allowed)
    return Blob(make_meta(body, content_type, int(file.stat().st_mtime), time.time(),
                          float("inf")), body)
