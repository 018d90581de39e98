"""deploy/nginx.conf: valid for a real nginx, and does what its comments promise.

The shipped file is rendered for a temp dir (tests/support/nginx.py), checked with
``nginx -t``, then run in front of two small stub upstreams that echo what they
receive, so the proxying rules (hash routing, header passing and stripping, the
micro-cache, conditional requests, access limits) are checked on real nginx
without depending on the gateway code.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.web.app import MAX_BODY
from tests.support import free_port
from tests.support.nginx import (
    SHIPPED_CONF,
    NginxNotFound,
    NginxServer,
    check_nginx_conf,
    find_nginx,
    render_nginx_conf,
)

LAST_MODIFIED = "Wed, 01 Jan 2025 00:00:00 GMT"
CACHE_CONTROL = "max-age=2700, stale-while-revalidate=3600, stale-if-error=604800"


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    try:
        return find_nginx()
    except NginxNotFound as exc:
        pytest.fail(str(exc))


def _render(tmp_dir: Path, upstreams: list[str], **kwargs: object) -> str:
    return render_nginx_conf(SHIPPED_CONF.read_text(), listen_port=free_port(),
                             upstreams=upstreams, tmp_dir=tmp_dir, **kwargs)  # type: ignore[arg-type]


# ---- the file itself ----------------------------------------------------------


@pytest.mark.parametrize("micro_cache", [True, False], ids=["micro-cache", "no-cache"])
def test_shipped_config_passes_nginx_t(nginx_binary: str, tmp_path: Path,
                                       micro_cache: bool) -> None:
    upstreams = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    conf = _render(tmp_path, upstreams, micro_cache=micro_cache)
    result = check_nginx_conf(conf, tmp_path)
    assert result.returncode == 0, (
        f"nginx -t failed ({result.returncode}):\n{result.stderr}{result.stdout}"
    )


def test_render_points_every_deployment_address_at_the_temp_dir(tmp_path: Path) -> None:
    shipped = SHIPPED_CONF.read_text()
    conf = render_nginx_conf(shipped, listen_port=18080,
                             upstreams=["127.0.0.1:18081", "127.0.0.1:18082"],
                             tmp_dir=tmp_path, micro_cache=False)
    for placeholder in ("gateway-1:8080", "gateway-2:8080", "/var/cache/nginx",
                        "/run/nginx.pid", "/var/log/nginx", "listen 80"):
        assert placeholder in shipped
        assert placeholder not in conf
    upstream = re.search(r"upstream image_gateway \{(.*?)\n    \}", conf, re.DOTALL)
    assert upstream is not None
    servers = re.findall(r"^\s*server\s+([^;]+);", upstream.group(1), re.MULTILINE)
    assert servers == ["127.0.0.1:18081 max_fails=2 fail_timeout=5s",
                       "127.0.0.1:18082 max_fails=2 fail_timeout=5s"]
    assert "hash $uri consistent;" in upstream.group(1)
    assert "keepalive 64;" in upstream.group(1)
    assert re.search(r"^\s*listen 127\.0\.0\.1:18080 default_server;", conf, re.MULTILINE)
    assert f'proxy_cache_path "{tmp_path.resolve()}/proxy_cache" ' in conf
    assert not re.search(r"^\s*proxy_cache img_micro;", conf, re.MULTILINE)
    assert re.search(r"^\s*proxy_cache off;", conf, re.MULTILINE)


def test_render_refuses_a_config_it_does_not_recognise(tmp_path: Path) -> None:
    shipped = SHIPPED_CONF.read_text()
    with pytest.raises(ValueError, match="upstream"):
        render_nginx_conf(shipped, listen_port=1, upstreams=[], tmp_dir=tmp_path)
    with pytest.raises(ValueError, match="proxy_cache_path"):
        render_nginx_conf(re.sub(r"(?m)^\s*proxy_cache_path .*$", "", shipped),
                          listen_port=1, upstreams=["127.0.0.1:2"], tmp_dir=tmp_path)


def test_shipped_config_keeps_the_promised_rules() -> None:
    conf = SHIPPED_CONF.read_text()
    images = re.search(r"location /images/ \{(.*?)\n        \}", conf, re.DOTALL)
    assert images is not None
    body = images.group(1)
    for line in ('proxy_set_header Cookie "";', 'proxy_set_header Authorization "";',
                 "proxy_cache_key $request_uri;", "proxy_cache_revalidate on;",
                 "proxy_cache_lock on;", "proxy_cache_background_update on;",
                 "add_header X-Micro-Cache $upstream_cache_status always;"):
        assert line in body
    # Nothing may drop the client's conditional headers or rewrite validators.
    assert not re.search(r"(?i)proxy_set_header\s+If-", conf)
    assert not re.search(r"(?i)proxy_hide_header\s+(ETag|Cache-Control|Last-Modified|X-Cache)",
                         conf)
    for location in ("location /admin/ {", "location = /metrics {"):
        block = conf[conf.index(location):]
        block = block[: block.index("}")]
        assert "deny all;" in block


# ---- running nginx in front of two stub upstreams ------------------------------------


class _Upstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.name = name
        self.seen: list[str] = []
        self.lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


def _etag(path: str) -> str:
    return '"' + hashlib.sha256(path.split("?")[0].encode()).hexdigest()[:16] + '"'


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers like the gateway (validators, X-Cache) with a JSON echo of the request."""

    protocol_version = "HTTP/1.1"
    server: _Upstream

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._answer(send_body=True)

    def _answer(self, *, send_body: bool) -> None:
        with self.server.lock:
            self.server.seen.append(self.path)
        is_image = self.path.startswith("/images/") and not self.path.endswith("/url")
        headers = {"Content-Type": "application/json"}
        status = 200
        if is_image:
            etag = _etag(self.path)
            headers.update({"ETag": etag, "Last-Modified": LAST_MODIFIED,
                            "Cache-Control": CACHE_CONTROL, "X-Cache": "MISS"})
            if self.headers.get("If-None-Match") == etag:
                status = 304
                headers["X-Cache"] = "HIT-MEMORY"
        body = b""
        if status == 200:
            body = json.dumps({
                "upstream": self.server.name,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstreams() -> Iterator[list[_Upstream]]:
    servers = [_Upstream("a"), _Upstream("b")]
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05})
               for s in servers]
    for thread in threads:
        thread.start()
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()
    for thread in threads:
        thread.join(5)


