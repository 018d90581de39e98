"""deploy/nginx.conf as deployed: HTTPS + HTTP/2 on the TLS port, plain HTTP only
redirecting, in real nginx (with a throwaway openssl pair) in front of two real
gateways (S3 origin on moto), driven with curl --http2."""

from __future__ import annotations

import re

import pytest

from tests.support import free_port
from tests.support.curl import curl
from tests.support.images import noise_png, sha
from tests.support.nginx import (
    SHIPPED_CONF,
    TLS_VARIABLES,
    NginxServer,
    check_nginx_conf,
    envsubst,
    make_self_signed,
    render_nginx_conf,
)

TOKEN = "tls-test-admin-token-0123456"


@pytest.fixture
def tls_edge(spawn_gateway, s3, s3_proxy, tmp_path):
    env = {**s3.env(s3_proxy.url), "GATEWAY_ADMIN_TOKEN": TOKEN,
           "GATEWAY_SERVER_ACCESS_LOG": "false"}
    gateways = [spawn_gateway(env), spawn_gateway(env)]
    pair = make_self_signed(tmp_path / "tls")
    conf = render_nginx_conf(SHIPPED_CONF.read_text(), listen_port=free_port(),
                             tls=pair, tls_port=free_port(),
                             upstreams=[f"127.0.0.1:{g.port}" for g in gateways],
                             tmp_dir=tmp_path)
    nginx = NginxServer(conf, tmp_path).start()
    yield nginx, pair
    nginx.stop()


def test_rendered_with_tls_keeps_both_servers_and_passes_nginx_t(tmp_path):
    pair = make_self_signed(tmp_path / "tls")
    conf = render_nginx_conf(SHIPPED_CONF.read_text(), listen_port=18080, tls=pair,
                             tls_port=18443, upstreams=["127.0.0.1:18081"], tmp_dir=tmp_path)
    assert re.search(r"^\s*listen 127\.0\.0\.1:18080 default_server;", conf, re.M)
    assert re.search(r"^\s*listen 127\.0\.0\.1:18443 ssl http2 default_server;", conf, re.M)
    assert re.search(rf"(?m)^\s*ssl_certificate\s+{re.escape(str(pair.cert))};$", conf)
    assert re.search(rf"(?m)^\s*ssl_certificate_key\s+{re.escape(str(pair.key))};$", conf)
    # Every placeholder filled in; nginx's own variables left for nginx.
    assert "${" not in conf
    for variable in ("$uri", "$request_uri", "$host", "$remote_addr",
                     "$proxy_add_x_forwarded_for", "$upstream_cache_status"):
        assert conf.count(variable) == SHIPPED_CONF.read_text().count(variable), variable
    result = check_nginx_conf(conf, tmp_path)
    assert result.returncode == 0, result.stderr


def test_envsubst_fills_only_the_named_variables():
    """The rule of the nginx image's entrypoint (envsubst with a list of names)."""
    values = {"NGINX_TLS_CERTIFICATE": "/c.crt", "NGINX_TLS_CERTIFICATE_KEY": "/k.key"}
    text = ("a ${NGINX_TLS_CERTIFICATE}; b $NGINX_TLS_CERTIFICATE_KEY; c $uri ${HOME} "
            "$NGINX_TLS_CERTIFICATEX $NGINX_TLS_CERTIFICATE.")
    assert envsubst(text, values) == (
        "a /c.crt; b /k.key; c $uri ${HOME} $NGINX_TLS_CERTIFICATEX /c.crt.")
    with pytest.raises(ValueError, match="one nginx argument"):
        envsubst("x", {"NGINX_TLS_CERTIFICATE": "/a b; include /etc/passwd"})


def test_rendering_refuses_a_placeholder_left_over(tmp_path):
    pair = make_self_signed(tmp_path / "tls")
    shipped = SHIPPED_CONF.read_text()
    extra = shipped.replace("server_tokens off;", "server_tokens ${NGINX_SERVER_TOKENS};")
    with pytest.raises(ValueError, match="placeholder is left"):
        render_nginx_conf(extra, listen_port=18080, tls=pair, tls_port=18443,
                          upstreams=["127.0.0.1:18081"], tmp_dir=tmp_path)
    renamed = shipped.replace("${NGINX_TLS_CERTIFICATE}", "${TLS_CERT}")
    with pytest.raises(ValueError, match="NGINX_TLS_CERTIFICATE"):
        render_nginx_conf(renamed, listen_port=18080, tls=pair, tls_port=18443,
                          upstreams=["127.0.0.1:18081"], tmp_dir=tmp_path)


