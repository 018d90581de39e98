"""The long-tail scenario's data: 100,000 small distinct pictures and a Zipf trace.

Pictures: 24 small seeded base images (80 % JPEG 64x64, 20 % PNG 48x48, made
once with Pillow), each copy made distinct and brought to its drawn size by
padding: a JPEG comment segment (FF FE) right after the SOI marker, or a private
PNG chunk ("byTE", ancillary, ignored by decoders) before IEND, holding the id.
Sizes are log-normal, median 6 kB, sigma 0.6, clipped to 2-40 kB (avatar
thumbnails); bytes are what S3 would hold, so every cache layer holds them as
they are. Writing 100,000 files this way takes seconds, not the minutes that
encoding each one would; the set is kept under bench/out/longtail/ keyed by
(count, seed) and reused.

Trace: request k asks for object ranks[k], ranks drawn i.i.d. from Zipf(s) over
the set, popularity rank -> picture by a seeded shuffle (so size and
popularity are independent). One file of paths per wrk run (warm-up, measured),
each replayed by bench/paths.lua in rr mode.
"""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from bench.capacity import workload

VERSION = 1
SIZE_MEDIAN, SIZE_SIGMA, SIZE_MIN, SIZE_MAX = 6000.0, 0.6, 2000.0, 40000.0
BASES = 24


@dataclass(frozen=True)
class LongTailSet:
    folder: Path
    names: list[str]
    sizes: np.ndarray

    @property
    def uris(self) -> list[str]:
        return [f"/images/{n}" for n in self.names]

    @property
    def total_bytes(self) -> int:
        return int(self.sizes.sum())


def _bases(seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(f"longtail:{seed}")
    out = []
    for b in range(BASES):
        jpeg = b % 5 != 0
        side = 64 if jpeg else 48
        gray = Image.linear_gradient("L").resize((side, side)).rotate(rng.uniform(0, 360))
        img = ImageOps.colorize(gray, (rng.randrange(128),) * 3,
                                (rng.randrange(128, 256), rng.randrange(128, 256), 200))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80) if jpeg else img.save(buf, "PNG")
        out.append(("jpg" if jpeg else "png", buf.getvalue()))
    return out


def _padded(fmt: str, base: bytes, tag: bytes, size: int) -> bytes:
    if fmt == "jpg":
        fill = max(0, size - len(base) - 4)
        body = (tag + b" " * fill)[: max(len(tag), fill)][:65533]
        return base[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + base[2:]
    fill = max(0, size - len(base) - 12)
    data = (tag + b" " * fill)[: max(len(tag), fill)]
    chunk = struct.pack(">I", len(data)) + b"byTE" + data + struct.pack(
        ">I", zlib.crc32(b"byTE" + data))
    return base[:-12] + chunk + base[-12:]  # IEND is the last 12 bytes


def generate(root: Path, count: int, seed: int) -> LongTailSet:
    folder = root / f"images-{count}-{seed}"
    manifest = folder / "manifest.json"
    try:
        data = json.loads(manifest.read_text())
        if data["version"] == VERSION and len(data["names"]) == count:
            return LongTailSet(folder, data["names"], np.array(data["sizes"], dtype=np.float64))
    except (OSError, ValueError, KeyError):
        pass
    folder.mkdir(parents=True, exist_ok=True)
    bases = _bases(seed)
    sizes = workload.lognormal_sizes(count, SIZE_MEDIAN, SIZE_SIGMA, SIZE_MIN, SIZE_MAX, seed)
    names, actual = [], []
    for i in range(count):
        fmt, base = bases[i % BASES]
        name = f"lt-{i:06d}.{fmt}"
        body = _padded(fmt, base, f"image-gateway long-tail {seed} {i}".encode(),
                       int(sizes[i]))
        (folder / name).write_bytes(body)
        names.append(name)
        actual.append(len(body))
    manifest.write_text(json.dumps({"version": VERSION, "seed": seed, "names": names,
                                    "sizes": actual}))
    return LongTailSet(folder, names, np.array(actual, dtype=np.float64))


def popularity(count: int, s: float, seed: int) -> np.ndarray:
    """P(request is for picture i): Zipf(s) by rank, ranks shuffled over the pictures."""
    probs = np.empty(count)
    probs[np.random.default_rng(seed + 7).permutation(count)] = workload.zipf_probs(count, s)
    return probs


def write_paths(path: Path, names: list[str], ids: np.ndarray) -> None:
    uris = [f"/images/{n}\n" for n in names]
    path.write_text("".join(uris[i] for i in ids.tolist()))


def wrk_segments(ids: np.ndarray, requests: int, threads: int) -> np.ndarray:
    """What bench/paths.lua (rr) asked for, in about the order asked: thread t walks
    the file from its own offset; the total is split evenly (wrk reports only it)."""
    n = len(ids)
    per = requests // max(1, threads)
    parts = []
    for t in range(threads):
        start = (t * (n // 8 + 1) * 3) % n + 1  # paths.lua: pos = offset, then pos + 1
        parts.append(np.take(ids, np.arange(start, start + per) % n))
    return np.stack(parts, axis=1).reshape(-1)  # interleaved: the threads run at once
