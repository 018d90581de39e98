"""Adding up workers: every worker's snapshot (and the retired totals) as one view.

Counters and histograms are summed over every worker, dead ones included, so the
totals only grow. Gauges and the top lists come from live workers only: memory
sizes add up (one LRU per worker), disk sizes are the largest worker's view (they
share one folder). The history chart is per-step windows over live workers.
Plain data in, plain data out: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.observe.histogram import Histogram
from gateway.observe.snapshot import Sample, Snapshot, hits_of


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
    """The totals at the last reset of /admin/stats, which its figures subtract."""

    generation: int
    at: float
    totals: Snapshot


def combine(own: Snapshot, others: list[tuple[Snapshot, bool]], retired: Snapshot | None,
            generation: int, now: float, step: float) -> Aggregate:
    """``own`` (live, current), ``others`` with whether each is live, and the totals of
    workers that are gone, as seen at ``now`` with history steps of ``step`` seconds."""
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
