"""The pieces of the operator's stack: gateway containers of compose's service."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.support import REPO_ROOT, compose, free_port, wait_for
from tests.support.nginx import NginxServer, TlsFiles
from tests.support.podman import BuiltImage, Container
from tests.support.proxy import FaultProxy
from tests.support.redis_server import RedisServer
from tests.support.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Bucket

TOKEN = "container-test-admin-token-0123"
CLUSTER_SECRET = "container-test-cluster-secret-0123456789"
# What the image build reports (size, base, build times), for people and CI logs.
REPORT = REPO_ROOT / "var" / "test-container" / "image.json"


@dataclass
class Gateway:
    container: Container
    port: int
    run: compose.PodmanRun

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Stack:
    gateways: list[Gateway]
    nginx: NginxServer
    tls: TlsFiles
    bucket: S3Bucket
    proxy: FaultProxy
    redis: RedisServer
    image: BuiltImage
    extra: list[Container] = field(default_factory=list)


def start_gateway(image: BuiltImage, name: str, *, bucket: S3Bucket, proxy: FaultProxy,
                  redis: RedisServer, cache_volume: str,
                  service: Mapping[str, Any] | None = None) -> Gateway:
    """One container of compose's gateway service (or ``service``, a variant of it), on
    its own port of the host network."""
    port = free_port()
    service = compose.gateway_service() if service is None else service
    run = compose.podman_run(service, cache_volume=cache_volume, overrides={
        "GATEWAY_SERVER_HOST": "127.0.0.1",
        "GATEWAY_SERVER_PORT": str(port),
        "GATEWAY_S3_ENDPOINT": proxy.url,
        "GATEWAY_S3_BUCKET": bucket.bucket,
        "GATEWAY_S3_REGION": REGION,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "GATEWAY_REDIS_URL": redis.url,
        "GATEWAY_ADMIN_TOKEN": TOKEN,
        "GATEWAY_CLUSTER_SECRET": CLUSTER_SECRET,
    })
    box = Container(image.tag, name, ["--network", "host", *run.args]).start()
    gateway = Gateway(container=box, port=port, run=run)
    try:
        wait_for(lambda: _healthy(gateway), timeout=30, what=f"{name} answering /healthz")
    except TimeoutError:
        logs = box.logs()
        box.remove()
        raise RuntimeError(f"{name} did not start:\n{logs[-4000:]}") from None
    return gateway


def _healthy(gateway: Gateway) -> bool:
    try:
        with urllib.request.urlopen(f"{gateway.url}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


