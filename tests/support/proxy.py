"""A counting, fault-injecting HTTP reverse proxy (for the S3 origin, mostly).

It runs its own event loop in a thread, so sync and async tests drive it the
same way, and it listens on a free port of 127.0.0.1:

    proxy = FaultProxy(s3_server.endpoint)     # started; proxy.url = "http://127.0.0.1:N"
    # point the gateway's s3.endpoint at proxy.url: presigned URLs are then signed
    # for the proxy's address; the Host header goes upstream as received.
    proxy.count("GET", "/bucket/key")          # requests seen so far (total(): all)
    proxy.gets("key")                          # GETs whose path contains "key"
    proxy.fail_with(503, b"<Error>...</Error>", times=2)
    proxy.refuse()                             # stop listening, drop open connections
    proxy.delay_first_byte(2.0)                # hold the response this long
    proxy.slow_body(1024)                      # send the body at ~1 KiB/s
    proxy.reset_mid_body()                     # half the body, then a TCP RST
    proxy.truncate_body()                      # full Content-Length, half the body, FIN
    proxy.set_header("Last-Modified", "junk")  # this value in every forwarded answer
    proxy.heal()                               # back to a faithful proxy
    proxy.close()

Faults last until heal() (fail_with(times=N) wears off after N requests); each
takes ``match=`` to hit only requests whose path contains that text. Every
request that reaches the proxy is counted, failed ones included; a refused
connection never becomes a request. The proxy reads the whole upstream body
before answering (objects in tests are small) and re-frames it with a
Content-Length.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections import Counter
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import unquote

import aiohttp
from yarl import URL

T = TypeVar("T")

# Headers that describe one connection, not the message (RFC 9110 7.6.1), plus the
# framing headers the proxy sets itself.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
    "trailer", "upgrade", "expect", "content-length",
})
MAX_HEAD = 64 * 1024
NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True)
class Seen:
    """One request the proxy received."""

    method: str
    path: str  # percent-decoded, without the query
    query: str
    headers: tuple[tuple[str, str], ...]
    target: str = ""  # the request target exactly as received (path and query)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


@dataclass
class _Faults:
    fail: tuple[int, bytes] | None = None
    fail_times: int | None = None
    fail_match: str | None = None
    delay: float = 0.0
    delay_match: str | None = None
    body: str | None = None  # "slow", "reset", "truncate"
    body_match: str | None = None
    bytes_per_sec: float = 0.0
    header: tuple[str, str] | None = None
    header_match: str | None = None


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    keep_alive: bool = True
    path: str = field(init=False)
    query: str = field(init=False)

    def __post_init__(self) -> None:
        raw_path, _, self.query = self.target.partition("?")
        self.path = unquote(raw_path)


class _BadRequest(Exception):
    pass


def _matches(pattern: str | None, req: _Request) -> bool:
    return pattern is None or pattern in req.path


class FaultProxy:
    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._faults = _Faults()
        self._seen: list[Seen] = []
        self._counts: Counter[tuple[str, str]] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name=f"FaultProxy->{upstream}", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._connections: set[asyncio.Transport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused = False
        self._closed = False
        self._thread.start()
        try:
            self._call(self._start())
        except BaseException:
            self._stop_loop()
            raise

    # --- test-thread API -------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    endpoint = url

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """Requests seen with this method and exact (decoded) path; None = any."""
        with self._lock:
            if method is not None and path is not None:
                return self._counts[(method.upper(), path)]
            return sum(1 for s in self._seen
                       if (method is None or s.method == method.upper())
                       and (path is None or s.path == path))

    def total(self) -> int:
        """Every request seen, whatever its method and path."""
        with self._lock:
            return len(self._seen)

    def gets(self, key_substring: str = "") -> int:
        """GET requests whose path contains ``key_substring``."""
        with self._lock:
            return sum(1 for s in self._seen if s.method == "GET" and key_substring in s.path)

    def requests(self) -> list[Seen]:
        """Every request seen so far, oldest first (headers included)."""
        with self._lock:
            return list(self._seen)

    def reset(self) -> None:
        """Forget the requests seen (faults stay as they are)."""
        with self._lock:
            self._seen.clear()
            self._counts.clear()

    def fail_with(self, status: int, body: bytes = b"", times: int | None = None,
                  *, match: str | None = None) -> None:
        """Answer ``status`` with ``body`` instead of forwarding; ``times`` requests or all."""
        with self._lock:
            self._faults.fail = (status, body)
            self._faults.fail_times = times
            self._faults.fail_match = match

    def refuse(self) -> None:
        """Stop listening (connects get ECONNREFUSED) and drop every open connection."""
        self._call(self._refuse())

    def delay_first_byte(self, seconds: float, *, match: str | None = None) -> None:
        """Hold each response ``seconds`` before its first byte."""
        with self._lock:
            self._faults.delay = seconds
            self._faults.delay_match = match

    def slow_body(self, bytes_per_sec: float, *, match: str | None = None) -> None:
        """Send headers at once, then the body at about ``bytes_per_sec``."""
        self._set_body_fault("slow", match, bytes_per_sec)

    def reset_mid_body(self, *, match: str | None = None) -> None:
        """Send the headers and half the body, then reset the connection (RST)."""
        self._set_body_fault("reset", match)

    def truncate_body(self, *, match: str | None = None) -> None:
        """Announce the full Content-Length, send half the body, then close (FIN)."""
        self._set_body_fault("truncate", match)

    def set_header(self, name: str, value: str, *, match: str | None = None) -> None:
        """Forwarded answers carry ``value`` (latin-1 text, sent as is) as their only
        ``name`` header: what the upstream will not store (a date no calendar holds)."""
        with self._lock:
            self._faults.header = (name, value)
            self._faults.header_match = match

    def heal(self) -> None:
        """All faults off; listen again (same port) after refuse()."""
        with self._lock:
            self._faults = _Faults()
        if self._refused:
            self._call(self._listen())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._shutdown())
        finally:
            self._stop_loop()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FaultProxy {self.url} -> {self.upstream}>"

    # --- plumbing between the threads -----------------------------------

    def _set_body_fault(self, kind: str, match: str | None, rate: float = 0.0) -> None:
        with self._lock:
            self._faults.body = kind
            self._faults.body_match = match
            self._faults.bytes_per_sec = rate

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # --- inside the proxy's loop ----------------------------------------

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=60),
            connector=aiohttp.TCPConnector(limit=0),
        )
        await self._listen()

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=MAX_HEAD)
        self._refused = False

    async def _refuse(self) -> None:
        self._refused = True
        server, self._server = self._server, None
        if server is not None:
            server.close()  # stop accepting: new connects get ECONNREFUSED
        await self._drop_connections()
        if server is not None:
            await server.wait_closed()

    async def _drop_connections(self) -> None:
        for transport in list(self._connections):
            transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _shutdown(self) -> None:
        await self._refuse()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _take_faults(self, req: _Request) -> tuple[tuple[int, bytes] | None, float,
                                                     str | None, float,
                                                     tuple[str, str] | None]:
        """Record the request and pick the faults that apply to it."""
        with self._lock:
            self._seen.append(Seen(req.method, req.path, req.query, tuple(req.headers),
                                  req.target))
            self._counts[(req.method, req.path)] += 1
            f = self._faults
            fail = None
            if f.fail is not None and _matches(f.fail_match, req):
                fail = f.fail
                if f.fail_times is not None:
                    f.fail_times -= 1
                    if f.fail_times <= 0:
                        f.fail, f.fail_times, f.fail_match = None, None, None
            delay = f.delay if _matches(f.delay_match, req) else 0.0
            body = f.body if _matches(f.body_match, req) else None
            header = f.header if _matches(f.header_match, req) else None
            return fail, delay, body, f.bytes_per_sec, header

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)
        self._tasks.add(task)
        self._connections.add(transport)
        try:
            while True:
                req = await self._read_request(reader, writer)
                if req is None or not await self._handle(req, writer):
                    break
        except (_BadRequest, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            self._connections.discard(transport)
            transport.close()

    async def _read_request(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> _Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _BadRequest("incomplete request head") from None
            return None  # the client closed between requests
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            raise _BadRequest(lines[0]) from None
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        values = {k.lower(): v for k, v in headers}
        if values.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if "chunked" in values.get("transfer-encoding", "").lower():
            body = await self._read_chunked(reader)
        else:
            body = await reader.readexactly(int(values.get("content-length", "0") or 0))
        connection = values.get("connection", "").lower()
        keep_alive = "close" not in connection and (
            version == "HTTP/1.1" or "keep-alive" in connection)
        return _Request(method.upper(), target, version, headers, body, keep_alive)

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers are dropped
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)

    async def _handle(self, req: _Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must not be reused."""
        fail, delay, body_fault, rate, header = self._take_faults(req)
        if delay:
            await asyncio.sleep(delay)
        if fail is not None:
            status, payload = fail
            headers = [("Content-Type", "application/xml")] if payload else []
            if req.method == "HEAD":
                headers.append(("Content-Length", str(len(payload))))
            await self._respond(writer, req, status, headers, payload,
                                bodyless=req.method == "HEAD")
            return req.keep_alive
        status, headers, body = await self._forward(req)
        if header is not None:
            headers = [(k, v) for k, v in headers if k.lower() != header[0].lower()]
            headers.append(header)
        bodyless = req.method == "HEAD" or status in NO_BODY_STATUSES or status < 200
        if bodyless or not body or body_fault is None:
            await self._respond(writer, req, status, headers, body, bodyless=bodyless)
            return req.keep_alive
        head = self._head(req, status, headers, len(body))
        half = len(body) // 2
        if body_fault == "slow":
            writer.write(head)
            await writer.drain()
            step = max(1, int(rate / 20))
            for start in range(0, len(body), step):
                writer.write(body[start:start + step])
                await writer.drain()
                await asyncio.sleep(step / rate)
            return req.keep_alive
        writer.write(head + body[:half])
        await writer.drain()
        await self._flushed(writer)
        await asyncio.sleep(0.05)  # let the client read what it got
        if body_fault == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:  # truncate
            writer.close()
        return False

    async def _forward(self, req: _Request) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._session is not None
        headers = [(k, v) for k, v in req.headers if k.lower() not in HOP_BY_HOP]
        try:
            async with self._session.request(
                req.method, URL(self.upstream + req.target, encoded=True),
                headers=headers, data=req.body if req.body else None,
                allow_redirects=False,
                skip_auto_headers=("Content-Type", "User-Agent", "Accept", "Accept-Encoding"),
            ) as resp:
                body = await resp.read()
                out = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
                if req.method == "HEAD" or resp.status in NO_BODY_STATUSES:
                    # keep the upstream's Content-Length: it describes the object
                    out = [(k, v) for k, v in out
                           if k.lower() not in HOP_BY_HOP or k.lower() == "content-length"]
                else:
                    out = [(k, v) for k, v in out if k.lower() not in HOP_BY_HOP]
                return resp.status, out, body
        except (aiohttp.ClientError, TimeoutError) as exc:
            message = f"proxy: upstream failed: {exc!r}".encode()
            return 502, [("Content-Type", "text/plain")], message

    @staticmethod
    def _head(req: _Request, status: int, headers: list[tuple[str, str]],
              length: int | None) -> bytes:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        if not req.keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _respond(self, writer: asyncio.StreamWriter, req: _Request, status: int,
                       headers: list[tuple[str, str]], body: bytes,
                       bodyless: bool = False) -> None:
        if bodyless:
            writer.write(self._head(req, status, headers, None))
        else:
            writer.write(self._head(req, status, headers, len(body)) + body)
        await writer.drain()

    @staticmethod
    async def _flushed(writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        for _ in range(200):
            if transport.get_write_buffer_size() == 0:
                return
            await asyncio.sleep(0.005)
