"""A client that stops reading a large (sendfile) answer is dropped after
server.send_timeout, quietly: no traceback, the file closed, the server serving on."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import pytest

PNG = b"\x89PNG\r\n\x1a\n"
BIG = 12 * 1024 * 1024  # past the socket buffers of both ends on loopback


@pytest.fixture
async def client(gateway_client, gateway_config, origin_dir):
    (origin_dir / "big.png").write_bytes(PNG + os.urandom(BIG - len(PNG)))
    return await gateway_client(gateway_config(
        memory={"max_object_bytes": 1024 * 1024},  # so the disk hands out a file
        origin={"max_bytes": 32 * 1024 * 1024},
        server={"send_timeout": 0.5}))


async def test_a_client_that_stops_reading_is_dropped_quietly(client, caplog):
    async with client.get("/images/big.png") as resp:  # MISS, from memory
        assert len(await resp.read()) == BIG
    caplog.set_level(logging.INFO)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", client.port))
    await loop.sock_sendall(sock, b"GET /images/big.png HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(1.5)  # reads nothing meanwhile
    received = 0
    while True:  # what was already buffered, then the end the server made
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += len(chunk)
    sock.close()
    assert received < BIG  # the body was cut off, not sent whole
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not [r for r in records if r.exc_info or "Unhandled" in r.getMessage()], records
    assert any("server.send_timeout" in r.getMessage() for r in records)
    async with client.get("/images/big.png") as resp:  # serving on
        assert resp.headers["X-Cache"] == "HIT-DISK" and len(await resp.read()) == BIG
