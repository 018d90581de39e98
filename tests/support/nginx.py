"""Real nginx for tests: render deploy/nginx.conf for a temp dir, check it, run it.

``render_nginx_conf`` rewrites only what a deployment substitutes (the ``# DEPLOY``
lines of deploy/nginx.conf): listen ports, upstream servers, pid, logs, the
micro-cache directory, plus nginx's temp directories and the worker user. Every
rewrite must find its line: if deploy/nginx.conf changes shape, rendering fails
with a message naming the line instead of silently testing something else.

The certificate paths are placeholders (``${NGINX_TLS_CERTIFICATE}``,
``${NGINX_TLS_CERTIFICATE_KEY}``) that the nginx image's entrypoint fills in at
container start with envsubst, limited to those names; ``envsubst`` here applies the
same rule (only the named variables, ``$NAME`` and ``${NAME}``), and a rendering
that leaves any ``${`` behind is refused.

The shipped file has two servers: plain HTTP (a redirect, and /healthz) and
HTTPS + HTTP/2, where every rule lives. With ``tls=TlsFiles(cert, key)`` both
are kept (plain on ``listen_port``, TLS on ``tls_port``: the file as deployed).
Without, the rules are tested over plain HTTP: the redirect server is dropped
and the TLS server listens on ``listen_port`` without ``ssl``/``http2`` and its
``ssl_*`` lines; every location stays as shipped.

    from tests.support import free_port

    conf = render_nginx_conf(SHIPPED_CONF.read_text(), listen_port=free_port(),
                             upstreams=["127.0.0.1:8081", "127.0.0.1:8082"],
                             tmp_dir=tmp_path)
    with NginxServer(conf, tmp_path) as edge:
        urlopen(edge.url + "/healthz")
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.support import REPO_ROOT

SHIPPED_CONF = REPO_ROOT / "deploy" / "nginx.conf"

_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


class NginxNotFound(RuntimeError):
    """No nginx binary on this machine."""


def find_nginx() -> str:
    """The nginx binary: PATH first, then the usual sbin locations."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in _CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    raise NginxNotFound(
        "nginx not found in PATH or " + ", ".join(_CANDIDATES)
        + ": install it (`make system-deps`, or `apt-get install nginx-light`)"
    )


def _q(path: str | os.PathLike[str]) -> str:
    """A path as one quoted nginx argument."""
    text = os.fspath(path)
    if '"' in text or "\\" in text:
        raise ValueError(f"unusable path for nginx.conf: {text!r}")
    return f'"{text}"'


def _sub(pattern: str, repl: str | Callable[[re.Match[str]], str], text: str, *,
         what: str, count: int | None = 1) -> str:
    """re.subn (MULTILINE) that insists on ``count`` matches (None: at least one).

    A string ``repl`` is literal (no backslash escapes); a callable gets the match.
    """
    replace = repl if callable(repl) else (lambda _m: repl)
    new, n = re.subn(pattern, replace, text, flags=re.MULTILINE)
    if (count is None and n == 0) or (count is not None and n != count):
        expected = "at least one" if count is None else str(count)
        raise ValueError(f"nginx.conf: expected {expected} {what}, found {n}")
    return new


def _keep(group: int, tail: str) -> Callable[[re.Match[str]], str]:
    """Replacement: the match's ``group`` followed by ``tail`` (taken literally)."""
    return lambda m: m.group(group) + tail


def _address(address: str) -> Callable[[re.Match[str]], str]:
    """Replacement: group 1, ``address`` (literal), group 2 (what followed the port)."""
    return lambda m: m.group(1) + address + m.group(2)


@dataclass(frozen=True)
class TlsFiles:
    """A certificate chain and its key (PEM files) for the TLS server."""

    cert: Path
    key: Path


