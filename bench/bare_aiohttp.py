"""Reference point, not an anchor with a target: the bare minimum an aiohttp
server does to answer an image request -- a dict lookup and ``web.Response(body=...)``
-- with uvloop and N processes on one port (SO_REUSEPORT), like the gateway.

    python -m bench.bare_aiohttp --port 8090 --workers 2 --images bench/out/images

The issue quotes "a bare aiohttp handler returning bytes reaches about 0.48x"
nginx proxy_cache; this measures that ceiling on the same machine in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import mimetypes
import multiprocessing
import signal
import sys
from pathlib import Path

import uvloop
from aiohttp import web


def _app(images: Path) -> web.Application:
    files: dict[str, tuple[bytes, str]] = {}
    for path in images.iterdir():
        if path.suffix in (".jpg", ".png"):
            files[path.name] = (path.read_bytes(),
                                mimetypes.guess_type(path.name)[0] or "image/jpeg")

    async def get_image(request: web.Request) -> web.Response:
        found = files.get(request.match_info["image_id"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(body=body, content_type=content_type,
                            headers={"Cache-Control": "public, max-age=2700"})

    app = web.Application()
    app.router.add_get("/images/{image_id}", get_image)
    return app


async def _serve(port: int, images: Path) -> None:
    runner = web.AppRunner(_app(images), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_port=True, backlog=1024)
    await site.start()
    print(f"listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def _worker(port: int, images: str) -> None:
    uvloop.run(_serve(port, Path(images)))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_aiohttp")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--images", required=True)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(args.port, args.images))
             for _ in range(args.workers)]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
