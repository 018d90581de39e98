"""A real Redis Sentinel set-up: a master, a replica and three sentinels.

    ha = SentinelSet()            # master + replica + 3 x redis-server --sentinel
    ha.sentinels                  # ["127.0.0.1:N", ...] (GATEWAY_REDIS_SENTINELS)
    ha.master_port()              # what the sentinels name as master now
    ha.kill_master()              # SIGKILL the current master; the sentinels promote
    ha.wait_for_failover(old)     # until they name another master (returns its port)
    ha.close()

Failover is tuned for tests (down-after 1 s, failover-timeout 5 s); everything else is
what an operator would run: quorum 2 of 3.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from . import free_port, tail
from .redis_server import RedisServer, find_redis_server, resp_command

MASTER_NAME = "gwmaster"


class Sentinel:
    def __init__(self, folder: Path, master_port: int) -> None:
        self.port = free_port()
        self.conf = folder / f"sentinel-{self.port}.conf"
        self.log_path = folder / f"sentinel-{self.port}.log"
        self.conf.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            "protected-mode no\n"
            f"dir {folder}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [find_redis_server(), str(self.conf), "--sentinel"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                if resp_command(self.port, "PING") == b"+PONG":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sentinel did not start:\n{tail(self.log_path)}")
            time.sleep(0.05)

    def master_port(self) -> int | None:
        reply = _array(self.port, "SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        return int(reply[1]) if len(reply) == 2 else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class SentinelSet:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="test-sentinel-"))
        self.servers: list[RedisServer] = []
        self.watchers: list[Sentinel] = []
        try:
            master = RedisServer()
            self.servers.append(master)
            self.servers.append(RedisServer(args=["--replicaof", "127.0.0.1",
                                                  str(master.port)]))
            self._wait_replicated(master)
            self.watchers = [Sentinel(self.dir, master.port) for _ in range(3)]
            self._wait_known()
        except BaseException:
            self.close()
            raise

    @property
    def sentinels(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.watchers]

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def master_port(self) -> int:
        ports = {s.master_port() for s in self.watchers if s.proc.poll() is None}
        ports.discard(None)
        if len(ports) != 1:
            raise RuntimeError(f"the sentinels disagree on the master: {ports}")
        port = ports.pop()
        assert port is not None
        return port

    def kill_master(self) -> int:
        """SIGKILL the master; returns its port."""
        port = self.master_port()
        self.server_on(port).kill()
        return port

    def wait_for_failover(self, old: int, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = {s.master_port() for s in self.watchers}
            if len(ports) == 1 and old not in ports and None not in ports:
                port = ports.pop()
                assert port is not None
                if self.server_on(port).command("ROLE").startswith(b"*3"):
                    return port  # it says it is the master (ROLE: 3 items)
            time.sleep(0.1)
        raise TimeoutError(f"no failover within {timeout} s:\n"
                           f"{tail(self.watchers[0].log_path)}")

    def _wait_replicated(self, master: RedisServer) -> None:
        deadline = time.monotonic() + 10
        while _replicas(master.port) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not connect to the master")
            time.sleep(0.05)

    def _wait_known(self) -> None:
        # Each sentinel must know the replica and the others before a failover can work.
        deadline = time.monotonic() + 20
        while True:
            ready = all(
                _field(w.port, "num-slaves") >= 1 and _field(w.port, "num-other-sentinels") >= 2
                for w in self.watchers)
            if ready:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"sentinels did not find each other:\n"
                                   f"{tail(self.watchers[0].log_path)}")
            time.sleep(0.1)

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
        for server in self.servers:
            server.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SentinelSet:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _call(port: int, *args: str) -> Any:
    """One command through redis-py's blocking client (the tests' own asyncio loop is
    not needed for set-up)."""
    client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def _array(port: int, *args: str) -> list[str]:
    return list(_call(port, *args) or [])


def _replicas(port: int) -> int:
    info = _call(port, "INFO", "replication")
    return int(info.get("connected_slaves", 0))


def _field(port: int, name: str) -> int:
    master = _call(port, "SENTINEL", "MASTER", MASTER_NAME)
    if isinstance(master, list):
        master = dict(zip(master[::2], master[1::2], strict=False))
    return int(master.get(name, 0))