def make_self_signed(dir_: str | os.PathLike[str], name: str = "localhost") -> TlsFiles:
    """A throwaway self-signed pair for ``name`` (and 127.0.0.1), made by openssl."""
    out = Path(dir_).resolve()
    out.mkdir(parents=True, exist_ok=True)
    pair = TlsFiles(cert=out / "tls.crt", key=out / "tls.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
         "-keyout", str(pair.key), "-out", str(pair.cert)],
        check=True, capture_output=True, timeout=60,
    )
    return pair


# The placeholders of deploy/nginx.conf, and the filter compose.yaml gives the nginx
# image's entrypoint (NGINX_ENVSUBST_FILTER): a regular expression on variable names.
TLS_VARIABLES = ("NGINX_TLS_CERTIFICATE", "NGINX_TLS_CERTIFICATE_KEY")
_UNSAFE_VALUE = re.compile(r"[\s;{}$\"'\\]")


def envsubst(text: str, values: dict[str, str]) -> str:
    """``envsubst '$A $B'``: ``$NAME`` and ``${NAME}`` replaced for the named variables
    only, everything else (nginx's ``$uri``, an unnamed ``${X}``) left as it is."""
    for name, value in values.items():
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise ValueError(f"envsubst: not a variable name: {name!r}")
        if _UNSAFE_VALUE.search(value):
            raise ValueError(f"envsubst: {name}={value!r} would not stay one nginx argument")
    if not values:
        return text
    names = "|".join(re.escape(name) for name in values)
    # envsubst takes the longest name: $AB is not $A followed by B.
    pattern = re.compile(rf"\$(?:\{{({names})\}}|({names})(?!\w))")
    return pattern.sub(lambda m: values[m.group(1) or m.group(2)], text)


def _drop_server(text: str, listen: str) -> str:
    """``text`` without the top-level ``server { ... }`` block that listens on ``listen``."""
    line = re.search(rf"^\s*listen\s+{re.escape(listen)}[\s;]", text, flags=re.MULTILINE)
    if line is None:
        raise ValueError(f"nginx.conf: expected a server listening on {listen}")
    start = text.rfind("    server {", 0, line.start())
    if start < 0:
        raise ValueError(f"nginx.conf: no `server {{` before the listen line {listen}")
    depth, i = 0, text.index("{", start)
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            break
        i += 1
    return text[:start] + text[i + 1:].lstrip("\n")


