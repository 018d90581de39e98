"""Placeholder and preset answers (issue 18): what a page of 50 avatars asks for
when it inlines placeholders and names its sizes. Each is made once (the pass
below renders them all), then wrk measures the cached answers, like the memory
scenario measures cached originals."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from bench.images import Picture
from bench.results import OUT

if TYPE_CHECKING:
    from bench.run import Runner
    from tests.support.proxy import FaultProxy

#: key, title, query. The preset is the shipped one (config/gateway.toml).
SCENARIOS = (
    ("preset", "gateway, ?preset=avatar (cached variant)", "?preset=avatar"),
    ("blurhash", "gateway, ?placeholder=blurhash (cached)",
     "?preset=avatar&placeholder=blurhash"),
    ("lqip", "gateway, ?placeholder=lqip (cached)", "?preset=avatar&placeholder=lqip"),
)
#: Pictures asked for: a hot set of avatars, not every picture's variant.
COUNT = 200


def paths_for(pictures: Sequence[Picture], query: str) -> list[str]:
    return [f"/images/{p.image_id}{query}" for p in pictures[:COUNT]]


async def _get_all(base_url: str, paths: Sequence[str]) -> tuple[Counter[str], int]:
    seen: Counter[str] = Counter()
    body_bytes = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                     connector=aiohttp.TCPConnector(limit=8)) as http:
        async def one(path: str) -> None:
            nonlocal body_bytes
            async with http.get(base_url + path) as resp:
                body_bytes += len(await resp.read())
                seen[resp.headers.get("X-Cache", "-") if resp.status == 200
                     else f"status {resp.status}"] += 1

        await asyncio.gather(*(one(p) for p in paths))
    return seen, body_bytes


def measure(runner: Runner, base_url: str, pictures: Sequence[Picture],
            origin: FaultProxy) -> dict[str, int]:
    """Make every answer once, then one wrk run each; the mean answer size per key."""
    sizes: dict[str, int] = {}
    for key, title, query in SCENARIOS:
        paths = paths_for(pictures, query)
        path_file = OUT / f"paths-{key}.txt"
        path_file.parent.mkdir(parents=True, exist_ok=True)
        path_file.write_text("".join(p + "\n" for p in paths))
        started = time.perf_counter()
        seen, body_bytes = asyncio.run(_get_all(base_url, paths))
        made_ms = (time.perf_counter() - started) * 1000 / max(1, len(paths))
        if set(seen) - {"MISS", "COALESCED", "HIT-MEMORY", "HIT-DISK"}:
            raise RuntimeError(f"{key}: the first pass was not served right: {dict(seen)}")
        sizes[key] = body_bytes // max(1, len(paths))
        # The first pass made them all (8 at a time, in the transform pool): the
        # wall time per answer is what making one costs at that concurrency.
        runner.measure(key, f"{title}: {sizes[key]} B, first pass {made_ms:.1f} ms each",
                       "gateway", base_url,
                       origin=origin, paths_file=Path(path_file), paths=paths)
    return sizes
