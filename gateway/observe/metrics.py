"""What one worker process observes, as plain numbers, and how it is exposed.

Hot path
    Everything here is plain Python ints and lists mutated on the event loop
    thread: no locks, no prometheus_client objects. Per request the web layer
    (``gateway/web/observability.py``) does a couple of dict updates and one
    ``bisect`` into a fixed bucket list. prometheus_client is used only at scrape
    time, by a collector that turns a :class:`Snapshot` into metric families.

Snapshots
    A :class:`Snapshot` is every figure of one process at one moment, JSON-able.
    With several workers each one publishes its snapshot to a shared folder
    (``gateway/statshub.py``) and whoever answers /metrics or /admin/stats adds
    them up: counters and histograms are summed, gauges come from live workers
    only.
"""

from __future__ import annotations

import heapq
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from operator import itemgetter
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.errors import NotFound, OriginTimeout
from gateway.observe.counters import LayerCounters, Stats
from gateway.origin import Fetched, NotModified, Origin, OriginWrapper

# -- histograms ----------------------------------------------------------------------

# Upper bounds in seconds: the R10 series (10 per decade, ~25 % apart) from 10 us to
# 30 s, fine enough for a p95 within a few percent. Built from decimal strings so
# that the coarse bounds below compare equal to members of this list.
_MANTISSAS = ("1", "1.25", "1.6", "2", "2.5", "3.15", "4", "5", "6.3", "8")
BOUNDS: tuple[float, ...] = tuple(
    [float(f"{m}e{e}") for e in range(-5, 1) for m in _MANTISSAS]
    + [10.0, 12.5, 16.0, 20.0, 25.0, 30.0])
# What /metrics exposes: 1-2.5-5 per decade, 100 us .. 10 s (a subset of BOUNDS).
PROMETHEUS_BOUNDS: tuple[float, ...] = (
    *(float(f"{m}e{e}") for e in range(-4, 1) for m in ("1", "2.5", "5")), 10.0)
assert set(PROMETHEUS_BOUNDS) <= set(BOUNDS)


