"""Seed a folder with sample pictures: ``python -m gateway.samples DIR``.

``make run`` uses it so the embedded ``local`` origin (``origin.root``, by default
``var/samples``) has something to serve on a bare machine. The pictures are drawn
here with a tiny PNG encoder (zlib + struct) because the runtime carries no image
library; the bytes are the same on every run, so files that are already in place
are left alone.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

DEFAULT_DIR = "var/samples"
AVATAR_SIZE = 96
ASSET = Path(__file__).parent / "assets" / "default_pfp.png"

RGB = tuple[int, int, int]

# name -> (background, figure) colours of the generated avatars
AVATARS: dict[str, tuple[RGB, RGB]] = {
    "alice": ((254, 202, 202), (185, 28, 28)),
    "bob": ((191, 219, 254), (29, 78, 216)),
    "carol": ((187, 247, 208), (21, 128, 61)),
    "dave": ((254, 240, 138), (161, 98, 7)),
    "erin": ((233, 213, 255), (109, 40, 217)),
    "frank": ((165, 243, 252), (14, 116, 144)),
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(width: int, height: int, rows: Sequence[bytes]) -> bytes:
    """An 8-bit RGB PNG from ``height`` rows of ``3 * width`` bytes each."""
    if width <= 0 or height <= 0 or len(rows) != height:
        raise ValueError("encode_png: need height rows and a positive size")
    if any(len(row) != 3 * width for row in rows):
        raise ValueError("encode_png: every row must hold 3 * width bytes")
    # colour type 2 = truecolour, 8 bits a sample, no interlace
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 (None) on every row
    return (
        _PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def avatar(background: RGB, figure: RGB, size: int = AVATAR_SIZE) -> bytes:
    """A head-and-shoulders silhouette in ``figure`` on ``background``, as PNG."""
    bg, fg = bytes(background), bytes(figure)
    head_x, head_y, head_r = size / 2, size * 0.40, size * 0.18
    body_x, body_y = size / 2, size * 0.92
    body_rx, body_ry = size * 0.32, size * 0.28
    rows = []
    for y in range(size):
        row = bytearray()
        for x in range(size):
            px, py = x + 0.5, y + 0.5
            in_head = (px - head_x) ** 2 + (py - head_y) ** 2 <= head_r**2
            in_body = ((px - body_x) / body_rx) ** 2 + ((py - body_y) / body_ry) ** 2 <= 1
            row += fg if in_head or in_body else bg
        rows.append(bytes(row))
    return encode_png(size, size, rows)


def sample_images() -> dict[str, bytes]:
    """File name -> bytes of every sample picture."""
    images = {"default_pfp.png": ASSET.read_bytes()}
    for name, (background, figure) in AVATARS.items():
        images[f"{name}.png"] = avatar(background, figure)
    return images


def write_samples(directory: str | os.PathLike[str]) -> tuple[int, int]:
    """Write the samples into ``directory``; returns (written, total).

    A file that already holds the same bytes is skipped; any other is replaced
    atomically (temporary file + rename), so a running gateway never reads half
    a picture.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    images = sample_images()
    written = 0
    for name, data in images.items():
        path = target / name
        try:
            if path.read_bytes() == data:
                continue
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written += 1
    return written, len(images)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.samples",
        description="Write a few sample pictures for the local origin.",
    )
    parser.add_argument(
        "directory", nargs="?", default=DEFAULT_DIR,
        help=f"folder to fill (created if missing; default {DEFAULT_DIR})",
    )
    args = parser.parse_args(argv)
    try:
        written, total = write_samples(args.directory)
    except OSError as exc:
        print(f"samples: cannot write to {args.directory}: {exc}", file=sys.stderr)
        return 1
    print(f"samples: wrote {written} of {total} images to {args.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
