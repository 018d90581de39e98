"""Image work with Pillow: safe decode, resize, metadata stripping, encode; a bounded pool.

Everything here that touches pixels is synchronous and runs in ``TransformPool``
worker threads, never on the event loop.

Decoding (``render``)
    ``Image.open`` reads only the header. Its width x height is checked against
    ``max_pixels`` *before* ``load()`` decodes a single pixel, so a
    decompression bomb (a few hundred bytes announcing 50000 x 50000) costs
    nothing. Pillow's own guard is set to the same limit (``configure_pillow``):
    ``DecompressionBombError`` (and ``DecompressionBombWarning`` when warnings
    are errors) map to ``TooManyPixels`` too. Only the raster decoders we serve
    are enabled (JPEG, PNG, GIF, WebP, AVIF). Truncated or corrupt data is
    never "repaired" (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off): it is
    ``Undecodable``. Both are 422: the request is fine, the stored picture
    cannot be made into the variant (the original itself is still served
    byte-for-byte without parameters).

Animation
    Animated GIF, WebP, PNG (APNG) and AVIF give their first frame; a variant
    is always a still picture.

Orientation and metadata
    ``ImageOps.exif_transpose`` applies the EXIF orientation, then every bit of
    metadata is dropped: EXIF (GPS, camera, orientation), XMP, comments. An
    embedded ICC profile is used to convert the pixels to sRGB (LittleCMS) and
    then dropped as well, so colours stay right without shipping the profile.

Why threads, not processes
    Pillow releases the GIL in its decoders, resampling and encoders, which
    is where the time goes, so threads run truly in parallel. Threads take the
    (up to ``origin.max_bytes``) original without pickling it into another
    process, start instantly, and add no processes to multiply by
    ``server.workers``. The AVIF encoder is limited to one thread per job so
    that ``transform.workers`` really bounds the CPU in use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar, TypeVarTuple

from PIL import Image, ImageCms, ImageOps, features

from gateway.errors import Busy, TooManyPixels, Undecodable
from gateway.variants.shapes import (
    Geometry as Geometry,  # re-exported: callers know it here
    Output as Output,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: Decoders Pillow may use: the raster types the gateway serves, nothing exotic.
DECODERS: Final = ("JPEG", "PNG", "GIF", "WEBP", "AVIF")
#: Pillow's name for the source format -> our output format name.
_SOURCE_FORMATS: Final = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "GIF": "gif",
                          "WEBP": "webp", "AVIF": "avif"}
CONTENT_TYPES: Final = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
                        "webp": "image/webp", "avif": "image/avif"}


def available_formats() -> frozenset[str]:
    """Output formats this Pillow build can encode."""
    found = {"jpeg", "png", "gif"}
    if features.check("webp"):
        found.add("webp")
    if features.check("avif"):
        found.add("avif")
    return frozenset(found)


def configure_pillow(max_pixels: int) -> None:
    """Make Pillow's own decompression-bomb guard agree with ``transform.max_pixels``.

    Process-wide, like the limit itself: Pillow warns above MAX_IMAGE_PIXELS and
    raises above twice that; our header check refuses everything above it.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels


# -- what to make -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    content_type: str
    width: int
    height: int


Box = tuple[float, float, float, float]


def plan(source: tuple[int, int], geometry: Geometry) -> tuple[tuple[int, int], Box]:
    """(output size, crop box in source pixels) for a source of ``source`` size."""
    sw, sh = source
    w, h = geometry.width, geometry.height
    crop: Box = (0.0, 0.0, float(sw), float(sh))
    if w is None and h is None:
        return (sw, sh), crop
    if w is not None and h is not None:
        if geometry.fit == "cover":
            scale = max(w / sw, h / sh)
            cw, ch = min(w / scale, sw), min(h / scale, sh)
            left, top = (sw - cw) / 2, (sh - ch) / 2
            crop = (left, top, left + cw, top + ch)
        else:
            scale = min(w / sw, h / sh)
    elif w is not None:
        scale = w / sw
    else:
        assert h is not None
        scale = h / sh
    if not geometry.enlarge:
        scale = min(scale, 1.0)
    cw, ch = crop[2] - crop[0], crop[3] - crop[1]
    return (max(1, round(cw * scale)), max(1, round(ch * scale))), crop


