"""The gateway as a real process: ``python -m gateway`` on a free port.

    gw = GatewayProcess({"GATEWAY_REDIS_URL": redis_url, **s3.env(proxy.url)})
    gw.start()                 # returns once GET /healthz answers 200
    gw.url, gw.port, gw.pid
    gw.terminate()             # SIGTERM, wait; the exit code
    gw.kill()                  # SIGKILL
    gw.restart()               # same port, same settings
    gw.stderr_text()           # its log so far

Its working directory is a temp dir holding its stdout/stderr files; unless the
caller sets them, GATEWAY_DISK_PATH and GATEWAY_ORIGIN_ROOT point into it too, so
processes never share a cache by accident. GATEWAY_* variables of the
environment running the tests are not passed on (only the caller's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from . import REPO_ROOT, free_port, tail


class GatewayProcess:
    def __init__(self, env: Mapping[str, str] | None = None, *, port: int | None = None,
                 args: Sequence[str] = (), startup_timeout: float = 15.0,
                 start: bool = False, host: str = "127.0.0.1",
                 prefix: Sequence[str] = ()) -> None:
        self.host = host  # another host's address: in a network namespace (prefix)
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", NAME]
        self.port = port or free_port()
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="test-gateway-"))
        self.stdout_path = self.dir / "stdout.log"
        self.stderr_path = self.dir / "stderr.log"
        self.env = self._environment(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    def _environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        pythonpath = [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env.update({
            "PYTHONPATH": os.pathsep.join(pythonpath),
            "PYTHONUNBUFFERED": "1",
            "GATEWAY_SERVER_HOST": self.host,
            "GATEWAY_DISK_PATH": str(self.dir / "cache"),
            "GATEWAY_ORIGIN_ROOT": str(self.dir / "origin"),
        })
        env.update(extra)
        env["GATEWAY_SERVER_PORT"] = str(self.port)
        (self.dir / "origin").mkdir(exist_ok=True)
        return env

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the gateway was not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self) -> GatewayProcess:
        """Spawn it and wait until GET /healthz is 200 (its stderr in the error if not)."""
        if self.running:
            return self
        argv = [*self.prefix, sys.executable, "-m", "gateway", *self.args]
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self._proc = subprocess.Popen(
                argv, env=self.env, cwd=self.dir, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"gateway exited with {code} before it was ready "
                    f"(port {self.port}); stderr:\n{tail(self.stderr_path)}"
                )
            if self.healthy():
                return self
            if time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(
                    f"gateway not ready on port {self.port} within {self.startup_timeout} s; "
                    f"stderr:\n{tail(self.stderr_path)}"
                )
            time.sleep(0.05)

    def healthy(self, timeout: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=timeout) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async def astart(self) -> GatewayProcess:
        """start() without blocking the running event loop."""
        return await asyncio.to_thread(self.start)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit; its exit code.

        TimeoutError (after a SIGKILL) if it does not stop within ``timeout``.
        """
        proc = self._proc
        if proc is None:
            raise RuntimeError("the gateway was not started")
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise TimeoutError(
                    f"gateway ignored SIGTERM for {timeout} s; stderr:\n"
                    f"{tail(self.stderr_path)}"
                ) from None
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL to the gateway and any workers it forked."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: workers too
            proc.kill()
            proc.wait()
        return proc.returncode

    def restart(self) -> GatewayProcess:
        """terminate() then start() on the same port with the same settings."""
        if self.running:
            self.terminate()
        return self.start()

    def send_signal(self, signum: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signum)

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def close(self) -> None:
        """Stop it however it takes, and remove its temp dir."""
        if self.running:
            with contextlib.suppress(TimeoutError):
                self.terminate(timeout=10)
        self._reap_group()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _reap_group(self) -> None:
        # Workers left behind by a dead supervisor share its process group.
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<GatewayProcess {self.url} {state}>"

