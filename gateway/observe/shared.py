"""The folder the workers of one gateway share: snapshots, retired totals, commands.

The supervisor makes it (:func:`prepare_shared_dir`) before it spawns the
workers and removes it at exit; each worker publishes its snapshot there as
``w-<pid>-<start>.json`` and whoever answers /metrics or /admin/stats reads the
others'. Every write replaces a whole file (temp file + rename), so a reader
sees an old or a new file, never half of one.

The functions below block on file I/O: the hub runs them in a thread. The
supervisor imports this module too, so it must stay light: no aiohttp,
prometheus_client or redis behind its imports.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.files import atomic_write
from gateway.observe.aggregate import Baseline
from gateway.observe.snapshot import Snapshot

log = logging.getLogger(__name__)

SHARED_DIR_ENV = "IMAGE_GATEWAY_STATS_DIR"

_WORKER_PREFIX = "w-"
_RETIRED = "retired.json"
_CONTROL = "control.json"
_BASELINE = "baseline.json"
_LOCK = ".lock"


def prepare_shared_dir() -> str:
    """For the supervisor, before it spawns workers: a fresh folder for their
    snapshots, named in the environment the workers inherit, removed at exit."""
    path = tempfile.mkdtemp(prefix="image-gateway-stats-")
    os.environ[SHARED_DIR_ENV] = path
    atexit.register(shutil.rmtree, path, True)
    return path


def worker_file(pid: int, started: float) -> str:
    """The name of a worker's snapshot: the start time tells a reused pid apart."""
    return f"{_WORKER_PREFIX}{pid}-{int(started * 1e6)}.json"


def write_snapshot(folder: Path, name: str, snapshot: Snapshot) -> None:
    _write_json(folder / name, snapshot.to_json())


def _write_json(path: Path, data: Any) -> None:
    # Not durable: the folder lives only as long as the gateway; a power cut ends both.
    atomic_write(path, json.dumps(data, separators=(",", ":")).encode(), durable=False)


@contextlib.contextmanager
def _locked(folder: Path, mode: int) -> Iterator[None]:
    with open(folder / _LOCK, "a") as fh:
        fcntl.flock(fh.fileno(), mode)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("unreadable stats file %s: %s", path.name, exc)
        return None


def _parse_name(name: str) -> tuple[int, int] | None:
    """(pid, start in microseconds) of ``w-<pid>-<start>.json``."""
    stem = name.removeprefix(_WORKER_PREFIX).removesuffix(".json")
    pid, _, start = stem.partition("-")
    if not (pid.isdigit() and start.isdigit()):
        return None
    return int(pid), int(start)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def _dead_files(folder: Path, own: str) -> list[Path]:
    """Files of workers that are gone: the pid is dead, or the pid now belongs to a
    newer worker (pid reuse)."""
    newest: dict[int, int] = {}
    files: list[tuple[Path, int, int]] = []
    for path in folder.glob(f"{_WORKER_PREFIX}*.json"):
        parsed = _parse_name(path.name)
        if parsed is None or path.name == own:
            continue
        pid, start = parsed
        files.append((path, pid, start))
        newest[pid] = max(newest.get(pid, 0), start)
    return [path for path, pid, start in files
            if start < newest[pid] or not _pid_alive(pid)]


def _retire(folder: Path, dead: list[Path]) -> None:
    """Merge the totals of dead workers into retired.json and drop their files."""
    with _locked(folder, fcntl.LOCK_EX):
        data = _load(folder / _RETIRED)
        retired = Snapshot.from_json(data) if data else Snapshot(0, 0.0, 0.0)
        merged = False
        for path in dead:
            doc = _load(path)
            if doc is None:
                continue  # another reader retired it first
            try:
                retired.add_totals(Snapshot.from_json(doc))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("dropping unreadable stats file %s: %s", path.name, exc)
            merged = True
        if merged:
            _write_json(folder / _RETIRED, retired.to_json())
        for path in dead:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def collect(folder: Path, own: str, now: float, stale_after: float
            ) -> tuple[list[tuple[Snapshot, bool]], Snapshot | None]:
    """Every other worker's snapshot with whether it is live, and the retired totals."""
    dead = _dead_files(folder, own)
    if dead:
        _retire(folder, dead)
    snapshots: list[tuple[Snapshot, bool]] = []
    with _locked(folder, fcntl.LOCK_SH):
        for path in sorted(folder.glob(f"{_WORKER_PREFIX}*.json")):
            if path.name == own or _parse_name(path.name) is None:
                continue
            doc = _load(path)
            if doc is None:
                continue
            try:
                snapshot = Snapshot.from_json(doc)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("unreadable stats file %s: %s", path.name, exc)
                continue
            snapshots.append((snapshot, now - snapshot.written <= stale_after))
        data = _load(folder / _RETIRED)
    retired = None
    if data:
        try:
            retired = Snapshot.from_json(data)
        except (KeyError, TypeError, ValueError):
            retired = None
    return snapshots, retired


def read_control(folder: Path) -> dict[str, int]:
    data = _load(folder / _CONTROL)
    if not isinstance(data, dict):
        return {}
    return {k: int(v) for k, v in data.items() if isinstance(v, int)}


def write_reset(folder: Path, totals: Snapshot, now: float) -> Baseline:
    with _locked(folder, fcntl.LOCK_EX):
        control = read_control(folder)
        generation = control.get("reset_generation", 0) + 1
        baseline = Baseline(generation, now, totals)
        _write_json(folder / _BASELINE,
                    {"generation": generation, "at": now, "totals": totals.to_json()})
        control["reset_generation"] = generation
        _write_json(folder / _CONTROL, control)
    return baseline


def read_baseline(folder: Path) -> Baseline | None:
    data = _load(folder / _BASELINE)
    if not isinstance(data, dict):
        return None
    try:
        return Baseline(int(data["generation"]), float(data["at"]),
                        Snapshot.from_json(data["totals"]))
    except (KeyError, TypeError, ValueError):
        return None


def bump_clear(folder: Path) -> int:
    with _locked(folder, fcntl.LOCK_EX):
        control = read_control(folder)
        control["clear_generation"] = control.get("clear_generation", 0) + 1
        _write_json(folder / _CONTROL, control)
    return control["clear_generation"]
