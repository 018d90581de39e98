"""The curl command line as a client: HTTP/2 over TLS the way browsers speak it.

    reply = curl("https://127.0.0.1:8443/images/a.png", "--http2", cacert=pair.cert)
    reply.version   # "2"
    reply.status, reply.headers["etag"], reply.body
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CurlReply:
    status: int
    version: str  # curl's %{http_version}: "1.1", "2"
    headers: dict[str, str]  # last response's headers, names lowercased
    body: bytes


def curl(url: str, *args: str, cacert: Path | None = None, timeout: float = 30) -> CurlReply:
    """One request with the curl binary; no redirects followed."""
    binary = shutil.which("curl")
    if binary is None:
        raise RuntimeError("curl is not installed: `make system-deps` installs it")
    with tempfile.TemporaryDirectory(prefix="curl-") as tmp:
        head, body = Path(tmp) / "head", Path(tmp) / "body"
        argv = [binary, "-sS", "--max-time", str(timeout), "-D", str(head), "-o", str(body),
                "-w", "%{http_version} %{http_code}", *args]
        if cacert is not None:
            argv += ["--cacert", str(cacert)]
        result = subprocess.run([*argv, url], capture_output=True, text=True,
                                timeout=timeout + 10, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"curl {url} failed ({result.returncode}): {result.stderr}")
        version, status = result.stdout.split()
        headers: dict[str, str] = {}
        for line in head.read_text(errors="replace").splitlines():
            if line.startswith("HTTP/"):
                headers = {}  # a new response (after a 100 Continue, say)
            elif ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        return CurlReply(status=int(status), version=version, headers=headers,
                         body=body.read_bytes() if body.exists() else b"")
