"""Seed a folder with sample pictures: ``python tools/make_samples.py [DIR]``.

``make run`` uses it so the embedded ``local`` origin (``origin.root``, by default
``var/samples``) has something to serve on a bare machine: the bundled fallback
picture and a few avatars, each a head-and-shoulders figure in its own colours.
Pillow draws them (a runtime dependency anyway); it is a developer's tool, so the
gateway package itself never carries sample data. The same Pillow writes the same
bytes on every run, so files that are already in place are left alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageDraw

DEFAULT_DIR = "var/samples"
AVATAR_SIZE = 96
ASSET = Path(__file__).resolve().parent.parent / "gateway" / "assets" / "default_pfp.png"
SCALE = 4  # drawn this many times larger, then scaled down, for smooth edges

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


def silhouette(size: int, background: RGB, figure: RGB) -> Image.Image:
    """A head-and-shoulders figure on a plain ground, ``size`` pixels square (RGB).

    Also the drawing of gateway/assets/default_pfp.png (tools/make_default_pfp.py).
    """
    s = size * SCALE
    image = Image.new("RGB", (s, s), background)
    draw = ImageDraw.Draw(image)
    head_r, head_x, head_y = s * 0.18, s / 2, s * 0.40
    draw.ellipse((head_x - head_r, head_y - head_r, head_x + head_r, head_y + head_r),
                 fill=figure)
    draw.ellipse((s * 0.18, s * 0.64, s * 0.82, s * 1.20), fill=figure)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def avatar(background: RGB, figure: RGB, size: int = AVATAR_SIZE) -> bytes:
    """The silhouette as PNG bytes."""
    out = BytesIO()
    silhouette(size, background, figure).save(out, format="PNG")
    return out.getvalue()


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
        prog="tools/make_samples.py",
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
