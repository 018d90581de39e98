"""The capacity model routes images to replicas exactly as the shipped nginx does
(deploy/nginx.conf: `hash $uri consistent`), checked against real nginx."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.request import urlopen

import pytest

from bench.capacity.hashring import KetamaRing
from tests.support import free_port
from tests.support.nginx import SHIPPED_CONF, NginxServer, render_nginx_conf


class _Named(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        name = f"127.0.0.1:{self.server.server_address[1]}"
        self.send_response(200)
        self.send_header("X-Backend", name)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def backends() -> Iterator[list[str]]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Named) for _ in range(3)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    yield [f"127.0.0.1:{s.server_address[1]}" for s in servers]
    for s in servers:
        s.shutdown()
        s.server_close()


def test_the_model_sends_each_image_where_nginx_sends_it(tmp_path: Path,
                                                          backends: list[str]) -> None:
    conf = render_nginx_conf(SHIPPED_CONF.read_text(), listen_port=free_port(),
                             upstreams=backends, tmp_dir=tmp_path, micro_cache=False,
                             worker_processes=1)
    uris = [f"/images/avatar-{i:05d}.jpg" for i in range(150)] + [
        "/images/user/42", "/images/a%20b.png", "/images/x.jpg?w=64"]
    with NginxServer(conf, tmp_path) as edge:
        seen = []
        for uri in uris:
            with urlopen(edge.url + uri, timeout=5) as resp:
                seen.append(resp.headers["X-Backend"])
    # $uri: the decoded path without the query string
    keys = [u.split("?")[0].replace("%20", " ") for u in uris]
    predicted = [backends[i] for i in KetamaRing(backends).route(keys)]
    assert seen == predicted
    assert len(set(seen)) == 3
