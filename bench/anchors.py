"""nginx instances: the two anchors from bench/*.conf, and the shipped
deploy/nginx.conf rendered in front of the gateway (as the tests render it)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.support.nginx import SHIPPED_CONF, NginxServer, render_nginx_conf

HERE = Path(__file__).parent
STATIC_CONF = HERE / "nginx-static.conf"
S3_CACHE_CONF = HERE / "nginx-s3-cache.conf"
BROWSER_CONF = HERE / "nginx-browser.conf"


def _fill(template: str, values: dict[str, str]) -> str:
    # Running as root, workers would switch to `nobody`, which cannot write the
    # cache under bench/out: keep them root (as tests/support/nginx.py does).
    values = {"USER": "user root;" if os.geteuid() == 0 else "", **values}
    text = template
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    left = re.findall(r"@@[A-Z0-9_]+@@", text)
    if left:
        raise ValueError(f"nginx template: unfilled placeholders {sorted(set(left))}")
    return text


def static_nginx(dir_: Path, *, port: int, root: Path, workers: int) -> NginxServer:
    conf = _fill(STATIC_CONF.read_text(), {
        "DIR": str(dir_.resolve()), "PORT": str(port), "ROOT": str(root.resolve()),
        "WORKERS": str(workers)})
    return NginxServer(conf, dir_)


def s3_cache_nginx(dir_: Path, *, port: int, s3_port: int, bucket: str,
                   workers: int) -> NginxServer:
    conf = _fill(S3_CACHE_CONF.read_text(), {
        "DIR": str(dir_.resolve()), "PORT": str(port), "S3_PORT": str(s3_port),
        "BUCKET": bucket, "WORKERS": str(workers)})
    return NginxServer(conf, dir_)


def shipped_nginx(dir_: Path, *, port: int, upstream: str, workers: int,
                  micro_cache: bool, access_log: bool = False) -> NginxServer:
    """deploy/nginx.conf as shipped, with the DEPLOY lines substituted by
    tests.support.nginx.render_nginx_conf, and (unless ``access_log``) its
    access_log turned off like every other server in the bench."""
    dir_.mkdir(parents=True, exist_ok=True)
    conf = render_nginx_conf(SHIPPED_CONF.read_text(), listen_port=port, upstreams=[upstream],
                             tmp_dir=dir_, micro_cache=micro_cache, worker_processes=workers)
    if not access_log:
        conf, n = re.subn(r"^(\s*)access_log\s+\"[^\"]*\"\s+\w+\s*;", r"\1access_log off;",
                          conf, flags=re.MULTILINE)
        if n == 0:
            raise ValueError("bench: no access_log line found in the rendered nginx.conf")
    return NginxServer(conf, dir_)


def browser_nginx(dir_: Path, *, port: int, pages: Path, root: Path, gateway_port: int,
                  max_age: int) -> NginxServer:
    """bench/nginx-browser.conf: the friends page, the pictures as static files, and the
    old API passed to the gateway (bench/browser_headline.py)."""
    conf = _fill(BROWSER_CONF.read_text(), {
        "DIR": str(dir_.resolve()), "PORT": str(port), "PAGES": str(pages.resolve()),
        "ROOT": str(root.resolve()), "GATEWAY_PORT": str(gateway_port),
        "MAX_AGE": str(max_age)})
    return NginxServer(conf, dir_)
