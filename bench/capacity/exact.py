"""A trace replayed request by request through the layers the gateway runs
(see model.py for the path). Exact for the trace it is given, up to two stated
simplifications: a replica's disk is one LRU of disk.max_bytes (the gateway's
workers share the folder, each bounding the files it knows of to its share),
and the worker a request reaches is drawn at random (SO_REUSEPORT spreads
nginx's connections over the workers). Used to check the analytic model and
to replay the bench's long-tail trace; about 1-2 µs per request and layer."""

from __future__ import annotations

import math
import random
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.capacity import che
from bench.capacity.model import LAYERS, Deployment, route
from bench.capacity.workload import Floats, Ints, Workload


class _LRU:
    """Object id -> expiry time, least recently used first, bounded by bytes."""

    __slots__ = ("entries", "max_bytes", "size", "sizes")

    def __init__(self, max_bytes: float, sizes: Floats) -> None:
        self.entries: OrderedDict[int, float] = OrderedDict()
        self.max_bytes = max_bytes
        self.size = 0.0
        self.sizes = sizes

    def put(self, i: int, expires: float) -> None:
        if i in self.entries:
            self.entries[i] = expires
            self.entries.move_to_end(i)
            return
        size = float(self.sizes[i])
        if size > self.max_bytes:
            return
        self.entries[i] = expires
        self.size += size
        while self.size > self.max_bytes:
            victim, _ = self.entries.popitem(last=False)
            self.size -= float(self.sizes[victim])

    def drop(self, i: int) -> None:
        if self.entries.pop(i, None) is not None:
            self.size -= float(self.sizes[i])


@dataclass
class Replay:
    counts: Counter[str]
    origin_gets: int
    origin_bytes: float
    requests: int

    def shares(self) -> dict[str, float]:
        total = self.requests or 1
        return {layer: self.counts[layer] / total for layer in LAYERS}


def simulate(workload: Workload, ids: Ints, d: Deployment, *, rate: float,
             measure_from: int = 0, direct: Sequence[int] = (), seed: int = 1) -> Replay:
    """Replay ``ids`` (request k at time k / ``rate``), counting from request
    ``measure_from``. ``direct`` ids go first, straight to the gateway (a fill
    pass that bypasses nginx and any CDN), at time 0."""
    return _simulate(workload, ids, d, rate=rate, measure_from=measure_from, direct=direct,
                     seed=seed, distrust=False)


def simulate_resync(workload: Workload, ids: Ints, d: Deployment, *, rate: float,
                    measure_from: int, seed: int = 1) -> Replay:
    """As ``simulate``, every cached copy made untrusted at request ``measure_from``
    (what the gateway does after a Redis restart or resubscription)."""
    return _simulate(workload, ids, d, rate=rate, measure_from=measure_from, direct=(),
                     seed=seed, distrust=True)


def _simulate(workload: Workload, ids: Ints, d: Deployment, *, rate: float,
              measure_from: int, direct: Sequence[int], seed: int, distrust: bool) -> Replay:
    rng = random.Random(seed)
    sizes = workload.sizes
    owner = route(workload, d.replicas).tolist()
    memory_share = d.memory_max_bytes / d.workers
    mem_sizes = np.where(sizes <= min(d.memory_max_object_bytes, memory_share), sizes,
                         math.inf)
    memories = [[_LRU(memory_share, mem_sizes) for _ in range(d.workers)]
                for _ in range(d.replicas)]
    disks = [_LRU(d.disk_max_bytes, sizes + d.disk_overhead) for _ in range(d.replicas)]
    lam = workload.probs * rate
    cdn_ttl = che.ttl_for_hit_ratio(lam, d.cdn_hit)
    cdn: dict[int, float] = {}
    micro: list[dict[int, float]] = [{} for _ in range(d.edges)]
    purges = _purges(d.purge_rate, workload.objects, len(ids) / rate, rng)
    next_purge = 0
    counts: Counter[str] = Counter()
    origin = [0.0, 0.0]  # GETs, bytes

    def gateway(i: int, now: float, counting: bool) -> str:
        r = owner[i]
        memory = memories[r][rng.randrange(d.workers)]
        disk = disks[r]
        held = memory.entries.get(i)
        if held is not None:
            memory.entries.move_to_end(i)
            if held > now:
                return "memory"
        on_disk = disk.entries.get(i)
        if on_disk is not None:
            disk.entries.move_to_end(i)
            if on_disk > now:
                memory.put(i, on_disk)
                return "disk"
        expires = now + d.disk_ttl
        if counting:
            origin[0] += 1
        if held is not None or on_disk is not None:
            memory.put(i, expires)
            disk.put(i, expires)
            return "revalidated"
        if counting:
            origin[1] += float(sizes[i])
        memory.put(i, expires)
        disk.put(i, expires)
        return "miss"

    for i in direct:
        gateway(int(i), 0.0, False)
    for k, i in enumerate(ids.tolist()):
        now = k / rate
        while next_purge < len(purges) and purges[next_purge][0] <= now:
            _, victim = purges[next_purge]
            next_purge += 1
            for memory in memories[owner[victim]]:
                memory.drop(victim)
            disks[owner[victim]].drop(victim)
        counting = k >= measure_from
        if distrust and k == measure_from:
            for lru in [m for ms in memories for m in ms] + disks:
                for key in lru.entries:
                    lru.entries[key] = -math.inf
        layer = _edge(i, now, cdn, cdn_ttl, micro[rng.randrange(d.edges)], d.micro_ttl)
        if layer is None:
            layer = gateway(i, now, counting)
        if counting:
            counts[layer] += 1
    return Replay(counts, int(origin[0]), origin[1], max(0, len(ids) - measure_from))


def _edge(i: int, now: float, cdn: dict[int, float], cdn_ttl: float,
          micro: dict[int, float], micro_ttl: float) -> str | None:
    if cdn_ttl > 0:
        if cdn.get(i, -1.0) > now:
            return "cdn"
        cdn[i] = now + cdn_ttl
    if micro_ttl > 0:
        if micro.get(i, -1.0) > now:
            return "micro"
        micro[i] = now + micro_ttl
    return None


def _purges(rate: float, objects: int, duration: float, rng: random.Random
            ) -> list[tuple[float, int]]:
    """A Poisson process of purges over ``duration`` s, each of a uniform object."""
    out: list[tuple[float, int]] = []
    if rate <= 0:
        return out
    t = rng.expovariate(rate)
    while t < duration:
        out.append((t, rng.randrange(objects)))
        t += rng.expovariate(rate)
    return out
