"""Every worker's figures in one view: /metrics and /admin/stats add workers up.

Single process (``server.workers = 1``)
    The view is this process's live Stats and Recorder; nothing is written.

Several workers
    The supervisor makes a fresh private folder before it spawns the workers
    (:func:`gateway.observe.workerdir.prepare_shared_dir`, passed on in
    ``$IMAGE_GATEWAY_STATS_DIR``) and removes it at exit. Every ``PUBLISH_INTERVAL``
    each worker writes its whole
    :class:`~gateway.observe.snapshot.Snapshot` there as ``w-<pid>-<start>.json`` (temp file
    + rename: readers see an old or a new file, never half of one). Whoever answers
    /metrics or /admin/stats takes its own figures live and the others' files, and
    adds them up. So the hot path stays plain ``+= 1`` on ints: no lock, no shared
    memory, no syscall per request.

    - Counters and histograms of a worker that died (crash, restart by the
      supervisor) are kept: its last file is merged into ``retired.json`` (under an
      ``flock``, so two readers never merge it twice) and the totals stay monotonic,
      as Prometheus expects. What it counted after its last publication is lost
      (at most ``PUBLISH_INTERVAL``), as is anything counted since the last
      publication of a worker when the host dies.
    - Gauges (cache sizes, Redis state) and the top-images lists come from live
      workers only. Memory sizes and limits add up (one LRU per worker); the disk
      figures are the largest of the workers' views (they share one folder, each
      counting what it has scanned and written).
    - Other workers' figures are up to ``PUBLISH_INTERVAL`` old; the answering
      worker's own are current.
    - Commands go the same way: a reset of the stats or a "clear all caches" bumps
      a generation in ``control.json``; each worker acts on it at its next tick.

    The view is one gateway (one host or container with its workers). Several
    replicas are added up by Prometheus, each scraped directly.

Reset
    /admin/stats shows figures since the last reset: the totals at the reset are
    kept as a baseline and subtracted. The Prometheus counters are never reset
    (they must only grow); the history chart is a rolling window and is not reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.observe.counters import Stats
from gateway.observe.histogram import Histogram
from gateway.observe.recorder import Recorder
from gateway.observe.snapshot import (
    Sample,
    Snapshot,
    all_answers,
    hits_of,
    recorder_totals,
    stats_counters,
)

if TYPE_CHECKING:  # types only: the supervisor imports this module and stays small
    from gateway.cluster.redis import RedisHealth

log = logging.getLogger(__name__)

PUBLISH_INTERVAL = 1.0  # seconds between two publications of a worker's snapshot
HISTORY_STEP = 5.0  # seconds per point of the history chart
HISTORY_POINTS = 72  # six minutes of history
TOP_PUBLISHED = 100  # entries of each top list a worker publishes

_WORKER_PREFIX = "w-"
_RETIRED = "retired.json"
_CONTROL = "control.json"
_BASELINE = "baseline.json"
_LOCK = ".lock"


@dataclass
class WorkerInfo:
    pid: int
    started: float
    written: float
    live: bool
    this: bool  # the process answering
    answers: int  # image answers since it started
    requests: int  # HTTP requests since it started


@dataclass
class Window:
    """One point of the history chart: what happened in (t - seconds, t]."""

    t: float
    seconds: float
    answers: int = 0
    hits: int = 0
    latency: Histogram = field(default_factory=Histogram)


@dataclass
class Aggregate:
    totals: Snapshot  # summed over every worker; gauges and tops from live ones
    workers: list[WorkerInfo]
    history: list[Window]


@dataclass
class Baseline:
    generation: int
    at: float
    totals: Snapshot


class StatsHub:
    def __init__(self, *, stats: Stats, recorder: Recorder,
                 redis_health: RedisHealth | None, shared_dir: str | Path | None,
                 on_clear: Callable[[], Awaitable[None]] | None = None,
                 figures: Callable[[], tuple[dict[str, float], dict[str, float]]] | None = None,
                 publish_interval: float = PUBLISH_INTERVAL,
                 history_step: float = HISTORY_STEP,
                 clock: Callable[[], float] = time.time) -> None:
        self.stats = stats
        self.recorder = recorder
        self.redis_health = redis_health
        self.dir = Path(shared_dir) if shared_dir else None
        self.on_clear = on_clear
        self.figures = figures  # the components' own (counters, gauges): sizes, variants...
        self.publish_interval = publish_interval
        self.history_step = history_step
        self.clock = clock
        self.pid = os.getpid()
        self.started = clock()
        self.file_name = f"{_WORKER_PREFIX}{self.pid}-{int(self.started * 1e6)}.json"
        self.history: deque[Sample] = deque(maxlen=HISTORY_POINTS)
        self.reset_generation = 0
        self.clear_generation = 0
        self._baseline: Baseline | None = None  # single process only
        self._task: asyncio.Task[None] | None = None

    @property
    def shared(self) -> bool:
        return self.dir is not None

    # -- this process ---------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """This process's figures, now."""
        counters = stats_counters(self.stats)
        extra, histograms = recorder_totals(self.recorder)
        counters.update(extra)
        redis = "disabled"
        if self.redis_health is not None:
            counters["redis.failures"] = self.redis_health.failures
            redis = self.redis_health.state
        gauges: dict[str, float] = {}
        if self.figures is not None:
            more_counters, more_gauges = self.figures()
            counters.update(more_counters)
            gauges.update(more_gauges)
        return Snapshot(
            pid=self.pid, started=self.started, written=self.clock(), counters=counters,
            histograms=histograms, gauges=gauges, redis=redis,
            top=dict(self.recorder.top.top(TOP_PUBLISHED)),
            missing=dict(self.recorder.missing.top(TOP_PUBLISHED)),
            history=list(self.history), reset_generation=self.reset_generation)

    def sample(self) -> None:
        """Record a history point when a step boundary (wall clock) has passed."""
        now = self.clock()
        t = now - now % self.history_step
        if self.history and self.history[-1].t >= t:
            return
        latency = all_answers(self.recorder)
        answers = {k: h.count for k, h in self.recorder.latency.items()}
        self.history.append(Sample(t, latency.count, hits_of(answers), latency))

    # -- the whole gateway -----------------------------------------------------------

    async def aggregate(self) -> Aggregate:
        own = self.snapshot()
        others: list[tuple[Snapshot, bool]] = []
        retired: Snapshot | None = None
        if self.dir is not None:
            others, retired = await asyncio.to_thread(
                _collect, self.dir, self.file_name, self.clock(), self._stale_after())
        return _combine(own, others, retired, self.reset_generation, self.clock(),
                        self.history_step)

    async def baseline(self) -> Baseline | None:
        if self.dir is None:
            return self._baseline
        return await asyncio.to_thread(_read_baseline, self.dir)

    async def reset(self) -> Baseline:
        """Make the current totals the zero of /admin/stats, for every worker."""
        aggregate = await self.aggregate()
        totals = aggregate.totals
        if self.dir is None:
            self.reset_generation += 1
            baseline = Baseline(self.reset_generation, self.clock(), totals)
            self._baseline = baseline
        else:
            baseline = await asyncio.to_thread(_write_reset, self.dir, totals, self.clock())
            self.reset_generation = baseline.generation
        self.recorder.clear_top()
        await self.publish()  # the others compute from the same figures at once
        return baseline

    async def request_clear(self) -> None:
        """Tell the other workers to clear their caches (this one clears itself)."""
        if self.dir is not None:
            self.clear_generation = await asyncio.to_thread(_bump_clear, self.dir)

    # -- the background tick ---------------------------------------------------------

    async def start(self) -> None:
        if self.dir is not None:
            control = await asyncio.to_thread(_read_control, self.dir)
            # A worker (re)started later adopts the current generations: an old
            # "clear" is not for it, and its top lists are empty anyway.
            self.reset_generation = control.get("reset_generation", 0)
            self.clear_generation = control.get("clear_generation", 0)
        self.sample()
        await self.publish()
        self._task = asyncio.create_task(self._run(), name="stats-hub")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.publish()  # the last counts of a worker that stops cleanly

    async def _run(self) -> None:
        interval = min(self.publish_interval, self.history_step / 2)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:  # never let one bad tick stop the publishing
                log.exception("stats tick failed")

    async def tick(self) -> None:
        self.sample()
        if self.dir is None:
            return
        control = await asyncio.to_thread(_read_control, self.dir)
        reset = control.get("reset_generation", 0)
        if reset != self.reset_generation:
            self.reset_generation = reset
            self.recorder.clear_top()
        clear = control.get("clear_generation", 0)
        if clear > self.clear_generation:
            self.clear_generation = clear
            if self.on_clear is not None:
                await self.on_clear()
        await self.publish()

    async def publish(self) -> None:
        if self.dir is None:
            return
        data = json.dumps(self.snapshot().to_json(), separators=(",", ":"))
        await asyncio.to_thread(_write_atomic, self.dir / self.file_name, data)

    def _stale_after(self) -> float:
        return max(10 * self.publish_interval, 10.0)


