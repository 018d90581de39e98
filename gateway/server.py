"""Serving: one worker process, or a supervisor that runs N of them on one port.

The server stack (aiohttp, aiobotocore, redis, Pillow...) is imported inside the
functions that run in workers: the supervisor of N workers only starts and watches
them, and would otherwise hold ~50 MB of modules it never uses.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

from gateway.config import Config

log = logging.getLogger("gateway")


def run(config: Config) -> int:
    """Serve until SIGTERM/SIGINT; the process's exit status."""
    setup_logging()
    if config.server.workers == 1:
        return _run_worker(config, reuse_port=False)
    return _supervise(config)


def setup_logging() -> None:
    logging.basicConfig(level=os.environ.get("GATEWAY_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def worker_entry(config: Config) -> None:
    """A spawned worker's target: the spawn context finds it by module and name, which
    is why it lives here and not in __main__ (``python -m gateway`` runs that module as
    "__main__", a name the child cannot import)."""
    setup_logging()
    sys.exit(_run_worker(config, reuse_port=True))


def _run_worker(config: Config, reuse_port: bool) -> int:
    import uvloop

    from gateway.web.accesslog import setup_access_log_output

    setup_access_log_output()  # access lines: bare JSON (or classic) lines on stdout

    try:
        uvloop.run(_serve(config, reuse_port))
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    return 0


async def _serve(config: Config, reuse_port: bool) -> None:
    from aiohttp import web

    from gateway.web.accesslog import access_log_settings
    from gateway.web.app import create_app
    from gateway.web.keys import PARTS
    from gateway.web.protocol import answer_protocol_errors

    server = config.server
    app = await create_app(config)
    # What was built to serve lives as long as the process: out of the cyclic
    # collector's sight, so its passes scan only what requests leave behind.
    gc.collect()
    gc.freeze()
    stats = app[PARTS].stats

    def refused() -> None:
        stats.malformed_requests += 1

    access: dict[str, Any] = access_log_settings(server)
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=server.shutdown_timeout,
        keepalive_timeout=server.keepalive_timeout, max_line_size=server.max_line_size,
        max_field_size=server.max_field_size, on_refused=refused, **access)
    await runner.setup()
    answer_protocol_errors(runner)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, server.host, server.port, reuse_port=reuse_port,
                           backlog=1024)
        await site.start()
        for address in runner.addresses:
            host, port = address[:2]
            shown = f"[{host}]" if ":" in host else host
            log.info("listening on http://%s:%d (pid %d)", shown, port, os.getpid())
        await stop.wait()
        # Already stopping: a second SIGTERM (a process manager repeating itself) must
        # not kill the drain, nor the exit after the loop's handlers are gone.
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.info("draining in-flight requests (up to %.0fs)", server.shutdown_timeout)
    finally:
        await runner.cleanup()


def _supervise(config: Config) -> int:
    """Run N workers on one port (SO_REUSEPORT); restart a worker that dies;
    on SIGTERM/SIGINT pass it on and wait for every worker to drain."""
    from gateway.observe.shared import prepare_shared_dir

    ctx = multiprocessing.get_context("spawn")
    # Issue 5: a fresh folder where workers publish their counters, so /metrics and
    # /admin/stats add every worker up (gateway/observe/hub.py); removed at exit.
    prepare_shared_dir()
    workers: list[multiprocessing.process.BaseProcess] = []
    stopping = False

    def start() -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=worker_entry, args=(config,), daemon=False)
        proc.start()
        return proc

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workers.extend(start() for _ in range(config.server.workers))
    log.info("supervising %d workers", len(workers))
    failures = 0
    while not stopping:
        time.sleep(0.2)
        for i, proc in enumerate(workers):
            if not proc.is_alive() and not stopping:
                failures += 1
                log.error("worker %s exited with %s; restarting", proc.pid, proc.exitcode)
                time.sleep(min(5.0, 0.2 * failures))  # a crash loop must not spin
                workers[i] = start()
    deadline = time.monotonic() + config.server.shutdown_timeout + 5
    for proc in workers:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
    codes = [proc.exitcode for proc in workers]
    log.info("all workers stopped (%s)", codes)
    # A worker told to stop while still starting has no handler yet and dies of the
    # SIGTERM itself; it held no request, so that is a clean stop as well.
    return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
