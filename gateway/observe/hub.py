"""Every worker's figures in one view: /metrics and /admin/stats add workers up.

Single process (``server.workers = 1``)
    The view is this process's live Stats and Recorder; nothing is written.

Several workers
    The supervisor makes a fresh private folder before it spawns the workers
    (:func:`gateway.observe.shared.prepare_shared_dir`, passed on in
    ``$IMAGE_GATEWAY_STATS_DIR``) and removes it at exit. Every ``PUBLISH_INTERVAL``
    each worker writes its whole :class:`~gateway.observe.snapshot.Snapshot` there
    as ``w-<pid>-<start>.json`` (temp file + rename: readers see an old or a new
    file, never half of one; see :mod:`gateway.observe.shared`). Whoever answers
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
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from gateway.observe.aggregate import Aggregate, Baseline, combine
from gateway.observe.counters import Stats
from gateway.observe.recorder import Recorder
from gateway.observe.shared import (
    bump_clear,
    collect,
    read_baseline,
    read_control,
    worker_file,
    write_reset,
    write_snapshot,
)
from gateway.observe.snapshot import (
    Sample,
    Snapshot,
    all_answers,
    hits_of,
    recorder_totals,
    stats_counters,
)

log = logging.getLogger(__name__)

PUBLISH_INTERVAL = 1.0  # seconds between two publications of a worker's snapshot
HISTORY_STEP = 5.0  # seconds per point of the history chart
HISTORY_POINTS = 72  # six minutes of history
TOP_PUBLISHED = 100  # entries of each top list a worker publishes

#: What the owner of the hub adds to each snapshot, read when one is taken:
#: (counters, gauges), e.g. the cache sizes and the variant service's figures.
Figures = Callable[[], tuple[dict[str, float], dict[str, float]]]


class RedisState(Protocol):
    """What a snapshot reports of Redis (cluster/redis.RedisHealth is one): cluster/
    sits above observe/, so the hub names only what it reads."""

    @property
    def state(self) -> str: ...

    @property
    def failures(self) -> int: ...


class StatsHub:
    def __init__(self, *, stats: Stats, recorder: Recorder, figures: Figures,
                 redis_health: RedisState | None, shared_dir: str | Path | None,
                 on_clear: Callable[[], Awaitable[None]] | None = None,
                 publish_interval: float = PUBLISH_INTERVAL,
                 history_step: float = HISTORY_STEP,
                 clock: Callable[[], float] = time.time) -> None:
        self.stats = stats
        self.recorder = recorder
        self.figures = figures
        self.redis_health = redis_health
        self.dir = Path(shared_dir) if shared_dir else None
        self.on_clear = on_clear
        self.publish_interval = publish_interval
        self.history_step = history_step
        self.clock = clock
        self.pid = os.getpid()
        self.started = clock()
        self.file_name = worker_file(self.pid, self.started)
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
        more, gauges = self.figures()
        counters.update(more)
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
                collect, self.dir, self.file_name, self.clock(), self._stale_after())
        return combine(own, others, retired, self.reset_generation, self.clock(),
                       self.history_step)

    async def baseline(self) -> Baseline | None:
        if self.dir is None:
            return self._baseline
        return await asyncio.to_thread(read_baseline, self.dir)

    async def reset(self) -> Baseline:
        """Make the current totals the zero of /admin/stats, for every worker."""
        aggregate = await self.aggregate()
        totals = aggregate.totals
        if self.dir is None:
            self.reset_generation += 1
            baseline = Baseline(self.reset_generation, self.clock(), totals)
            self._baseline = baseline
        else:
            baseline = await asyncio.to_thread(write_reset, self.dir, totals, self.clock())
            self.reset_generation = baseline.generation
        self.recorder.clear_top()
        await self.publish()  # the others compute from the same figures at once
        return baseline

    async def request_clear(self) -> None:
        """Tell the other workers to clear their caches (this one clears itself)."""
        if self.dir is not None:
            self.clear_generation = await asyncio.to_thread(bump_clear, self.dir)

    # -- the background tick ---------------------------------------------------------

    async def start(self) -> None:
        if self.dir is not None:
            control = await asyncio.to_thread(read_control, self.dir)
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
        control = await asyncio.to_thread(read_control, self.dir)
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
        await asyncio.to_thread(write_snapshot, self.dir, self.file_name, self.snapshot())

    def _stale_after(self) -> float:
        return max(10 * self.publish_interval, 10.0)