# -- the work (runs in a worker thread) ---------------------------------------------


def render(data: bytes, geometry: Geometry, output: Output, max_pixels: int) -> Rendered:
    """Decode ``data`` (within ``max_pixels``), resize, strip metadata, encode."""
    work, source_format = resized(data, geometry, max_pixels)
    fmt = (_SOURCE_FORMATS.get(source_format, "png") if output.format == "original"
           else output.format)
    body = _encode(work, fmt, output.quality)
    return Rendered(body, CONTENT_TYPES[fmt], work.size[0], work.size[1])


def resized(data: bytes, geometry: Geometry, max_pixels: int) -> tuple[Image.Image, str]:
    """(the picture decoded within ``max_pixels``, upright, resized to ``geometry``,
    in sRGB as RGB or RGBA; the source's format)."""
    image, source_format, full = _decode(data, geometry, max_pixels)
    try:
        size, crop = plan(full, geometry)
        if size[0] * size[1] > max_pixels:
            raise TooManyPixels(f"output {size[0]}x{size[1]} is over transform.max_pixels")
        # The decoded picture may be smaller than ``full`` (JPEG DCT scaling).
        fx, fy = image.size[0] / full[0], image.size[1] / full[1]
        box = (crop[0] * fx, crop[1] * fy, crop[2] * fx, crop[3] * fy)
        icc = image.info.get("icc_profile")
        work = _working_mode(image)
        if work.size != size or box != (0, 0, *work.size):
            work = work.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
        work = _to_srgb(work, icc)
    except BaseException:
        image.close()
        raise
    if work is not image:  # else the caller holds the decoded picture itself
        image.close()
    return work, source_format


