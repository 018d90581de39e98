"""Small HTTP checks around the wrk runs: fill caches once, and sample which
layer answers (X-Cache) over fresh connections, so every worker behind the
SO_REUSEPORT port is asked."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from collections.abc import Sequence

import aiohttp

from bench.images import Picture


async def _fetch_all(base_url: str, pictures: Sequence[Picture], concurrency: int,
                     verify: bool) -> Counter[str]:
    seen: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def one(picture: Picture) -> None:
            async with gate, http.get(f"{base_url}/images/{picture.image_id}") as resp:
                body = await resp.read()
                if resp.status != 200:
                    seen[f"status {resp.status}"] += 1
                    return
                if verify and hashlib.sha256(body).hexdigest() != picture.sha256:
                    seen["WRONG BYTES"] += 1
                    return
                seen[resp.headers.get("X-Cache", "-")] += 1

        await asyncio.gather(*(one(p) for p in pictures))
    return seen


def fetch_all(base_url: str, pictures: Sequence[Picture], concurrency: int = 16,
              verify: bool = True) -> Counter[str]:
    """GET every picture once; Counter of X-Cache values (or problems found)."""
    return asyncio.run(_fetch_all(base_url, pictures, concurrency, verify))


async def _sample(base_url: str, paths: Sequence[str], headers: Sequence[str]
                  ) -> Counter[str]:
    seen: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=10)
    # force_close: a new connection per request, so SO_REUSEPORT spreads them
    connector = aiohttp.TCPConnector(force_close=True, limit=8)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        async def one(path: str) -> None:
            async with http.get(base_url + path) as resp:
                await resp.read()
                label = " / ".join(resp.headers.get(h, "-") for h in headers)
                seen[label if resp.status == 200 else f"{resp.status} {label}"] += 1

        await asyncio.gather(*(one(p) for p in paths))
    return seen


def sample_layers(base_url: str, paths: Sequence[str], n: int = 200,
                  headers: Sequence[str] = ("X-Cache",), seed: int = 7) -> Counter[str]:
    """X-Cache (or other headers) of ``n`` random paths, one connection each."""
    rng = random.Random(seed)
    return asyncio.run(_sample(base_url, [rng.choice(paths) for _ in range(n)], headers))


def describe(counter: Counter[str]) -> str:
    total = sum(counter.values()) or 1
    return ", ".join(f"{k} {v} ({100 * v / total:.0f} %)" for k, v in counter.most_common())