class Histogram:
    """Counts of observations per fixed bucket (the last one is +Inf) and their sum.

    Fixed buckets keep memory bounded whatever the traffic, add up across workers
    and subtract (a reset is "now minus then"), which a reservoir sample cannot.
    """

    __slots__ = ("counts", "sum")

    def __init__(self, counts: list[int] | None = None, total: float = 0.0) -> None:
        self.counts = counts if counts is not None else [0] * (len(BOUNDS) + 1)
        self.sum = total

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BOUNDS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def mean(self) -> float | None:
        n = self.count
        return self.sum / n if n else None

    def quantile(self, q: float) -> float | None:
        """Like PromQL's histogram_quantile: linear within the bucket holding rank q."""
        n = self.count
        if not n:
            return None
        rank = q * n
        seen = 0
        for i, c in enumerate(self.counts):
            if c and seen + c >= rank:
                if i == len(BOUNDS):  # the +Inf bucket: the largest finite bound
                    return BOUNDS[-1]
                lower = BOUNDS[i - 1] if i else 0.0
                return lower + (BOUNDS[i] - lower) * max(0.0, rank - seen) / c
            seen += c
        return BOUNDS[-1]

    def copy(self) -> Histogram:
        return Histogram(list(self.counts), self.sum)

    def add(self, other: Histogram) -> None:
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        self.sum += other.sum

    def minus(self, other: Histogram) -> Histogram:
        counts = [max(0, a - b) for a, b in zip(self.counts, other.counts, strict=True)]
        return Histogram(counts, max(0.0, self.sum - other.sum))

    def cumulative(self, bounds: Iterable[float]) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs for the given subset of BOUNDS, then +Inf."""
        out: list[tuple[str, float]] = []
        running = 0
        i = 0
        for bound in bounds:
            while i < len(BOUNDS) and BOUNDS[i] <= bound:
                running += self.counts[i]
                i += 1
            out.append((_le(bound), float(running)))
        out.append(("+Inf", float(self.count)))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"c": self.counts, "s": self.sum}

    @classmethod
    def from_json(cls, data: Any) -> Histogram:
        counts = [int(c) for c in data["c"]]
        if len(counts) != len(BOUNDS) + 1:
            raise ValueError("histogram with other buckets")
        return cls(counts, float(data["s"]))


def _le(bound: float) -> str:
    return repr(bound) if bound < 1 or bound != int(bound) else f"{bound:.1f}"


# -- top requested images --------------------------------------------------------------


class TopCounter:
    """Approximate most frequent keys in bounded memory (a capped, pruned Counter).

    At most ``2 * capacity`` keys are held: past that the ``capacity`` most counted
    are kept and the rest forgotten, so random ids (a scan, a bot) cannot grow it
    without bound, while keys asked for often stay with exact counts since they
    joined. ``add`` is O(1); a prune is O(n log capacity) once per ``capacity``
    new keys.
    """

    __slots__ = ("capacity", "counts")

    def __init__(self, capacity: int = 200) -> None:
        self.capacity = capacity
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        counts = self.counts
        counts[key] = counts.get(key, 0) + n
        if len(counts) > 2 * self.capacity:
            self.counts = dict(heapq.nlargest(self.capacity, counts.items(),
                                              key=itemgetter(1)))

    def top(self, n: int) -> list[tuple[str, int]]:
        return heapq.nlargest(n, self.counts.items(), key=itemgetter(1))

    def clear(self) -> None:
        self.counts = {}

    def __len__(self) -> int:
        return len(self.counts)


# -- what the web layer records --------------------------------------------------------

# Origin fetch results, as labels.
ORIGIN_RESULTS = ("ok", "not_modified", "not_found", "error", "timeout")
# X-Cache values of answers served without a download of their own (bandwidth saved).
SAVED_LAYERS = ("HIT-MEMORY", "HIT-DISK", "COALESCED", "STALE", "REVALIDATED")
# ... and those whose time is compared with an origin fetch (time saved).
TIME_SAVED_LAYERS = ("HIT-MEMORY", "HIT-DISK", "COALESCED")


class Recorder:
    """Per-request and per-origin-fetch figures of one process (Stats holds the rest)."""

    def __init__(self, top_capacity: int = 200) -> None:
        self.requests: dict[tuple[str, int], int] = {}  # (route, status) -> count
        self.latency: dict[str, Histogram] = {}  # X-Cache value -> seconds to answer
        self.bytes: dict[str, int] = {}  # X-Cache value -> body bytes sent
        self.origin: dict[str, Histogram] = {r: Histogram() for r in ORIGIN_RESULTS}
        self.top = TopCounter(top_capacity)  # image ids asked for
        self.missing = TopCounter(top_capacity)  # image ids answered with the fallback
        self.started = time.time()

    def request(self, route: str, status: int) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1

    def answer(self, layer: str, seconds: float, body_bytes: int,
               image_id: str | None) -> None:
        histogram = self.latency.get(layer)
        if histogram is None:
            histogram = self.latency[layer] = Histogram()
        histogram.observe(seconds)
        self.bytes[layer] = self.bytes.get(layer, 0) + body_bytes
        if image_id is not None:
            self.top.add(image_id)
            if layer == "FALLBACK":
                self.missing.add(image_id)

    def origin_fetch(self, result: str, seconds: float) -> None:
        self.origin[result].observe(seconds)

    def clear_top(self) -> None:
        self.top.clear()
        self.missing.clear()


class TimedOrigin(OriginWrapper):
    """An Origin that times every fetch into a Recorder, by result.

    Wraps the service's origin (``service.origin = TimedOrigin(...)``), so the
    origin latency histogram needs no change to the service.
    """

    def __init__(self, inner: Origin, recorder: Recorder) -> None:
        super().__init__(inner)
        self.recorder = recorder

    async def fetch(self, image_id: str, if_none_match: str | None = None
                    ) -> Fetched | NotModified:
        start = time.perf_counter()
        result = "error"
        try:
            fetched = await self.inner.fetch(image_id, if_none_match)
            result = "not_modified" if isinstance(fetched, NotModified) else "ok"
            return fetched
        except NotFound:
            result = "not_found"
            raise
        except OriginTimeout:
            result = "timeout"
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception):  # cancelled: no answer to time
                result = ""
            raise
        finally:
            if result:
                self.recorder.origin_fetch(result, time.perf_counter() - start)


# -- snapshots -------------------------------------------------------------------------


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
               ``bytes|<X-Cache>``, ``redis.failures``
    histograms ``latency|<X-Cache>`` (seconds to answer an image request) and
               ``origin|<result>`` (seconds per origin fetch)
    gauges     ``memory.bytes`` ``memory.entries`` ``memory.limit`` and the same for
               ``disk``
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


# -- Prometheus --------------------------------------------------------------------------

# Stats fields with their own metric; any other Stats integer is exposed generically as
# gateway_<field>_total, so a counter added to Stats shows up without a change here.
_LAYER_COUNTERS = {
    "hits": ("gateway_cache_hits", "Lookups answered by a cache layer."),
    "misses": ("gateway_cache_misses", "Lookups a cache layer could not answer."),
    "evictions": ("gateway_cache_evictions", "Entries evicted to stay within the bound."),
    "corrupt_dropped": ("gateway_cache_corrupt_dropped",
                        "Cached entries that failed verification and were dropped."),
    "write_errors": ("gateway_cache_write_errors", "Cache writes that failed."),
}
_PLAIN = {
    "coalesced": ("gateway_coalesced", "Requests that joined another request's origin fetch."),
    "stale_served": ("gateway_stale_served", "Stale copies served while the origin failed."),
    "fallback_served": ("gateway_fallback_served",
                        "Fallback pictures served for missing images."),
    "bytes_from_origin": ("gateway_bytes_from_origin", "Body bytes downloaded from the origin."),
}
_HANDLED_ELSEWHERE = {"origin_fetches", "origin_not_modified", "origin_errors",
                      "origin_not_found", "bytes_served", "url_store_hits",
                      "url_store_misses"}


def layer_label(x_cache: str) -> str:
    """HIT-MEMORY -> memory, MISS -> miss: the X-Cache value as a label value."""
    return x_cache.lower().removeprefix("hit-")


class SnapshotCollector(Collector):
    """Metric families from one (usually aggregated) Snapshot."""

    def __init__(self, snapshot: Snapshot, workers: int) -> None:
        self.snapshot = snapshot
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot

        requests = CounterMetricFamily("gateway_http_requests", "HTTP requests answered.",
                                       labels=["route", "status"])
        for name, value in sorted(s.counters.items()):
            if name.startswith("http|"):
                _, route, status = name.split("|", 2)
                requests.add_metric([route, status], value)
        yield requests

        latency = HistogramMetricFamily(
            "gateway_request_duration_seconds",
            "Time to answer an image request (until the response is ready to send), "
            "by the layer that answered.", labels=["layer"])
        for layer, histogram in sorted(s.layered("latency").items()):
            latency.add_metric([layer_label(layer)], histogram.cumulative(PROMETHEUS_BOUNDS),
                               histogram.sum)
        yield latency

        answers = CounterMetricFamily("gateway_answers", "Image answers by layer (X-Cache).",
                                      labels=["layer"])
        for layer, count in sorted(s.answers_by_layer().items()):
            answers.add_metric([layer_label(layer)], count)
        yield answers

        for field_name, (metric, doc) in _LAYER_COUNTERS.items():
            family = CounterMetricFamily(metric, doc, labels=["layer"])
            for layer in ("memory", "disk"):
                family.add_metric([layer], s.counter(f"stats.{layer}.{field_name}"))
            yield family

        fetches = CounterMetricFamily("gateway_origin_fetches", "Origin fetches by result.",
                                      labels=["result"])
        fetch_latency = HistogramMetricFamily(
            "gateway_origin_fetch_duration_seconds", "Time of one origin fetch, by result.",
            labels=["result"])
        for result, histogram in sorted(s.layered("origin").items()):
            fetches.add_metric([result], histogram.count)
            fetch_latency.add_metric([result], histogram.cumulative(PROMETHEUS_BOUNDS),
                                     histogram.sum)
        yield fetches
        yield fetch_latency

        known = set(_PLAIN) | _HANDLED_ELSEWHERE
        for field_name, (metric, doc) in _PLAIN.items():
            yield CounterMetricFamily(metric, doc, value=s.counter(f"stats.{field_name}"))
        for name in sorted(s.counters):
            parts = name.split(".")
            if len(parts) == 2 and parts[0] == "stats" and parts[1] not in known:
                yield CounterMetricFamily(f"gateway_{parts[1]}",
                                          f"Stats.{parts[1]} of the image service.",
                                          value=s.counters[name])

        served = sum(v for k, v in s.counters.items() if k.startswith("bytes|"))
        saved = sum(s.counter(f"bytes|{layer}") for layer in SAVED_LAYERS)
        yield CounterMetricFamily("gateway_bytes_served", "Image body bytes sent to clients.",
                                  value=served)
        yield CounterMetricFamily(
            "gateway_bytes_saved",
            "Image body bytes sent from a cache layer (memory, disk, a shared fetch, a "
            "stale copy): bytes the origin did not have to send.", value=saved)

        store = CounterMetricFamily("gateway_url_store_lookups",
                                    "Presigned-URL store lookups.", labels=["result"])
        store.add_metric(["hit"], s.counter("stats.url_store_hits"))
        store.add_metric(["miss"], s.counter("stats.url_store_misses"))
        yield store

        size = GaugeMetricFamily("gateway_cache_size_bytes", "Bytes held by a cache layer.",
                                 labels=["layer"])
        limit = GaugeMetricFamily("gateway_cache_limit_bytes", "Size bound of a cache layer.",
                                  labels=["layer"])
        entries = GaugeMetricFamily("gateway_cache_entries", "Entries in a cache layer.",
                                    labels=["layer"])
        for layer in ("memory", "disk"):
            if f"{layer}.limit" in s.gauges:
                size.add_metric([layer], s.gauges.get(f"{layer}.bytes", 0))
                limit.add_metric([layer], s.gauges[f"{layer}.limit"])
                entries.add_metric([layer], s.gauges.get(f"{layer}.entries", 0))
        yield size
        yield limit
        yield entries

        redis = GaugeMetricFamily("gateway_redis_state",
                                  "Redis as this gateway sees it (1 for the current state).",
                                  labels=["state"])
        for state in ("up", "down", "disabled"):
            redis.add_metric([state], 1.0 if s.redis == state else 0.0)
        yield redis
        yield GaugeMetricFamily("gateway_redis_up", "1 when Redis answers, else 0.",
                                value=1.0 if s.redis == "up" else 0.0)
        yield CounterMetricFamily("gateway_redis_failures", "Redis calls that failed.",
                                  value=s.counter("redis.failures"))
        yield GaugeMetricFamily("gateway_workers", "Worker processes counted in these figures.",
                                value=self.workers)

        variants = CounterMetricFamily(
            "gateway_variants", "Resized / re-encoded variants: memory_hits, disk_hits, "
            "transforms, refreshed, failed (422), stale_served, pool_completed, "
            "pool_rejected (503).", labels=["event"])
        for name in sorted(s.counters):
            if name.startswith("variants."):
                variants.add_metric([name.removeprefix("variants.")], s.counters[name])
        yield variants
        yield GaugeMetricFamily("gateway_transform_pool_pending",
                                "Transforms running or queued.",
                                value=s.gauges.get("variants.pool_pending", 0))


def render_prometheus(snapshot: Snapshot, workers: int) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, workers))
    return generate_latest(registry)
