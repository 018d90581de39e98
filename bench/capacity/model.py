"""The analytic model of the whole path, per object (see bench/capacity/__init__.py).

client -> CDN/browser (a TTL cache, placed by its hit ratio) -> nginx micro-cache
(TTL cache per nginx instance) -> consistent hash of $uri -> one replica -> one
of its workers at random (SO_REUSEPORT) -> that worker's memory LRU
(memory.max_bytes / workers) -> the replica's disk LRU (disk.max_bytes; the
workers share the folder) -> the origin. A disk hit is promoted into memory,
so a worker's memory sees every request it gets; the disk sees the memory
misses only (the stream Che is applied to). A copy older than disk.ttl is
revalidated (conditional GET, 304, no body): the share 1/(1 + r*ttl) of the
requests that find a copy (renewal: one per ttl, r the replica's rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bench.capacity import che
from bench.capacity.hashring import KetamaRing, replica_names
from bench.capacity.workload import Floats, SyntheticUris, Workload

LAYERS = ("cdn", "micro", "memory", "disk", "revalidated", "miss")


@dataclass(frozen=True)
class Deployment:
    replicas: int = 2
    workers: int = 1                       # server.workers per replica
    memory_max_bytes: float = 256 * 2**20   # memory.max_bytes (the replica's, all workers)
    memory_max_object_bytes: float = 8 * 2**20
    disk_max_bytes: float = 10 * 2**30
    disk_ttl: float = 604800.0              # disk.ttl
    disk_overhead: float = 300.0            # header bytes per disk file (key + JSON meta)
    micro_ttl: float = 1.0                  # nginx proxy_cache_valid 200 (0: off)
    edges: int = 1                          # nginx instances, requests spread evenly
    cdn_hit: float = 0.0                    # share of requests a CDN/browsers answer
    purge_rate: float = 0.0                 # purges per second, spread evenly over objects
    fill_max_bytes: float = 2**20           # cluster.fill_max_bytes
    url_ttl: float = 3000.0                 # presign.cache_ttl (0: local origin, no URLs)


@dataclass(frozen=True)
class Throughput:
    """Requests per second one worker (one core) answers, by how it answers."""

    memory: float
    disk: float
    miss: float
    source: str = "defaults"


@dataclass
class Prediction:
    rate: float                          # client requests per second
    shares: dict[str, float]             # layer -> share of client requests
    origin_gets: float                   # GETs/s to the origin (misses + revalidations)
    origin_bytes: float                  # body bytes/s from the origin
    served_bytes: float                  # body bytes/s to clients
    redis: dict[str, float]              # operation -> per second
    replica_rates: list[float]           # requests/s reaching each replica
    memory_used: list[float]             # bytes each replica's workers hold, summed
    disk_used: list[float]               # bytes each replica's disk holds
    cores: float | None = None           # gateway worker cores for this rate
    # After the gateway distrusts its copies (a Redis restart or failover, a
    # resubscription: docs/ARCHITECTURE.md), each cached picture is revalidated on
    # its next request: seconds after -> (origin GETs/s, Redis ops/s) then.
    resync: dict[float, tuple[float, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def redis_total(self) -> float:
        return sum(self.redis.values())


def route(workload: Workload, replicas: int) -> np.ndarray:
    """The replica of each object. Named objects (a trace, the bench's pictures) are
    hashed as nginx hashes them, CRC32 of the URI; synthetic ones get seeded
    uniform 32-bit hashes instead, which is what CRC32 of real keys looks like to
    the ring, and 20 times faster for 10^7 objects than formatting their names."""
    ring = KetamaRing(replica_names(replicas))
    if isinstance(workload.uris, SyntheticUris):
        rng = np.random.default_rng(len(workload.uris))
        return ring.route_hashes(rng.integers(0, 2**32, len(workload.uris), dtype=np.uint64))
    return ring.route(workload.uris)


def predict(workload: Workload, rate: float, d: Deployment,
            throughput: Throughput | None = None) -> Prediction:
    lam: Floats = workload.probs * rate
    sizes = workload.sizes
    n = workload.modelled
    w = workload.weight  # objects each modelled one stands for (1 unless sampled)
    purge = d.purge_rate / workload.objects if n else 0.0

    cdn_ttl = che.ttl_for_hit_ratio(lam, d.cdn_hit, w)
    h_cdn = np.ones(n) if math.isinf(cdn_ttl) else che.ttl_hits(lam, cdn_ttl)
    edge = lam * (1 - h_cdn)
    h_micro = che.ttl_hits(edge / d.edges, d.micro_ttl) if d.micro_ttl > 0 else np.zeros(n)
    g = edge * (1 - h_micro)  # requests/s reaching the gateway, per object

    owner = route(workload, d.replicas)
    h_mem = np.zeros(n)
    h_disk = np.zeros(n)
    mem_used, disk_used, replica_rates = [], [], []
    memory_share = d.memory_max_bytes / d.workers
    in_memory = sizes <= min(d.memory_max_object_bytes, memory_share)
    disk_sizes = sizes + d.disk_overhead
    for r in range(d.replicas):
        mine = owner == r
        gr, wr = g[mine], w[mine]
        replica_rates.append(float(np.dot(gr, wr)))
        # one worker: 1/workers of the replica's requests, 1/workers of its memory
        per_worker = np.where(in_memory[mine], gr / d.workers, 0.0)
        t_mem = che.characteristic_time(per_worker, sizes[mine] * wr, memory_share, purge)
        hm = che.present(per_worker, t_mem, purge)
        h_mem[mine] = hm
        mem_used.append(d.workers * float(np.dot(sizes[mine] * wr, hm)))
        to_disk = np.where(disk_sizes[mine] <= d.disk_max_bytes, gr * (1 - hm), 0.0)
        disk_bytes = disk_sizes[mine] * wr
        t_disk = che.characteristic_time(to_disk, disk_bytes, d.disk_max_bytes, purge)
        # what the disk holds (time average, purges included): memory-hot objects too
        disk_used.append(float(np.dot(disk_bytes, che.present(to_disk, t_disk, purge))))
        # A purge empties both layers at once, so a memory miss after one is a disk
        # miss too: the disk can only answer the memory misses that came from LRU
        # eviction (no purge since the last request), and then holds the object if
        # it was asked for within its own characteristic time.
        evicted = che.present(per_worker, math.inf, purge) - hm
        kept = che.present(to_disk, t_disk)
        h_disk[mine] = np.divide(evicted * kept, 1 - hm, out=np.zeros_like(hm),
                                 where=hm < 1)

    found = h_mem + (1 - h_mem) * h_disk
    stale = 1.0 / (1.0 + g * d.disk_ttl) if d.disk_ttl > 0 else np.ones(n)
    per_object = {  # requests/s of one object answered by each layer
        "cdn": lam * h_cdn,
        "micro": edge * h_micro,
        "memory": g * h_mem * (1 - stale),
        "disk": g * (1 - h_mem) * h_disk * (1 - stale),
        "revalidated": g * found * stale,
        "miss": g * (1 - found),
    }
    per_layer = {k: v * w for k, v in per_object.items()}  # ... of all it stands for
    total = float(np.dot(lam, w)) or 1.0
    shares = {k: float(v.sum()) / total for k, v in per_layer.items()}
    fetch = per_object["miss"] + per_object["revalidated"]  # origin GETs per object
    origin_gets = float(np.dot(fetch, w))
    redis = _redis_ops(fetch, w, sizes, d)
    pred = Prediction(
        rate=rate, shares=shares, origin_gets=origin_gets,
        origin_bytes=float(np.dot(per_layer["miss"], sizes)),
        served_bytes=float(np.dot(lam * w, sizes)), redis=redis, replica_rates=replica_rates,
        memory_used=mem_used, disk_used=disk_used)
    pred.resync = _resync(g, found, w, sizes, d)
    if throughput is not None:
        rates = {k: float(v.sum()) for k, v in per_layer.items()}
        pred.cores = (rates["memory"] / throughput.memory + rates["disk"] / throughput.disk
                      + (rates["miss"] + rates["revalidated"]) / throughput.miss)
    return pred


RESYNC_AFTER = (0.0, 10.0, 60.0, 600.0, 3600.0, 86400.0)


def _resync(g: Floats, found: Floats, w: Floats, sizes: Floats, d: Deployment
            ) -> dict[float, tuple[float, float]]:
    """Revalidations per second t s after every copy became untrusted: an object
    held (P = found) and not yet asked for since (P = exp(-g t)) is revalidated at
    its request rate g. Each costs an origin GET and its Redis commands (lease,
    release, result, stored URL); the steady misses come on top."""
    out = {}
    per_fetch = 2.0 + np.where(sizes <= d.fill_max_bytes, 1.0, 0.0) + (d.url_ttl > 0)
    for after in RESYNC_AFTER:
        rate = g * found * np.exp(-g * after) * w
        out[after] = (float(rate.sum()), float(np.dot(rate, per_fetch)))
    return out


def _redis_ops(fetch: Floats, w: Floats, sizes: Floats, d: Deployment) -> dict[str, float]:
    """Redis commands per second. Per origin fetch: the lease (SET NX), its release
    (EVAL), the result for waiters (SET, objects up to fill_max_bytes), and with S3
    the stored presigned URL (GET; a SET when none was stored within url_ttl: a TTL
    cache's miss rate). Per purge: the version bump (EVAL), the URL's DEL and the
    PUBLISH, which Redis then delivers to every replica's subscription. ``fetch``:
    per object, ``w`` the objects each stands for."""
    ops = {
        "lease": 2 * float(np.dot(fetch, w)),
        "fill": float(np.dot(fetch, np.where(sizes <= d.fill_max_bytes, w, 0.0))),
        "url": 0.0,
        "purge": 3 * d.purge_rate,
        "purge_delivery": d.purge_rate * d.replicas,
    }
    if d.url_ttl > 0:
        url_sets = fetch / (1.0 + fetch * d.url_ttl)
        ops["url"] = float(np.dot(fetch + url_sets, w))
    return ops