def normalise_upload(data: bytes, size: int, fmt: str, quality: int,
                     max_pixels: int) -> Rendered:
    """An upload as it is stored: verified, exactly ``size`` x ``size`` (cover), stripped."""
    _verify(data, max_pixels)
    return render(data, Geometry(size, size, "cover", enlarge=True),
                  Output(fmt, quality), max_pixels)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """The header only: nothing is decoded yet."""
    try:
        image = Image.open(io.BytesIO(data), formats=DECODERS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooManyPixels(str(exc)) from None
    except Exception as exc:  # Pillow raises many kinds on hostile headers
        raise Undecodable(f"not decodable: {type(exc).__name__}: {exc}") from None
    width, height = image.size
    if width < 1 or height < 1 or width * height > max_pixels:
        image.close()
        raise TooManyPixels(f"{width}x{height} is over transform.max_pixels ({max_pixels})")
    return image


def _verify(data: bytes, max_pixels: int) -> None:
    """Pillow's structural check (chunk CRCs for PNG) without decoding pixels."""
    image = _open(data, max_pixels)
    with image:
        try:
            image.verify()
        except Exception as exc:
            raise Undecodable(f"verify failed: {type(exc).__name__}: {exc}") from None


def _decode(data: bytes, geometry: Geometry,
            max_pixels: int) -> tuple[Image.Image, str, tuple[int, int]]:
    """(first frame upright, source format, upright full size).

    A JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling) when that
    still has more pixels than the output needs; the picture is then smaller
    than the full size returned with it.
    """
    image = _open(data, max_pixels)
    source_format = image.format or ""
    full: tuple[int, int] | None = None
    try:
        if source_format in ("JPEG", "MPO"):
            # JPEG's EXIF is read with the header, so the upright size is known now.
            swapped = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
            full = (image.size[1], image.size[0]) if swapped else image.size
            if geometry.width or geometry.height:
                _draft(image, full, swapped, geometry)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        image.close()
        raise TooManyPixels(str(exc)) from None
    except MemoryError:
        image.close()
        raise TooManyPixels("not enough memory to decode") from None
    except Exception as exc:  # truncated, corrupt: OSError, SyntaxError, ValueError, ...
        image.close()
        raise Undecodable(f"decode failed: {type(exc).__name__}: {exc}") from None
    return image, source_format, full or image.size


def _draft(image: Image.Image, full: tuple[int, int], swapped: bool,
           geometry: Geometry) -> None:
    (ow, oh), (left, top, right, bottom) = plan(full, geometry)
    # The whole picture at the scale its crop box is resized with, plus a margin.
    fx, fy = ow / max(right - left, 1e-9), oh / max(bottom - top, 1e-9)
    need = (int(full[0] * fx) + 1, int(full[1] * fy) + 1)
    if swapped:
        need = (need[1], need[0])
    sw, sh = image.size
    if need[0] < sw and need[1] < sh:
        image.draft(image.mode, need)


def _working_mode(image: Image.Image) -> Image.Image:
    """RGB or RGBA (L and LA kept: cheaper, converted at the end); palettes expanded."""
    mode = image.mode
    if mode in ("RGB", "RGBA", "L", "LA"):
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        return image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if mode == "CMYK":
        return image  # converted with its ICC profile (or plainly) after resizing
    return image.convert("RGBA" if image.has_transparency_data else "RGB")


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Pixels in sRGB, as RGB or RGBA, with no profile attached."""
    target = "RGBA" if image.mode in ("RGBA", "LA") else "RGB"
    if icc and image.mode in ("RGB", "RGBA", "CMYK"):
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, profile, _SRGB, outputMode=target)
            if converted is not None:
                image = converted
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            log.debug("ICC conversion skipped: %s", exc)
    if image.mode != target:
        image = image.convert(target)
    return image


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    # No metadata survives: whatever the decoder put in .info (exif, xmp,
    # icc_profile, comment, dpi) is dropped, and no encoder gets any of it.
    image.info = {}
    out = io.BytesIO()
    if fmt == "jpeg":
        if image.mode == "RGBA":
            flat = Image.new("RGB", image.size, (255, 255, 255))
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        image.save(out, "JPEG", quality=quality, optimize=True)
    elif fmt == "webp":
        image.save(out, "WEBP", quality=quality, method=4)
    elif fmt == "avif":
        image.save(out, "AVIF", quality=quality, speed=6, max_threads=1)
    elif fmt == "png":
        image.save(out, "PNG")
    elif fmt == "gif":
        image.save(out, "GIF")
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    return out.getvalue()


# -- the pool -------------------------------------------------------------------------


class TransformPool:
    """``workers`` threads and at most ``queue`` jobs waiting for one; beyond that,
    ``Busy`` (503 with Retry-After) at once instead of an ever longer wait."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.limit = workers + queue
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="transform")
        self._lock = threading.Lock()
        self._pending = 0  # submitted and not finished: running + waiting
        self.completed = 0
        self.rejected = 0
        self._closed = False

    @property
    def pending(self) -> int:
        return self._pending

    async def run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        with self._lock:
            if self._closed:
                raise Busy("transform pool is shut down")
            if self._pending >= self.limit:
                self.rejected += 1
                raise Busy(f"transform pool saturated ({self._pending} jobs)")
            self._pending += 1
        try:
            future = self._executor.submit(fn, *args)
        except RuntimeError:  # shut down in between
            with self._lock:
                self._pending -= 1
            raise Busy("transform pool is shut down") from None
        # Counted down when the job really ends, even if the awaiting task was cancelled.
        future.add_done_callback(self._finished)
        return await asyncio.wrap_future(future)

    def _finished(self, _future: concurrent.futures.Future[T]) -> None:
        with self._lock:
            self._pending -= 1
            self.completed += 1

    async def close(self) -> None:
        with self._lock:
            self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