def render_nginx_conf(
    src_text: str,
    *,
    listen_port: int,
    upstreams: Sequence[str],
    tmp_dir: str | os.PathLike[str],
    listen_host: str = "127.0.0.1",
    micro_cache: bool = True,
    worker_processes: int = 2,
    tls: TlsFiles | None = None,
    tls_port: int | None = None,
) -> str:
    """deploy/nginx.conf with every deployment address pointed at ``tmp_dir``.

    ``upstreams`` are ``host:port`` strings; they replace the ``server`` lines of
    ``upstream image_gateway`` and keep the first line's parameters (max_fails...).
    ``micro_cache=False`` turns the edge cache off (``proxy_cache off;``) so that
    every request reaches a gateway and its own ``X-Cache`` is seen as it is.
    ``tls`` (with ``tls_port``) keeps both servers, see the module's docstring.
    """
    if not upstreams:
        raise ValueError("render_nginx_conf: at least one upstream is needed")
    tmp = Path(tmp_dir).resolve()
    text = src_text

    # Running as root, workers switch to the `user` of the file (nginx/www-data),
    # which cannot enter pytest's 0700 temp dirs: run them as root instead. As
    # any other user the directive would be ignored with a warning: drop it.
    user_line = (
        "user root;    # tests: workers must read/write the 0700 pytest temp dir"
        if os.geteuid() == 0 else "# user: not root, workers keep the current user"
    )
    text = _sub(r"^user\s+[^;]*;.*$", user_line, text, what="`user` line")
    text = _sub(r"^worker_processes\s+[^;]*;", f"worker_processes {int(worker_processes)};",
                text, what="`worker_processes` line")
    text = _sub(r"^pid\s+[^;]*;", f"pid {_q(tmp / 'nginx.pid')};", text, what="`pid` line")
    text = _sub(r"^(\s*error_log\s+)[^\s;]+", _keep(1, _q(tmp / "error.log")), text,
                what="`error_log` line with a path", count=None)
    text = _sub(r"^(\s*access_log\s+)/[^\s;]*", _keep(1, _q(tmp / "access.log")), text,
                what="`access_log` line with a path", count=None)
    text = _sub(r"^(\s*proxy_cache_path\s+)[^\s;]+", _keep(1, _q(tmp / "proxy_cache")), text,
                what="`proxy_cache_path` line")
    host = f"[{listen_host}]" if ":" in listen_host else listen_host
    text = _sub(r"^(\s*listen\s+)80(\s)", _address(f"{host}:{int(listen_port)}"), text,
                what="`listen 80` line")
    if tls is None:
        text = _drop_server(text, f"{host}:{int(listen_port)}")
        text = _sub(r"^(\s*listen\s+)443\s+ssl\s+http2(\s)",
                    _address(f"{host}:{int(listen_port)}"), text,
                    what="`listen 443 ssl http2` line")
        text = _sub(r"^\s*ssl_[a-z_]+\s[^;]*;.*\n", "", text, what="`ssl_*` lines",
                    count=None)
    else:
        if tls_port is None:
            raise ValueError("render_nginx_conf: tls needs a tls_port")
        text = _sub(r"^(\s*listen\s+)443(\s)", _address(f"{host}:{int(tls_port)}"), text,
                    what="`listen 443` line")
        for name in TLS_VARIABLES:
            if "${" + name + "}" not in text:
                raise ValueError(f"nginx.conf: expected the placeholder ${{{name}}}")
        text = envsubst(text, dict(zip(TLS_VARIABLES, (str(tls.cert), str(tls.key)),
                                       strict=True)))
    if not micro_cache:
        text = _sub(r"^(\s*)proxy_cache\s+img_micro\s*;", _keep(1, "proxy_cache off;"), text,
                    what="`proxy_cache img_micro;` line", count=None)

    # nginx's compiled-in temp dirs (/var/lib/nginx/... on Debian) may not exist
    # or be writable: keep them in the temp dir too.
    temp_lines = "".join(
        f"    {name}_temp_path {_q(tmp / (name + '_temp'))};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = _sub(r"^http\s*\{[^\n]*\n", _keep(0, temp_lines), text,
                what="top-level `http {` line")
    if "${" in text:
        line = next(line for line in text.splitlines() if "${" in line)
        raise ValueError(f"nginx.conf: a placeholder is left after rendering: {line.strip()}")

    return _replace_upstream_servers(text, upstreams)


def _replace_upstream_servers(text: str, upstreams: Sequence[str]) -> str:
    block = re.search(r"^\s*upstream\s+image_gateway\s*\{\n(.*?)^\s*\}", text,
                      flags=re.MULTILINE | re.DOTALL)
    if block is None:
        raise ValueError("nginx.conf: expected an `upstream image_gateway { ... }` block")
    body = block.group(1)
    server_line = re.compile(r"^([ \t]*)server\s+(\S+?)(\s[^;]*)?;[^\n]*\n", flags=re.MULTILINE)
    first = server_line.search(body)
    if first is None:
        raise ValueError("nginx.conf: the upstream image_gateway block has no `server` line")
    indent, params = first.group(1), (first.group(3) or "").rstrip()
    for address in upstreams:
        if not re.fullmatch(r"[A-Za-z0-9.\[\]:_-]+:\d+", address):
            raise ValueError(f"render_nginx_conf: upstream {address!r} is not host:port")
    new_servers = "".join(f"{indent}server {address}{params};\n" for address in upstreams)
    new_body = server_line.sub("", body[: first.start()]) + new_servers + server_line.sub(
        "", body[first.start():]
    )
    return text[: block.start(1)] + new_body + text[block.end(1):]


def check_nginx_conf(conf_text: str, tmp_dir: str | os.PathLike[str],
                     *, name: str = "nginx.conf") -> subprocess.CompletedProcess[str]:
    """Write the config into ``tmp_dir`` and run ``nginx -t`` on it."""
    tmp = Path(tmp_dir).resolve()
    conf_path = _write_conf(conf_text, tmp, name)
    return subprocess.run(
        [find_nginx(), "-t", "-q", "-p", f"{tmp}/", "-c", str(conf_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )


def _write_conf(conf_text: str, tmp: Path, name: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    # Builds whose compiled-in error log is relative (logs/error.log) open it
    # under the prefix before reading the config.
    (tmp / "logs").mkdir(exist_ok=True)
    conf_path = tmp / name
    conf_path.write_text(conf_text)
    return conf_path


_LISTEN = re.compile(r"^\s*listen\s+(?:(\[[^\]]+\]|[^\s:;]+):)?(\d+)\b([^;]*);",
                     flags=re.MULTILINE)


def _listen_address(conf_text: str) -> tuple[str, int]:
    """The first listen line's address (the plain HTTP one)."""
    match = _LISTEN.search(conf_text)
    if match is None:
        raise ValueError("nginx.conf: no `listen PORT` / `listen HOST:PORT` line")
    host = match.group(1) or "127.0.0.1"
    if host in ("0.0.0.0", "*"):
        host = "127.0.0.1"
    return host.strip("[]"), int(match.group(2))


def _tls_port(conf_text: str) -> int | None:
    """The port of the first ``listen ... ssl`` line, if any."""
    for match in _LISTEN.finditer(conf_text):
        if "ssl" in match.group(3).split():
            return int(match.group(2))
    return None


class NginxServer:
    """nginx in the foreground (``daemon off``) on a rendered config.

    ``NginxServer(conf_text, tmp_dir)``: the config is written to
    ``tmp_dir/nginx.conf``; ``start()`` returns once the listen port accepts
    connections (raising with nginx's output if it exits first); ``stop()`` is a
    fast shutdown (SIGTERM), idempotent. Also a context manager.
    """

    def __init__(self, conf_text: str, tmp_dir: str | os.PathLike[str]) -> None:
        self.conf_text = conf_text
        self.tmp_dir = Path(tmp_dir).resolve()
        self.host, self.port = _listen_address(conf_text)
        self.tls_port = _tls_port(conf_text)
        self.conf_path = self.tmp_dir / "nginx.conf"
        self.output_path = self.tmp_dir / "nginx.out"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def https_url(self) -> str:
        if self.tls_port is None:
            raise RuntimeError("this nginx.conf was rendered without TLS")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.tls_port}"

    def start(self, timeout: float = 10.0) -> NginxServer:
        if self.process is not None:
            raise RuntimeError("nginx is already started")
        if self._accepts():
            raise RuntimeError(f"port {self.port} already accepts connections before nginx")
        _write_conf(self.conf_text, self.tmp_dir, self.conf_path.name)
        with open(self.output_path, "wb") as out:
            self.process = subprocess.Popen(
                [find_nginx(), "-p", f"{self.tmp_dir}/", "-c", str(self.conf_path),
                 "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                self.process = None
                raise RuntimeError(f"nginx exited with {code} on start:\n{self.logs()}")
            if self._accepts():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"nginx did not accept on {self.url} within {timeout}s:\n{self.logs()}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                # The master leads its own session: take its workers with it.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        else:
            process.wait()

    def logs(self) -> str:
        """nginx's stdout/stderr and error log, for failure messages."""
        parts = []
        for path in (self.output_path, self.tmp_dir / "error.log"):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts) or "(no output)"

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