def test_plain_rendering_drops_only_tls(tmp_path):
    """The rules are also tested over plain HTTP (tests/integration/test_nginx_*.py):
    that rendering drops the redirect server and the ssl lines, and nothing else."""
    shipped = SHIPPED_CONF.read_text()
    conf = render_nginx_conf(shipped, listen_port=18080, upstreams=["127.0.0.1:18081"],
                             tmp_dir=tmp_path)
    assert "ssl" not in re.sub(r"(?m)#.*$", "", conf)
    assert "return 308" not in conf
    assert len(re.findall(r"(?m)^\s*listen ", conf)) == 1
    tls_server = shipped[shipped.index("listen 443"):]
    locations = re.compile(r"(?m)^\s*location [^{]+\{")
    assert locations.findall(conf) == locations.findall(tls_server)


def test_shipped_tls_rules():
    conf = SHIPPED_CONF.read_text()
    assert re.search(r"(?m)^\s*listen 443 ssl http2 default_server;\s+# DEPLOY", conf)
    assert re.search(r"(?m)^\s*listen 80 default_server;\s+# DEPLOY", conf)
    # Placeholders, filled in once before nginx starts (never nginx $variables:
    # nginx would load the certificate again on every handshake).
    assert re.search(r"(?m)^\s*ssl_certificate\s+\$\{NGINX_TLS_CERTIFICATE\};$", conf)
    assert re.search(r"(?m)^\s*ssl_certificate_key\s+\$\{NGINX_TLS_CERTIFICATE_KEY\};$", conf)
    assert set(re.findall(r"\$\{(\w+)\}", conf)) == set(TLS_VARIABLES)
    assert re.search(r"(?m)^\s*ssl_protocols TLSv1\.2 TLSv1\.3;", conf)


@pytest.mark.timeout(90)
def test_images_over_http2_byte_exact_with_304(tls_edge, s3, s3_proxy):
    nginx, pair = tls_edge
    body = noise_png(41)
    s3.put("h2.png", body)
    url = f"{nginx.https_url}/images/h2.png"
    first = curl(url, "--http2", "-H", "Cookie: session=secret", cacert=pair.cert)
    assert first.version == "2", first
    assert first.status == 200
    assert sha(first.body) == sha(body)
    assert first.headers["content-type"] == "image/png"
    assert first.headers["x-cache"] == "MISS"
    assert first.headers["x-micro-cache"] == "MISS"
    etag = first.headers["etag"]
    cond = curl(url, "--http2", "-H", f"If-None-Match: {etag}", cacert=pair.cert)
    assert (cond.version, cond.status, cond.body) == ("2", 304, b"")
    assert cond.headers["etag"] == etag
    assert cond.headers["cache-control"] == first.headers["cache-control"]
    # HTTP/1.1 clients over TLS are served too.
    old = curl(url, "--http1.1", cacert=pair.cert)
    assert (old.version, old.status) == ("1.1", 200)
    assert sha(old.body) == sha(body)
    assert s3_proxy.gets("h2.png") == 1


@pytest.mark.timeout(60)
def test_plain_http_redirects_to_https_and_keeps_healthz(tls_edge, s3_proxy):
    nginx, _ = tls_edge
    for method, path in [("GET", "/images/a.png?v=2"), ("DELETE", "/admin/images/a.png"),
                         ("GET", "/metrics")]:
        reply = curl(f"{nginx.url}{path}", "-X", method)
        assert reply.status == 308, (method, path)
        assert reply.headers["location"] == f"https://127.0.0.1{path}"
    health = curl(f"{nginx.url}/healthz")
    assert health.status == 200
    assert s3_proxy.total() == 0


@pytest.mark.timeout(60)
def test_admin_over_http2_reaches_the_gateway(tls_edge):
    nginx, pair = tls_edge
    url = f"{nginx.https_url}/admin/images/x.png"
    denied = curl(url, "--http2", "-X", "DELETE", cacert=pair.cert)
    assert (denied.version, denied.status) == ("2", 401)
    allowed = curl(url, "--http2", "-X", "DELETE", "-H", f"Authorization: Bearer {TOKEN}",
                   cacert=pair.cert)
    assert (allowed.version, allowed.status) == ("2", 200)
