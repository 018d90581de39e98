"""Draw gateway/assets/default_pfp.png, the picture served when an image is missing.

Run once by a developer (``python tools/make_default_pfp.py``); the result is
committed so the runtime never draws it. The figure is the one the sample avatars
use (tools/make_samples.py), in greys.
"""

from pathlib import Path

from make_samples import silhouette

SIZE = 256
OUT = Path(__file__).resolve().parent.parent / "gateway" / "assets" / "default_pfp.png"


def main() -> None:
    image = silhouette(SIZE, background=(203, 213, 225), figure=(100, 116, 139))
    image.quantize(colors=32).save(OUT, optimize=True)
    print(OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
