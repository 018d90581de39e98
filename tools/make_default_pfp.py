"""Draw gateway/assets/default_pfp.png, the picture served when an image is missing.

Run once by a developer (needs Pillow, from the test extra); the result is
committed so the runtime needs no image library.
"""

from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 256
SCALE = 4  # draw large, then downsample, for smooth edges
OUT = Path(__file__).resolve().parent.parent / "gateway" / "assets" / "default_pfp.png"


def main() -> None:
    s = SIZE * SCALE
    img = Image.new("RGB", (s, s), (203, 213, 225))
    d = ImageDraw.Draw(img)
    fg = (100, 116, 139)
    head_r = s * 0.18
    cx, cy = s / 2, s * 0.40
    d.ellipse((cx - head_r, cy - head_r, cx + head_r, cy + head_r), fill=fg)
    d.ellipse((s * 0.18, s * 0.64, s * 0.82, s * 1.20), fill=fg)
    img = img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    img.quantize(colors=32).save(OUT, optimize=True)
    print(OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
