"""Every figure of one process at one moment, JSON-able, so that workers add up.

With several workers each one publishes its snapshot to a shared folder
(``gateway/observe/hub.py``) and whoever answers /metrics or /admin/stats adds
them up: counters and histograms are summed, gauges come from live workers only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from gateway.observe.counters import LayerCounters, Stats
from gateway.observe.histogram import Histogram
from gateway.observe.recorder import Recorder


@dataclass
class Sample:
    """Cumulative figures at a wall-clock-aligned moment, for the history chart."""

    t: float
    answers: int
    hits: int
    latency: Histogram  # every image answer, whatever the layer

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "answers": self.answers, "hits": self.hits,
                "latency": self.latency.to_json()}

    @classmethod
    def from_json(cls, data: Any) -> Sample:
        return cls(float(data["t"]), int(data["answers"]), int(data["hits"]),
                   Histogram.from_json(data["latency"]))


@dataclass
class Snapshot:
    """Every figure of one process (or a sum of processes) at one moment.

    counters   monotonic totals since the process started, flat names:
               ``stats.<field>``, ``stats.memory.<field>``, ``http|<route>|<status>``,
               ``bytes|<X-Cache>``, ``redis.failures``, ``origin.retries``,
               ``origin.breaker_trips``, ``variants.<event>``
    histograms ``latency|<X-Cache>`` (seconds to answer an image request) and
               ``origin|<result>`` (seconds per origin fetch)
    gauges     ``memory.bytes`` ``memory.entries`` ``memory.limit``, the same for
               ``disk``, and ``variants.pool_pending``
    """

    pid: int
    started: float
    written: float
    counters: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    redis: str = "disabled"
    top: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    history: list[Sample] = field(default_factory=list)
    reset_generation: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid, "started": self.started, "written": self.written,
            "counters": self.counters,
            "histograms": {k: h.to_json() for k, h in self.histograms.items()},
            "gauges": self.gauges, "redis": self.redis, "top": self.top,
            "missing": self.missing, "history": [s.to_json() for s in self.history],
            "reset_generation": self.reset_generation,
        }

    @classmethod
    def from_json(cls, data: Any) -> Snapshot:
        return cls(
            pid=int(data["pid"]), started=float(data["started"]),
            written=float(data["written"]),
            counters={str(k): float(v) for k, v in data["counters"].items()},
            histograms={str(k): Histogram.from_json(v)
                        for k, v in data["histograms"].items()},
            gauges={str(k): float(v) for k, v in data.get("gauges", {}).items()},
            redis=str(data.get("redis", "disabled")),
            top={str(k): int(v) for k, v in data.get("top", {}).items()},
            missing={str(k): int(v) for k, v in data.get("missing", {}).items()},
            history=[Sample.from_json(s) for s in data.get("history", [])],
            reset_generation=int(data.get("reset_generation", 0)),
        )

    # -- arithmetic on the monotonic parts ----------------------------------------

    def add_totals(self, other: Snapshot) -> None:
        """Add ``other``'s counters and histograms (not gauges, tops or history)."""
        for name, value in other.counters.items():
            self.counters[name] = self.counters.get(name, 0) + value
        for name, histogram in other.histograms.items():
            mine = self.histograms.get(name)
            if mine is None:
                self.histograms[name] = histogram.copy()
            else:
                mine.add(histogram)

    def minus_totals(self, base: Snapshot) -> Snapshot:
        """Counters and histograms since ``base`` (negative results clamp to 0)."""
        out = Snapshot(self.pid, self.started, self.written, gauges=dict(self.gauges),
                       redis=self.redis, top=self.top, missing=self.missing,
                       history=self.history, reset_generation=self.reset_generation)
        for name, value in self.counters.items():
            out.counters[name] = max(0.0, value - base.counters.get(name, 0))
        for name, histogram in self.histograms.items():
            old = base.histograms.get(name)
            out.histograms[name] = histogram.minus(old) if old else histogram.copy()
        return out

    # -- reading ------------------------------------------------------------------

    def counter(self, name: str) -> float:
        return self.counters.get(name, 0)

    def histogram(self, name: str) -> Histogram:
        return self.histograms.get(name) or Histogram()

    def layered(self, prefix: str) -> dict[str, Histogram]:
        """``{X-Cache value: histogram}`` of ``<prefix>|<X-Cache>`` histograms."""
        return {k.partition("|")[2]: h for k, h in self.histograms.items()
                if k.startswith(prefix + "|")}

    def answers_by_layer(self) -> dict[str, int]:
        return {layer: h.count for layer, h in self.layered("latency").items()}


def stats_counters(stats: Stats) -> dict[str, float]:
    """Every integer of Stats under ``stats.<field>`` (new fields join automatically)."""
    out: dict[str, float] = {}
    for f in fields(stats):
        value = getattr(stats, f.name)
        if isinstance(value, LayerCounters):
            for name, count in vars(value).items():
                out[f"stats.{f.name}.{name}"] = count
        elif isinstance(value, int) and not isinstance(value, bool):
            out[f"stats.{f.name}"] = value
    return out


def recorder_totals(recorder: Recorder) -> tuple[dict[str, float], dict[str, Histogram]]:
    counters: dict[str, float] = {}
    for (route, status), count in recorder.requests.items():
        counters[f"http|{route}|{status}"] = count
    for layer, count in recorder.bytes.items():
        counters[f"bytes|{layer}"] = count
    histograms = {f"latency|{k}": h.copy() for k, h in recorder.latency.items()}
    histograms.update({f"origin|{k}": h.copy() for k, h in recorder.origin.items()})
    return counters, histograms


def all_answers(recorder: Recorder) -> Histogram:
    total = Histogram()
    for histogram in recorder.latency.values():
        total.add(histogram)
    return total


def hits_of(answers: Mapping[str, int]) -> int:
    return answers.get("HIT-MEMORY", 0) + answers.get("HIT-DISK", 0)
