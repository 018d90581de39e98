"""gateway.variants.transform: geometry, decode limits, orientation, metadata, encoders, pool."""

from __future__ import annotations

import asyncio
import io
import random
import resource
import struct
import threading
import zlib

import pytest
from PIL import Image, ImageCms

from gateway.errors import Busy, NotAnImage, TooManyPixels, Undecodable
from gateway.variants.transform import (
    Geometry,
    Output,
    TransformPool,
    available_formats,
    normalise_upload,
    plan,
    render,
)

MAX = 25_000_000
PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF", "gif": "GIF"}


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def picture(size=(600, 400), color=(200, 30, 40), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def noise(size=(600, 400), seed=0) -> Image.Image:
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def decode(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR is patched to announce width x height (CRC fixed)."""
    body = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    # signature (8) + length (4) + b"IHDR" (4): width and height follow
    assert body[12:16] == b"IHDR"
    body[16:24] = struct.pack(">II", width, height)
    body[29:33] = struct.pack(">I", zlib.crc32(bytes(body[12:29])))
    return bytes(body)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- geometry ---------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "geometry", "size"), [
    ((600, 400), Geometry(64, 64, "cover"), (64, 64)),
    ((600, 400), Geometry(64, 64, "contain"), (64, 43)),
    ((600, 400), Geometry(96, None), (96, 64)),
    ((600, 400), Geometry(None, 100), (150, 100)),
    ((600, 400), Geometry(256, 128, "cover"), (256, 128)),
    ((600, 400), Geometry(None, None), (600, 400)),
    # never more pixels than the source: the box shrinks, its aspect ratio kept
    ((100, 100), Geometry(256, 128, "cover"), (100, 50)),
    ((100, 100), Geometry(512, 512, "contain"), (100, 100)),
    ((100, 100), Geometry(512, None), (100, 100)),
    # unless enlarging is allowed
    ((100, 100), Geometry(256, 128, "cover", enlarge=True), (256, 128)),
    ((100, 50), Geometry(512, 512, "contain", enlarge=True), (512, 256)),
])
def test_plan_sizes(source, geometry, size) -> None:
    assert plan(source, geometry)[0] == size


def test_cover_crops_the_centre() -> None:
    _size, box = plan((600, 400), Geometry(64, 64, "cover"))
    assert box == (100, 0, 500, 400)


# -- formats and sizes ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "avif"])
@pytest.mark.parametrize("source", ["JPEG", "PNG", "GIF", "WEBP", "AVIF"])
def test_every_source_into_every_format(source, fmt) -> None:
    data = encode(picture(), source)
    rendered = render(data, Geometry(64, 64, "cover"), Output(fmt, 80), MAX)
    out = decode(rendered.body)
    assert out.format == PIL_FORMATS[fmt]
    assert out.size == (64, 64) == (rendered.width, rendered.height)
    assert rendered.content_type == f"image/{fmt}"
    assert out.convert("RGB").getpixel((32, 32)) == pytest.approx((200, 30, 40), abs=12)


@pytest.mark.parametrize(("source", "fmt"), [("JPEG", "JPEG"), ("PNG", "PNG"), ("GIF", "GIF"),
                                             ("WEBP", "WEBP"), ("AVIF", "AVIF")])
def test_original_format_is_kept(source, fmt) -> None:
    rendered = render(encode(picture(), source), Geometry(48, None), Output("original", 80), MAX)
    assert decode(rendered.body).format == fmt
    assert decode(rendered.body).size == (48, 32)


def test_quality_changes_lossy_output() -> None:
    data = encode(noise(), "PNG")
    low = render(data, Geometry(256, 256), Output("webp", 50), MAX).body
    high = render(data, Geometry(256, 256), Output("webp", 90), MAX).body
    assert len(low) < len(high)


def test_output_is_deterministic() -> None:
    data = encode(noise(), "PNG")
    for fmt in ("jpeg", "png", "webp", "avif"):
        one = render(data, Geometry(64, 64), Output(fmt, 80), MAX).body
        two = render(data, Geometry(64, 64), Output(fmt, 80), MAX).body
        assert one == two, fmt


def test_transparency_kept_where_the_format_has_it_and_flattened_on_white_for_jpeg() -> None:
    data = encode(Image.new("RGBA", (100, 100), (0, 0, 255, 0)), "PNG")
    webp = decode(render(data, Geometry(32, 32), Output("webp", 80), MAX).body)
    assert webp.mode == "RGBA" and webp.getpixel((5, 5))[3] == 0
    jpeg = decode(render(data, Geometry(32, 32), Output("jpeg", 80), MAX).body)
    assert jpeg.mode == "RGB" and jpeg.getpixel((5, 5)) == pytest.approx((255, 255, 255), abs=3)


def test_palette_and_sixteen_bit_sources() -> None:
    pal = picture().convert("P")
    assert decode(render(encode(pal, "PNG"), Geometry(32, 32), Output("png", 80),
                         MAX).body).mode == "RGB"
    deep = Image.new("I;16", (64, 64), 40000)
    out = decode(render(encode(deep, "PNG"), Geometry(32, 32), Output("png", 80), MAX).body)
    assert out.getpixel((3, 3)) == (156, 156, 156)


def test_large_jpeg_is_scaled_while_decoded_and_still_exact() -> None:
    data = encode(noise((3000, 2000)), "JPEG", quality=85)
    rendered = render(data, Geometry(64, None), Output("webp", 80), MAX)
    assert decode(rendered.body).size == (64, 43)


# -- orientation and metadata -------------------------------------------------------------


def exif_with_gps(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Camera Maker"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (52.0, 31.0, 12.0)
    return exif


def test_exif_orientation_is_applied_and_every_metadata_stripped() -> None:
    # 600x400 stored, orientation 6 (rotate 90 CW): upright it is 400x600.
    source = Image.new("RGB", (600, 400), (0, 0, 255))
    source.paste((255, 0, 0), (0, 0, 300, 400))  # left half red: on top once upright
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(source, "JPEG", exif=exif_with_gps(6).tobytes(), icc_profile=icc,
                  comment=b"secret")
    for fmt in ("jpeg", "png", "webp", "avif"):
        out = decode(render(data, Geometry(100, None), Output(fmt, 90), MAX).body)
        assert out.size == (100, 150), fmt
        r, _g, b = out.convert("RGB").getpixel((50, 20))
        assert r > 200 and b < 60, fmt  # red on top
        assert not out.getexif(), fmt
        assert not {"exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "comment"} & set(out.info)


def test_original_format_without_resize_is_still_stripped() -> None:
    data = encode(picture(), "JPEG", exif=exif_with_gps(1).tobytes())
    rendered = render(data, Geometry(), Output("original", 80), MAX)
    out = decode(rendered.body)
    assert out.format == "JPEG" and not out.getexif()


def test_icc_profile_is_applied_then_dropped() -> None:
    # Only an sRGB profile can be built without shipping a profile file: the
    # conversion is then an identity, so the colours must come through unchanged
    # while the profile itself is gone.
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for fmt in ("PNG", "JPEG"):
        data = encode(picture(), fmt, icc_profile=srgb)
        for out_fmt in ("png", "avif", "webp"):
            out = decode(render(data, Geometry(32, 32), Output(out_fmt, 90), MAX).body)
            assert "icc_profile" not in out.info or not out.info["icc_profile"]
            assert out.convert("RGB").getpixel((5, 5)) == pytest.approx((200, 30, 40), abs=8)


# -- animation --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_sources_give_their_first_frame(fmt) -> None:
    frames = [Image.new("RGB", (80, 80), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100,
                  loop=0, **({"lossless": True} if fmt == "WEBP" else {}))
    assert Image.open(io.BytesIO(data)).n_frames == 3
    for out_fmt in ("original", "webp", "png"):
        out = decode(render(data, Geometry(32, 32), Output(out_fmt, 90), MAX).body)
        assert getattr(out, "n_frames", 1) == 1
        assert out.convert("RGB").getpixel((16, 16)) == pytest.approx((255, 0, 0), abs=6)


# -- hostile input ------------------------------------------------------------------------


def test_pixel_bomb_is_refused_from_its_header_without_decoding() -> None:
    bomb = png_claiming(50_000, 50_000)
    assert len(bomb) < 100
    before = peak_rss_mib()
    for _ in range(5):
        with pytest.raises(TooManyPixels) as info:
            render(bomb, Geometry(64, 64), Output("webp", 80), MAX)
        assert info.value.status == 422
    # 50000 x 50000 RGB would be 7 GiB: nothing of the kind was allocated.
    assert peak_rss_mib() - before < 50


def test_pixel_limit_is_the_configured_one() -> None:
    data = encode(picture((200, 200)), "PNG")  # 40000 pixels
    with pytest.raises(TooManyPixels):
        render(data, Geometry(32, 32), Output("png", 80), 39_999)
    assert render(data, Geometry(32, 32), Output("png", 80), 40_000).width == 32


def test_enlarged_output_is_bounded_too() -> None:
    data = encode(picture((1, 100)), "PNG")
    with pytest.raises(TooManyPixels):
        render(data, Geometry(512, None, enlarge=True), Output("png", 80), 1_000_000)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_truncated_image_is_undecodable(fmt) -> None:
    data = encode(noise((200, 200)), fmt)
    with pytest.raises(Undecodable) as info:
        render(data[: len(data) // 2], Geometry(64, 64), Output("png", 80), MAX)
    assert info.value.status == 422


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
                                  b"<svg xmlns='http://www.w3.org/2000/svg'/>"])
def test_garbage_is_undecodable(data) -> None:
    with pytest.raises(Undecodable):
        render(data, Geometry(64, 64), Output("png", 80), MAX)


# -- uploads -------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "fmt"), [((300, 200), "JPEG"), ((50, 40), "PNG"),
                                           ((128, 128), "WEBP")])
def test_upload_is_normalised_to_the_stored_square(size, fmt) -> None:
    data = encode(picture(size), fmt, **({"exif": exif_with_gps(1).tobytes()}
                                         if fmt == "JPEG" else {}))
    rendered = normalise_upload(data, 128, "original", 90, MAX)
    out = decode(rendered.body)
    assert out.size == (128, 128) and out.format == fmt and not out.getexif()


def test_upload_with_bad_png_checksum_is_refused() -> None:
    data = bytearray(encode(noise((64, 64)), "PNG"))
    data[-20] ^= 0xFF  # inside the last IDAT: its CRC no longer matches
    with pytest.raises(Undecodable):
        normalise_upload(bytes(data), 128, "original", 90, MAX)


def test_not_an_image_error_is_415() -> None:
    assert NotAnImage.status == 415


def test_this_build_encodes_avif_and_webp() -> None:
    # Documented in docs/variants.md: AVIF is offered because Pillow has it here.
    assert {"avif", "webp", "jpeg", "png"} <= available_formats()


# -- the pool --------------------------------------------------------------------------------


async def test_pool_bounds_pending_jobs_and_recovers() -> None:
    pool = TransformPool(workers=1, queue=1)
    gate = threading.Event()
    try:
        running = asyncio.ensure_future(pool.run(gate.wait, 5))
        queued = asyncio.ensure_future(pool.run(gate.wait, 5))
        await asyncio.sleep(0)
        assert pool.pending == 2
        with pytest.raises(Busy) as info:
            await pool.run(gate.wait, 5)
        assert info.value.status == 503
        assert pool.rejected == 1
        gate.set()
        assert await running is True and await queued is True
        assert pool.pending == 0
        assert await pool.run(sum, [1, 2]) == 3
    finally:
        gate.set()
        await pool.close()


async def test_pool_counts_a_job_until_it_really_ends_even_if_its_waiter_is_cancelled() -> None:
    pool = TransformPool(workers=1, queue=0)
    gate = threading.Event()
    try:
        waiter = asyncio.ensure_future(pool.run(gate.wait, 5))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.sleep(0.01)
        with pytest.raises(Busy):  # the worker is still busy with it
            await pool.run(sum, [1])
        gate.set()
        for _ in range(100):
            if pool.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert await pool.run(sum, [1]) == 1
    finally:
        gate.set()
        await pool.close()


async def test_pool_errors_reach_the_caller_and_free_the_slot() -> None:
    pool = TransformPool(workers=1, queue=0)
    try:
        with pytest.raises(Undecodable):
            await pool.run(render, b"junk", Geometry(32, 32), Output("png", 80), MAX)
        assert pool.pending == 0
    finally:
        await pool.close()
    with pytest.raises(Busy):
        await pool.run(sum, [1])
