"""Latency histograms with fixed buckets, and a bounded counter of the most asked-for keys.

Plain Python ints and lists, mutated on the event loop thread: no locks and no
prometheus_client objects on the hot path (one ``bisect`` per observation).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Iterable
from operator import itemgetter
from typing import Any

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
