"""Processes the bench starts itself, and memory sampling from /proc.

Everything is started in its own session (``start_new_session=True``), so a
whole tree -- a supervisor and the workers it spawned -- is found again by its
session id and stopped with one signal to the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import tail

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1000 * 1000
MiB = 1024 * 1024


def session_pids(sid: int) -> list[int]:
    """Every live process whose session id is ``sid`` (the tree of a session leader)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # comm may hold spaces/parens: the fields after the last ')' are fixed
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # a zombie holds no memory
            continue
        if int(fields[3]) == sid:  # state ppid pgrp session
            pids.append(int(entry))
    return pids


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def status_kb(pid: int, name: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class MemoryPeak:
    """The largest sampled sum of RSS over one process tree, and what it was made of."""

    rss_sum: int = 0
    processes: int = 0
    per_process: dict[int, int] = field(default_factory=dict)
    pss_sum: int = 0          # at the moment of the peak RSS sample
    hwm_sum: int = 0          # sum of each process's own VmHWM (kernel's peak), at stop
    samples: int = 0


class RssSampler:
    """A thread sampling the summed RSS of named session trees every ``interval`` s."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._watched: dict[str, int] = {}
        self.peaks: dict[str, MemoryPeak] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def watch(self, name: str, sid: int) -> None:
        with self._lock:
            self._watched[name] = sid
            self.peaks.setdefault(name, MemoryPeak())

    def unwatch(self, name: str) -> MemoryPeak:
        """Stop sampling ``name``; also record the kernel's per-process peaks (VmHWM)."""
        with self._lock:
            sid = self._watched.pop(name, None)
            peak = self.peaks.setdefault(name, MemoryPeak())
        if sid is not None:
            self._sample(name, sid)
            peak.hwm_sum = max(peak.hwm_sum,
                               sum(status_kb(pid, "VmHWM") for pid in session_pids(sid)))
        return peak

    def _sample(self, name: str, sid: int) -> None:
        pids = session_pids(sid)
        per = {pid: rss_bytes(pid) for pid in pids}
        total = sum(per.values())
        with self._lock:
            peak = self.peaks.setdefault(name, MemoryPeak())
            peak.samples += 1
            if total > peak.rss_sum:
                peak.rss_sum = total
                peak.processes = len(pids)
                peak.per_process = per
                peak.pss_sum = sum(pss_bytes(pid) for pid in pids)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                watched = list(self._watched.items())
            for name, sid in watched:
                self._sample(name, sid)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class ManagedProcess:
    """A command in its own session, its output in a log file; stop() ends the group."""

    def __init__(self, argv: Sequence[str], log_path: Path, *,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, count: int, timeout: float) -> None:
        """Until ``text`` occurs ``count`` times in the log; an error if it dies first."""
        deadline = time.monotonic() + timeout
        while self.log_text().count(text) < count:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited with {self.proc.returncode}:\n"
                                   f"{tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(self.argv[:3])}: {count} x {text!r} not seen "
                                   f"within {timeout} s:\n{tail(self.log_path)}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        kill_session(self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def kill_session(sid: int) -> None:
    """SIGKILL whatever is left in session ``sid`` (children that left the group too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGKILL)
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
