"""Client mistakes that used to end in a 500 or a traceback in the log."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import urllib.error
import urllib.request

import pytest

from gateway.model import encode_key
from gateway.origin import local as local_origin
from tests.support.fakes import until
from tests.support.images import noise_png

TOKEN = "a-token-long-enough-for-the-check"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def admin(gateway_client, gateway_config):
    return await gateway_client(gateway_config(admin={"token": TOKEN}))


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/admin/users/u1"), ("POST", "/admin/prefetch"),
])
@pytest.mark.parametrize("charset", ["bogus", "rot13", "hex"])  # no text codecs
async def test_json_in_an_unknown_charset_is_400(admin, method, path, charset):
    resp = await admin.request(method, path, data=b'{"image_id": "default_pfp.png"}',
                               headers={**AUTH,
                                        "Content-Type": f"application/json; charset={charset}"})
    assert resp.status == 400
    assert (await resp.json()) == {"success": False, "error": "body must be JSON",
                                   "request_id": resp.headers["X-Request-Id"]}


def _upload_and_leave(port: int, announced: int, sent: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"PUT /admin/images/gone.png HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                     b"Content-Length: %d\r\n\r\n" % announced + b"\x89PNG" * (sent // 4))


@pytest.mark.timeout(60)
async def test_a_client_leaving_mid_upload_is_one_info_line(spawn_gateway):
    gateway = await asyncio.to_thread(spawn_gateway, {"GATEWAY_ADMIN_TOKEN": TOKEN,
                                                      "GATEWAY_LOG_LEVEL": "INFO"})
    await asyncio.to_thread(_upload_and_leave, gateway.port, 1_000_000, 4096)

    def logged() -> bool:
        return "the client went away" in gateway.stderr_text()

    await until(logged, timeout=10, what="the disconnect in the log")
    log = gateway.stderr_text()
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "gone.png" in line or " ERROR " in line]
    assert len(lines) == 1, lines
    assert re.search(r" INFO gateway\.web\.errors: PUT /admin/images/gone\.png: the client "
                     r"went away \(ConnectionResetError\)$", lines[0]), lines
    assert not (gateway.dir / "origin" / "gone.png").exists()
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert ('gateway_http_requests_total{route="/admin/images/{image_id}",status="499"} 1.0'
            in metrics), metrics


async def test_an_upload_in_progress_cannot_be_asked_for(admin, origin_dir, monkeypatch):
    """The local origin writes an upload to a temp file in the target's folder, then
    renames it. Object keys may start with '.', so the temp file must have a name no
    key can have, or a client could read a half-written (or crash-left) upload."""
    base = f"http://127.0.0.1:{admin.server.port}/images/"
    seen: dict[str, int] = {}
    real_fsync = os.fsync

    def peek_then_fsync(fd: int) -> None:
        # The upload's bytes are written, not yet renamed: ask for every file there.
        # (A thread of the origin's: the event loop is free to answer.)
        for name in os.listdir(origin_dir):
            if name not in ("default_pfp.png", "up.png"):
                try:
                    with urllib.request.urlopen(base + encode_key(name), timeout=10) as resp:
                        seen[name] = resp.status
                except urllib.error.HTTPError as exc:
                    seen[name] = exc.code
        real_fsync(fd)

    monkeypatch.setattr(local_origin.os, "fsync", peek_then_fsync)
    resp = await admin.put("/admin/images/up.png", data=noise_png(4), headers=AUTH)
    assert resp.status == 200
    assert len(seen) == 1, seen  # the temp file was there
    assert list(seen.values()) == [400], seen  # refused as a key, before any I/O
    assert sorted(os.listdir(origin_dir)) == ["default_pfp.png", "up.png"]