# -- the shared folder (run in a thread) ---------------------------------------------------


@contextlib.contextmanager
def _locked(folder: Path, mode: int) -> Iterator[None]:
    with open(folder / _LOCK, "a") as fh:
        fcntl.flock(fh.fileno(), mode)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


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
            _write_atomic(folder / _RETIRED, json.dumps(retired.to_json()))
        for path in dead:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _collect(folder: Path, own: str, now: float, stale_after: float
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


def _read_control(folder: Path) -> dict[str, int]:
    data = _load(folder / _CONTROL)
    if not isinstance(data, dict):
        return {}
    return {k: int(v) for k, v in data.items() if isinstance(v, int)}


def _write_reset(folder: Path, totals: Snapshot, now: float) -> Baseline:
    with _locked(folder, fcntl.LOCK_EX):
        control = _read_control(folder)
        generation = control.get("reset_generation", 0) + 1
        baseline = Baseline(generation, now, totals)
        _write_atomic(folder / _BASELINE, json.dumps(
            {"generation": generation, "at": now, "totals": totals.to_json()}))
        control["reset_generation"] = generation
        _write_atomic(folder / _CONTROL, json.dumps(control))
    return baseline


def _read_baseline(folder: Path) -> Baseline | None:
    data = _load(folder / _BASELINE)
    if not isinstance(data, dict):
        return None
    try:
        return Baseline(int(data["generation"]), float(data["at"]),
                        Snapshot.from_json(data["totals"]))
    except (KeyError, TypeError, ValueError):
        return None


def _bump_clear(folder: Path) -> int:
    with _locked(folder, fcntl.LOCK_EX):
        control = _read_control(folder)
        control["clear_generation"] = control.get("clear_generation", 0) + 1
        _write_atomic(folder / _CONTROL, json.dumps(control))
    return control["clear_generation"]


# -- adding up -------------------------------------------------------------------------------


def _combine(own: Snapshot, others: list[tuple[Snapshot, bool]], retired: Snapshot | None,
             generation: int, now: float, step: float) -> Aggregate:
    totals = Snapshot(own.pid, own.started, own.written, gauges={}, redis="disabled",
                      reset_generation=generation)
    live = [own] + [s for s, is_live in others if is_live]
    for snapshot in [own] + [s for s, _ in others]:
        totals.add_totals(snapshot)
    if retired is not None:
        totals.add_totals(retired)

    for snapshot in live:
        for name, value in snapshot.gauges.items():
            if name.startswith("disk."):  # one shared folder: the largest view
                totals.gauges[name] = max(totals.gauges.get(name, 0), value)
            else:  # one LRU per worker: they add up
                totals.gauges[name] = totals.gauges.get(name, 0) + value
        if snapshot.reset_generation == generation:  # others clear theirs at their tick
            for name, count in snapshot.top.items():
                totals.top[name] = totals.top.get(name, 0) + count
            for name, count in snapshot.missing.items():
                totals.missing[name] = totals.missing.get(name, 0) + count
    states = {s.redis for s in live}
    totals.redis = "down" if "down" in states else "up" if "up" in states else "disabled"

    workers = [
        WorkerInfo(pid=s.pid, started=s.started, written=s.written,
                   live=s is own or is_live, this=s is own,
                   answers=sum(s.answers_by_layer().values()),
                   requests=int(sum(v for k, v in s.counters.items() if k.startswith("http|"))))
        for s, is_live in [(own, True), *others]]
    history = _history(live, own, now, step)
    return Aggregate(totals, workers, history)


def _history(live: list[Snapshot], own: Snapshot, now: float, step: float) -> list[Window]:
    """Per-step windows summed over live workers, plus the step in progress."""
    windows: dict[float, Window] = {}
    current = Window(now, 0.0)
    for snapshot in live:
        previous = Sample(snapshot.started, 0, 0, Histogram())
        for sample in snapshot.history:
            window = windows.setdefault(sample.t, Window(sample.t, step))
            window.answers += sample.answers - previous.answers
            window.hits += sample.hits - previous.hits
            window.latency.add(sample.latency.minus(previous.latency))
            previous = sample
        answers = snapshot.answers_by_layer()
        latency = Histogram()
        for name, histogram in snapshot.histograms.items():
            if name.startswith("latency|"):
                latency.add(histogram)
        current.answers += sum(answers.values()) - previous.answers
        current.hits += hits_of(answers) - previous.hits
        current.latency.add(latency.minus(previous.latency))
    ordered = sorted(windows.values(), key=lambda w: w.t)
    if own.history:
        current.seconds = max(0.0, now - own.history[-1].t)
    return [*ordered, current] if current.seconds > 0 else ordered
