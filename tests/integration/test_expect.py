"""The ``Expect`` header over a real socket: the gateway's answer, never aiohttp's.

aiohttp answers an expectation it does not know with its own 417 (text/plain that
quotes the header, ``Server: Python/... aiohttp/...``), and tells any client that
sends ``Expect: 100-continue`` to go on with its body before a handler has looked at
the request, so the admin routes invited unauthenticated uploads.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

TOKEN = "a-token-long-enough-for-the-check"


class Answer:
    def __init__(self, head: bytes, body: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        self.body = body

    def json(self) -> dict:
        return json.loads(self.body)


class Conversation:
    """One raw connection: answers are read one by one, as they come."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buffer += chunk

    def answer(self) -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        answer = Answer(head, b"")
        size = int(answer.headers.get("content-length", "0"))
        while len(self.buffer) < size:
            self._fill()
        answer.body, self.buffer = self.buffer[:size], self.buffer[size:]
        return answer

    def close(self) -> None:
        self.sock.close()


def ask(port: int, request: bytes) -> Answer:
    talk = Conversation(port)
    try:
        talk.send(request)
        return talk.answer()
    finally:
        talk.close()


def assert_gateway_error(answer: Answer, status: int) -> None:
    assert answer.status == status
    h = answer.headers
    assert h["content-type"].startswith("application/json")
    assert h["cache-control"] == "no-store"
    assert h["x-content-type-options"] == "nosniff"
    assert h["server"] == "image-gateway"
    assert answer.json()["request_id"] == h["x-request-id"]
    assert answer.json()["success"] is False


@pytest.fixture
async def gateway(spawn_gateway):
    return await asyncio.to_thread(spawn_gateway, {"GATEWAY_ADMIN_TOKEN": TOKEN})


ROUTES = ["/healthz", "/livez", "/readyz", "/metrics", "/images/default_pfp.png",
          "/images/default_pfp.png/url", "/client/sw.js", "/openapi.json", "/nowhere",
          "/admin/stats", "/admin/nowhere"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("expect", ["bogus<script>", "100-continue, bogus"])
async def test_an_unknown_expectation_is_the_gateways_417(gateway, expect):
    for path in ROUTES:
        request = (f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                   f"Expect: {expect}\r\n\r\n").encode()
        answer = await asyncio.to_thread(ask, gateway.port, request)
        assert_gateway_error(answer, 417)
        assert answer.json()["error"] == "unsupported Expect header", path
        assert b"bogus" not in answer.body and b"script" not in answer.body, path
    log = gateway.stderr_text()
    assert "Traceback" not in log and "bogus" not in log


@pytest.mark.timeout(60)
async def test_admin_sends_no_100_continue_before_the_token_is_checked(gateway):
    body = b'{"image_id": "default_pfp.png"}'
    head = ("PUT /admin/users/u1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n").encode()
    for auth in (b"", b"Authorization: Bearer wrong-token-of-some-length\r\n"):
        # Without the body: an answer must come anyway, and it is the refusal.
        answer = await asyncio.to_thread(ask, gateway.port, head + auth + b"\r\n")
        assert_gateway_error(answer, 401)
    talk = Conversation(gateway.port)
    try:
        talk.send(head + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        go_on = await asyncio.to_thread(talk.answer)
        assert go_on.status_line == "HTTP/1.1 100 Continue"
        talk.send(body)
        done = await asyncio.to_thread(talk.answer)
        assert done.status == 200
        assert done.json()["image_id"] == "default_pfp.png"
    finally:
        talk.close()


@pytest.mark.timeout(60)
async def test_public_routes_still_say_100_continue(gateway):
    answer = await asyncio.to_thread(
        ask, gateway.port,
        b"GET /images/default_pfp.png HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\n\r\n")
    assert answer.status_line == "HTTP/1.1 100 Continue"
