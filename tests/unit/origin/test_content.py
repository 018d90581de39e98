import io

import pytest
from PIL import Image

from gateway.config import IMAGE_TYPES, SVG_TYPE
from gateway.errors import UnsupportedMedia
from gateway.origin.content import checked_type, media_type_of, sniff

ALLOWED = frozenset(IMAGE_TYPES)


def encode(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                           ("GIF", "image/gif"), ("WEBP", "image/webp")])
def test_sniffs_real_images(fmt, mime):
    assert sniff(encode(fmt)) == mime


def test_sniffs_avif_brand():
    head = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf"
    assert sniff(head) == "image/avif"


def test_svg_refused_unless_allowed():
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>'
    with pytest.raises(UnsupportedMedia):
        checked_type(svg, "image/svg+xml", ALLOWED)
    assert checked_type(svg, "image/svg+xml", ALLOWED | {SVG_TYPE}) == SVG_TYPE


@pytest.mark.parametrize("label", ["text/html", "image/png, text/html", "application/json",
                                   "text/html; charset=utf-8", "image/svg+xml"])
def test_bad_labels_refused_even_with_image_bytes(label):
    with pytest.raises(UnsupportedMedia):
        checked_type(encode("PNG"), label, ALLOWED)


def test_html_labelled_png_refused():
    with pytest.raises(UnsupportedMedia):
        checked_type(b"<html><script>alert(1)</script></html>", "image/png", ALLOWED)


@pytest.mark.parametrize("label", [None, "", "application/octet-stream",
                                   "binary/octet-stream", "image/jpeg", "IMAGE/PNG; q=1"])
def test_served_type_is_what_bytes_prove(label):
    assert checked_type(encode("PNG"), label, ALLOWED) == "image/png"


def test_media_type_of():
    assert media_type_of("Image/PNG ; charset=x") == "image/png"
    assert media_type_of("image/png,text/html") == "<list>"