@pytest.fixture(scope="module")
def edge(nginx_binary: str, upstreams: list[_Upstream],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    tmp = tmp_path_factory.mktemp("nginx-edge")
    conf = _render(tmp, [u.address for u in upstreams])
    with NginxServer(conf, tmp) as server:
        yield server


def _request(server: NginxServer, path: str, headers: dict[str, str] | None = None,
             method: str = "GET", body: bytes | None = None,
             ) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def test_images_pass_validators_through_and_drop_credentials(edge: NginxServer) -> None:
    status, headers, body = _request(edge, "/images/pass-through.png", {
        "Cookie": "session=secret", "Authorization": "Bearer secret",
    })
    assert status == 200, edge.logs()
    assert headers["X-Cache"] == "MISS"
    assert headers["X-Micro-Cache"] == "MISS"
    assert headers["ETag"] == _etag("/images/pass-through.png")
    assert headers["Last-Modified"] == LAST_MODIFIED
    assert headers["Cache-Control"] == CACHE_CONTROL
    seen = json.loads(body)["headers"]
    assert "cookie" not in seen
    assert "authorization" not in seen
    assert seen["x-real-ip"] == "127.0.0.1"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen.get("connection", "").lower() != "close"  # upstream keep-alive

    status, headers, _ = _request(edge, "/images/pass-through.png")
    assert status == 200
    assert headers["X-Micro-Cache"] in ("HIT", "UPDATING", "REVALIDATED")
    assert headers["X-Cache"] == "MISS"  # the gateway's header, as it was stored
    assert headers["Cache-Control"] == CACHE_CONTROL


def test_conditional_requests_get_304_with_validators(edge: NginxServer) -> None:
    etag = _etag("/images/conditional.png")
    # Cold (a miss at the edge) and warm (answered from the edge cache).
    for _ in range(2):
        status, headers, body = _request(edge, "/images/conditional.png",
                                         {"If-None-Match": etag})
        assert status == 304, edge.logs()
        assert body == b""
        assert headers["ETag"] == etag
        assert headers["Cache-Control"] == CACHE_CONTROL
    status, _, body = _request(edge, "/images/conditional.png",
                               {"If-None-Match": '"something-else"'})
    assert status == 200
    assert body


def test_same_path_always_reaches_the_same_replica(edge: NginxServer) -> None:
    chosen: dict[str, str] = {}
    for i in range(24):
        path = f"/images/hash-{i}/url"  # the uncached JSON route: every request goes upstream
        answers = set()
        for suffix in ("", "", "?v=2"):
            status, headers, body = _request(edge, path + suffix)
            assert status == 200, edge.logs()
            assert headers["X-Micro-Cache"] == "BYPASS"  # never kept at the edge
            answers.add(json.loads(body)["upstream"])
        assert len(answers) == 1, f"{path} reached {answers}"
        chosen[path] = answers.pop()
    assert set(chosen.values()) == {"a", "b"}


def test_the_url_api_of_a_nested_key_is_not_kept_at_the_edge(
        edge: NginxServer, upstreams: list[_Upstream]) -> None:
    """nginx's $uri is decoded: /images/a%2Fb.png/url would read as the object
    a/b.png/url. The map looks at the URL as sent, as the gateway does."""
    before = sum(len(u.seen) for u in upstreams)
    for _ in range(3):
        status, headers, _ = _request(edge, "/images/nested%2Fkey.png/url")
        assert status == 200 and headers["X-Micro-Cache"] == "BYPASS", edge.logs()
    assert sum(len(u.seen) for u in upstreams) - before == 3
    # Three segments: the object nested/key.png/url, which the edge may keep.
    status, headers, _ = _request(edge, "/images/nested/key.png/url")
    assert status == 200 and headers["X-Micro-Cache"] == "MISS"


def test_admin_keeps_authorization_and_takes_uploads(edge: NginxServer) -> None:
    status, _, body = _request(edge, "/admin/stats", {"Authorization": "Bearer token"})
    assert status == 200
    assert json.loads(body)["headers"]["authorization"] == "Bearer token"
    status, _, _ = _request(edge, "/admin/upload", method="POST", body=b"x" * 100_000)
    assert status == 200
    # Up to the gateway's own limit: nginx must not refuse what the gateway takes.
    status, _, _ = _request(edge, "/admin/upload", method="POST", body=b"x" * MAX_BODY)
    assert status == 200
    status, _, _ = _request(edge, "/admin/upload", method="POST", body=b"x" * (MAX_BODY + 1))
    assert status == 413
    status, _, _ = _request(edge, "/images/too-big.png", method="POST", body=b"x" * 4096)
    assert status == 413


def test_health_and_metrics_pass_through_and_nothing_else(
        edge: NginxServer, upstreams: list[_Upstream]) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        status, _, body = _request(edge, path)
        assert status == 200, path
        assert json.loads(body)["path"] == path
    before = sum(len(u.seen) for u in upstreams)
    status, _, _ = _request(edge, "/etc/passwd")
    assert status == 404
    assert sum(len(u.seen) for u in upstreams) == before
