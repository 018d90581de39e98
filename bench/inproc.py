"""CPU cost of one request inside the process, without sockets, wrk or the kernel.

    python -m bench.inproc [--requests 20000] [--profile memory]

Raw HTTP/1.1 requests are fed to the server's real protocol object (aiohttp's
parser, the edge around the handler, the response writer) over an in-memory
transport, on uvloop, and the process CPU time per request is reported for the
bare aiohttp handler (bench/bare_aiohttp.py) and the gateway's hit paths. CPU time
rather than wall time: the figure holds on a busy machine, so the hot path can be
profiled and compared while other work runs. `make bench` stays the measure of
record (sockets and the kernel add the same cost to both); this is the microscope.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from bench import bare_aiohttp, images
from gateway.config_load import from_mapping
from gateway.web.app import create_app
from gateway.web.protocol import answer_protocol_errors


class _Transport(asyncio.Transport):
    """Collects what the server writes; counts complete responses by their ends."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closed = False
        self.responses = 0
        self.waiter: asyncio.Future[None] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)
        if bytes(data[:9]) == b"HTTP/1.1 ":
            self.responses += 1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return ("127.0.0.1", 40000)
        if name == "sockname":
            return ("127.0.0.1", 8080)
        return default

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return True

    def can_write_eof(self) -> bool:
        return False


async def _connection(runner: web.AppRunner) -> tuple[Any, _Transport]:
    server = runner.server
    assert server is not None
    protocol = server()
    transport = _Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def _drive(protocol: Any, transport: _Transport, requests: list[bytes],
                 rounds: int) -> float:
    """Feed one request at a time, the next once the answer has begun (keep-alive;
    a body still being sent is finished before the next request is read)."""
    loop = asyncio.get_running_loop()
    start = time.process_time()
    for i in range(rounds):
        want = transport.responses + 1
        transport.waiter = loop.create_future()
        protocol.data_received(requests[i % len(requests)])
        if transport.responses < want:
            await transport.waiter
    elapsed = time.process_time() - start
    return elapsed


def _request(path: str, extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n"
            f"{extra}\r\n").encode()


async def _measure(runner: web.AppRunner, requests: list[bytes], rounds: int,
                   profile: bool) -> tuple[float, int]:
    """CPU seconds per request over ``rounds`` requests, and the bytes of each."""
    protocol, transport = await _connection(runner)
    await _drive(protocol, transport, requests, min(rounds, len(requests) * 2))  # warm
    written = transport.written
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    elapsed = await _drive(protocol, transport, requests, rounds)
    if profiler:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(35)
    protocol.connection_lost(None)
    return elapsed / rounds, (transport.written - written) // rounds


async def _runner(app: web.Application, gateway: bool) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    if gateway:
        answer_protocol_errors(runner)
    return runner


def _gateway_config(folder: Path, cache: Path, memory_bytes: int) -> Any:
    return from_mapping({
        "origin": {"root": str(folder)},
        "memory": {"max_bytes": memory_bytes},
        "disk": {"path": str(cache)},
        "server": {"access_log": False},
        "admin": {"token": "x" * 32},
    }, {})


async def _main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="inproc-"))
    runners: list[web.AppRunner] = []
    try:
        folder = Path(args.folder) if args.folder else work / "images"
        ids = [p.image_id for p in images.generate(folder, args.images, 7)]
        plain = [_request(f"/images/{i}") for i in ids]
        variant = [_request(f"/images/{i}?w=64&h=64") for i in ids]

        async def runner(app: web.Application, gateway: bool = True) -> web.AppRunner:
            made = await _runner(app, gateway)
            runners.append(made)
            return made

        bare = await runner(bare_aiohttp._app(folder), gateway=False)
        hot = await runner(await create_app(_gateway_config(folder, work / "m", 256 << 20)))
        cold = await runner(await create_app(_gateway_config(folder, work / "d", 1 << 20)))
        scenarios = {"bare": (bare, plain), "memory": (hot, plain),
                     "variant": (hot, variant), "disk": (cold, plain)}
        if args.only:
            scenarios = {k: v for k, v in scenarios.items()
                         if k in args.only.split(",") or (k == "bare" and not args.alone)}
        best: dict[str, tuple[float, int]] = {}
        # Interleaved rounds, the best of each: other work on the machine only ever
        # adds time, so the minimum is the closest to the path's own cost.
        for _ in range(args.rounds):
            for name, (made, reqs) in scenarios.items():
                figure = await _measure(made, reqs, args.requests, args.profile == name)
                if name not in best or figure[0] < best[name][0]:
                    best[name] = figure
        base = best["bare"][0] if "bare" in best else 0.0
        for name, (per, size) in best.items():
            ratio = f"{base / per:5.2f}x bare" if base else ""
            print(f"{name:<10} {per * 1e6:7.2f} us/request  {ratio}  "
                  f"({size:,} bytes a response)", flush=True)
    finally:
        for made in runners:
            await made.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _collected(scenario: str, requests: int, images_: int, folder: Path) -> int:
    """Instructions callgrind counted for a whole run of one scenario."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-m", "bench.inproc", "--alone", "--only", scenario,
         "--rounds", "1", "--requests", str(requests), "--images", str(images_),
         "--folder", str(folder)],
        capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no total: {done.stderr[-500:]}")
    return int(found.group(1))


def _instructions(args: argparse.Namespace) -> int:
    """Instructions per request: two runs of N and 2N requests, the difference over N
    (start-up, set-up and warm-up cancel out). Counts, not seconds: the same on a
    busy machine, so a change to the hot path can be judged while other work runs."""
    names = args.only.split(",") if args.only else ["bare", "memory", "variant", "disk"]
    if "bare" not in names:
        names.insert(0, "bare")
    n = args.requests
    per: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="inproc-") as work:
        folder = Path(work) / "images"
        images.generate(folder, args.images, 7)  # once, outside valgrind (Pillow is slow there)
        for name in names:
            per[name] = (_collected(name, 2 * n, args.images, folder)
                         - _collected(name, n, args.images, folder)) / n
            ratio = per["bare"] / per[name]
            print(f"{name:<10} {per[name]:12,.0f} instructions/request  {ratio:5.2f}x bare",
                  flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inproc")
    parser.add_argument("--requests", type=int, default=5000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--only", default="", help="comma-separated: bare,memory,variant,disk")
    parser.add_argument("--profile", default="", help="cProfile one scenario by name")
    parser.add_argument("--alone", action="store_true", help="without the bare scenario")
    parser.add_argument("--folder", default="", help="the pictures (made there if absent)")
    parser.add_argument("--instructions", action="store_true",
                        help="count CPU instructions per request under callgrind instead")
    args = parser.parse_args()
    if args.instructions:
        return _instructions(args)
    runner: Callable[[], Awaitable[int]] = lambda: _main(args)  # noqa: E731
    return uvloop.run(runner())


if __name__ == "__main__":
    sys.exit(main())
