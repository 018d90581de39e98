"""The image as an operator runs it: built from deploy/Dockerfile with podman, then
two gateway containers (host network, own ports and cache volumes, the service
definition of deploy/compose.yaml) on one real redis-server and one S3 endpoint
(moto behind the counting proxy), behind the shipped deploy/nginx.conf (TLS,
HTTP/2) in real nginx.

Not part of `make test` (pyproject's testpaths leave this folder out): run by
`make test-container`, which installs podman and friends first. Without podman
every test here fails with the reason, never skips.

    image      session  BuiltImage: .tag .size .labels .healthcheck (built once)
    stack      module   Stack: .gateways (2 Containers + ports) .nginx .tls .bucket .proxy
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container.stack import REPORT, Stack, start_gateway
from tests.support import REPO_ROOT, free_port
from tests.support.nginx import SHIPPED_CONF, NginxServer, make_self_signed, render_nginx_conf
from tests.support.podman import (
    BuiltImage,
    PodmanUnavailable,
    build_image,
    ensure_base_image,
    podman_argv,
    remove_leftovers,
    volume,
)
from tests.support.proxy import FaultProxy
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server

_report: dict[str, Any] = {}


@pytest.fixture(scope="session")
def image() -> BuiltImage:
    """deploy/Dockerfile built once per session on the cached local base."""
    try:
        podman_argv()
    except PodmanUnavailable as exc:
        pytest.fail(str(exc))
    remove_leftovers()
    t0 = time.monotonic()
    base = ensure_base_image()
    t1 = time.monotonic()
    built = build_image(base)
    t2 = time.monotonic()
    _report.update({
        "image": built.tag, "base": base, "size_bytes": built.size,
        "size_mb": round(built.size / 1e6, 1), "base_seconds": round(t1 - t0, 1),
        "build_seconds": round(t2 - t1, 1), "labels": built.labels,
    })
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(_report, indent=2) + "\n")
    return built


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _report:
        terminalreporter.write_sep("-", "container image")
        terminalreporter.write_line(
            f"{_report['image']}: {_report['size_mb']} MB ({_report['size_bytes']} bytes) on "
            f"{_report['base']}; base {_report['base_seconds']} s, build "
            f"{_report['build_seconds']} s; written to {REPORT.relative_to(REPO_ROOT)}")


@pytest.fixture(scope="module")
def stack(image: BuiltImage, redis_server: RedisServer, s3_server: S3Server,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis_server.ensure_running()
    redis_server.flushall()
    bucket = s3_server.bucket()
    proxy = FaultProxy(s3_server.endpoint)
    tmp = tmp_path_factory.mktemp("container-stack")
    run_id = uuid.uuid4().hex[:8]
    with contextlib.ExitStack() as stack:
        stack.callback(bucket.destroy)
        stack.callback(proxy.close)
        gateways = []
        for i in (1, 2):
            name = f"igw-test-{run_id}-{i}"
            cache = stack.enter_context(volume(f"{name}-cache"))
            gateway = start_gateway(image, name, bucket=bucket, proxy=proxy,
                                    redis=redis_server, cache_volume=cache)
            stack.callback(gateway.container.remove)
            gateways.append(gateway)
        tls = make_self_signed(Path(tmp) / "tls")
        conf = render_nginx_conf(SHIPPED_CONF.read_text(), listen_port=free_port(),
                                 tls=tls, tls_port=free_port(), tmp_dir=tmp,
                                 upstreams=[f"127.0.0.1:{g.port}" for g in gateways])
        nginx = stack.enter_context(NginxServer(conf, tmp))
        yield Stack(gateways=gateways, nginx=nginx, tls=tls, bucket=bucket, proxy=proxy,
                    redis=redis_server, image=image)

