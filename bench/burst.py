"""Cold burst: N connections opened first, then one GET each for the same new
image written on all of them at once, then every response read.

Raw HTTP/1.1 over asyncio streams (no client pool that would cap or queue the
connections): what is measured is the gateway's single-flight, not a client.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class BurstResult:
    requests: int
    statuses: Counter[int] = field(default_factory=Counter)
    layers: Counter[str] = field(default_factory=Counter)
    bodies: Counter[int] = field(default_factory=Counter)  # body length -> count
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    connect_s: float = 0.0
    wall_s: float = 0.0

    def percentile(self, q: float) -> float:
        values = sorted(self.latencies_ms)
        if not values:
            return 0.0
        return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], int]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.read()  # Connection: close -> until EOF
    return status, headers, len(body)


async def burst(host: str, port: int, path: str, n: int, *,
                connect_concurrency: int = 100, read_timeout: float = 30.0) -> BurstResult:
    result = BurstResult(requests=n)
    gate = asyncio.Semaphore(connect_concurrency)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with gate:
            try:
                return await asyncio.open_connection(host, port)
            except OSError as exc:
                result.errors[f"connect: {type(exc).__name__}"] += 1
                return None

    started = time.perf_counter()
    conns = await asyncio.gather(*(connect() for _ in range(n)))
    result.connect_s = time.perf_counter() - started
    await asyncio.sleep(0.2)  # let the server accept every connection first
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"User-Agent: bench-burst\r\nConnection: close\r\n\r\n").encode()

    async def one(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], t0: float) -> None:
        reader, writer = conn
        try:
            status, headers, length = await asyncio.wait_for(_read_response(reader), read_timeout)
            result.latencies_ms.append((time.perf_counter() - t0) * 1000)
            result.statuses[status] += 1
            result.layers[headers.get("x-cache", "-")] += 1
            result.bodies[length] += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            result.errors[f"read: {type(exc).__name__}"] += 1
        finally:
            writer.close()

    live = [c for c in conns if c is not None]
    t0 = time.perf_counter()
    for _, writer in live:  # every request is written before any response is read
        writer.write(request)
    await asyncio.gather(*(one(c, t0) for c in live))
    result.wall_s = time.perf_counter() - t0
    return result


def run_burst(host: str, port: int, path: str, n: int) -> BurstResult:
    return asyncio.run(burst(host, port, path, n))
