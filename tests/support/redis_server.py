"""A real ``redis-server`` on a free port, with the knobs outage tests need.

    server = RedisServer()        # started: server.url == "redis://127.0.0.1:N/0"
    server.stop(); server.start() # down, then up again on the same port (empty)
    server.kill()                 # SIGKILL, like a crash
    server.pause(); server.resume()  # SIGSTOP/SIGCONT: connects succeed, nothing answers
    server.close()                # stop and remove its temp dir
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from . import free_port, tail

SEARCH_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/bin")


def find_redis_server() -> str:
    """Path of the redis-server binary; a clear error if it is not installed."""
    found = shutil.which("redis-server")
    if found:
        return found
    for directory in SEARCH_DIRS:
        candidate = os.path.join(directory, "redis-server")
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "redis-server is not installed; the tests need a real Redis. "
        "Run `make system-deps` (as root) or `apt-get install redis-server`."
    )


def resp_command(port: int, *args: str, timeout: float = 1.0, host: str = "127.0.0.1"
                 ) -> bytes:
    """Send one command to host:port in RESP and return the first reply line."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.strip()


class RedisServer:
    def __init__(self, port: int | None = None, *, startup_timeout: float = 10.0,
                 start: bool = True, args: Sequence[str] = (), bind: str = "127.0.0.1",
                 prefix: Sequence[str] = ()) -> None:
        self.binary = find_redis_server()
        self.args = list(args)  # more redis-server options (TLS, replicaof...)
        self.bind = bind
        self.prefix = list(prefix)  # runs it under this (ip netns exec NAME)
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="test-redis-"))
        self.log_path = self.dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        if start:
            self.start()

    @property
    def url(self) -> str:
        return f"redis://{self.bind}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    def start(self) -> None:
        """Start (or restart) on ``self.port``; returns once it answers PING."""
        if self.running:
            return
        argv = [
            *self.prefix, self.binary,
            "--port", str(self.port),
            "--bind", self.bind,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--protected-mode", "no",
            "--loglevel", "warning",
            *self.args,
        ]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._paused = False
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self._proc.returncode} on port {self.port}:\n"
                    f"{tail(self.log_path)}"
                )
            if self.ping():
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server did not answer PING on port {self.port} within "
                    f"{self.startup_timeout} s:\n{tail(self.log_path)}"
                )
            time.sleep(0.02)

    def ping(self, timeout: float = 0.5) -> bool:
        try:
            return resp_command(self.port, "PING", timeout=timeout, host=self.bind) == b"+PONG"
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """One command through a raw socket (for setup: FLUSHALL, CONFIG SET...)."""
        return resp_command(self.port, *args, timeout=5.0, host=self.bind)

    def flushall(self) -> None:
        reply = self.command("FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout``), wait; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            if self._paused:
                proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._paused = False
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL, like a crash or an OOM kill; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._paused = False
        return proc.returncode

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers."""
        if not self.running:
            raise RuntimeError("redis-server is not running")
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after pause()."""
        if self._proc is not None and self._paused:
            self._proc.send_signal(signal.SIGCONT)
        self._paused = False

    def ensure_running(self) -> None:
        """Undo whatever a previous test did: resume if paused, start if down."""
        self.resume()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"<RedisServer {self.url} {state}>"
