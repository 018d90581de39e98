"""The servers of one bench run: S3 (moto) behind a counting proxy, Redis, the
gateway, the nginx anchors, the shipped nginx in front of the gateway, and a
bare aiohttp reference. Each is registered on an ExitStack as it starts, so
whatever happens next (an error, Ctrl-C, SIGTERM) stops everything started."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.images import Picture
from bench.procs import ManagedProcess, RssSampler
from tests.support import free_port
from tests.support.gateway_process import GatewayProcess
from tests.support.nginx import NginxServer
from tests.support.proxy import FaultProxy
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Bucket, S3Server

BUCKET = "bench-images"
LISTENING = "listening on http://"


def start_s3(stack: contextlib.ExitStack, pictures: Sequence[Picture], folder: Path
             ) -> tuple[S3Server, S3Bucket, FaultProxy]:
    """moto with every picture uploaded public-read, and a counting proxy in front.

    public-read: moto answers anonymous GETs of private objects with 403, and the
    nginx proxy_cache anchor fetches without signatures, like a public bucket.
    The gateway talks to the proxy (it signs URLs for the proxy's address; moto
    checks no signatures), so its origin GETs are counted; the anchor talks to
    moto directly.
    """
    s3 = S3Server()
    stack.callback(s3.close)
    bucket = s3.bucket(BUCKET)
    for picture in pictures:
        bucket.put(picture.image_id, (folder / picture.image_id).read_bytes(),
                   content_type=picture.content_type, ACL="public-read")
    proxy = FaultProxy(s3.endpoint)
    stack.callback(proxy.close)
    return s3, bucket, proxy


def start_redis(stack: contextlib.ExitStack) -> RedisServer:
    redis = RedisServer(start=False)
    stack.callback(redis.close)  # registered first: stopped even if start() is interrupted
    redis.start()
    return redis


def start_nginx(stack: contextlib.ExitStack, server: NginxServer) -> NginxServer:
    stack.callback(server.stop)  # idempotent; registered first, like every start here
    server.start(timeout=20)
    return server


class Gateway:
    """python -m gateway with N workers (tests.support.gateway_process), its RSS sampled."""

    def __init__(self, name: str, env: dict[str, str], workers: int) -> None:
        self.name = name
        self.workers = workers
        self.process = GatewayProcess(env, startup_timeout=60)
        self.port = self.process.port

    @property
    def url(self) -> str:
        return self.process.url

    def start(self, sampler: RssSampler) -> Gateway:
        self.process.start()
        # /healthz answers as soon as one worker listens; wait for all of them,
        # or SO_REUSEPORT would hand the first connections to one worker only.
        deadline = time.monotonic() + 60
        while self.process.stderr_text().count(LISTENING) < self.workers:
            if not self.process.running:
                raise RuntimeError(f"gateway {self.name} exited:\n{self.process.stderr_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway {self.name}: not all {self.workers} workers "
                                   f"listen:\n{self.process.stderr_text()[-3000:]}")
            time.sleep(0.05)
        sampler.watch(self.name, self.process.pid)
        return self

    def worker_pids(self) -> list[int]:
        return [int(m) for m in re.findall(r"listening on http://\S+ \(pid (\d+)\)",
                                           self.process.stderr_text())]

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(self.process.stderr_text().splitlines()[-lines:])

    def close(self) -> None:
        self.process.close()


def start_gateway(stack: contextlib.ExitStack, sampler: RssSampler, name: str,
                  env: dict[str, str], workers: int) -> Gateway:
    gateway = Gateway(name, env, workers)
    stack.callback(gateway.close)
    stack.callback(sampler.unwatch, name)  # runs first: the kernel's peaks while alive
    return gateway.start(sampler)


def start_bare_aiohttp(stack: contextlib.ExitStack, run_dir: Path, images: Path,
                       workers: int) -> tuple[str, ManagedProcess]:
    port = free_port()
    proc = ManagedProcess(
        [sys.executable, "-m", "bench.bare_aiohttp", "--port", str(port),
         "--workers", str(workers), "--images", str(images)],
        run_dir / "bare-aiohttp.log")
    stack.callback(proc.stop)
    proc.wait_for_log(LISTENING, workers, timeout=60)
    return f"http://127.0.0.1:{port}", proc
