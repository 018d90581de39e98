"""/admin/stats: the figures since the last reset, what they mean, what to do.

Everything is computed from an :class:`~gateway.observe.aggregate.Aggregate` (every worker
of this gateway added up) minus the :class:`~gateway.observe.aggregate.Baseline` taken at
the last reset. Plain data in, plain data out: no aiohttp here.

Definitions
    answers          image requests answered, by the layer in X-Cache
    hit rate         answers from memory or disk / all answers (errors included)
    lookup hit rate  per layer: lookups it answered / lookups it was asked
    latency          seconds until the response was ready to send (the transfer to
                     the client is excluded: it measures the client's network)
    bytes saved      body bytes of answers that needed no download of their own:
                     memory, disk, a shared (coalesced) fetch, a stale copy
    time saved       answers from memory, disk or a shared fetch x the average time
                     of a successful origin fetch, minus the time those answers took:
                     what going to the origin for each of them would have added
"""

from __future__ import annotations

import time
from typing import Any

from gateway.config import Config
from gateway.observe.aggregate import Aggregate, Baseline, Window
from gateway.observe.histogram import Histogram
from gateway.observe.recorder import ORIGIN_RESULTS, SAVED_LAYERS, TIME_SAVED_LAYERS, layer_label
from gateway.observe.snapshot import hits_of

# Layers in the order a request tries them; anything else (ERROR, new ones) follows.
LAYER_ORDER = ("HIT-MEMORY", "HIT-DISK", "MISS", "REVALIDATED", "COALESCED", "STALE",
               "FALLBACK", "ERROR")
MIN_ANSWERS = 20  # fewer answers than this: no rate-based advice yet
LOW_HIT_RATE = 0.5
FALLBACK_SHARE = 0.05
SLOW_ORIGIN_P95 = 1.0
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _latency(histogram: Histogram) -> dict[str, Any]:
    return {"count": histogram.count, "avg_ms": _ms(histogram.mean()),
            "p95_ms": _ms(histogram.quantile(0.95))}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def build_report(aggregate: Aggregate, baseline: Baseline | None, config: Config,
                 *, now: float | None = None, top: int = 10) -> dict[str, Any]:
    now = time.time() if now is None else now
    totals = aggregate.totals
    s = totals.minus_totals(baseline.totals) if baseline is not None else totals
    since = baseline.at if baseline is not None else min(w.started for w in aggregate.workers)

    answers = s.answers_by_layer()
    total = sum(answers.values())
    hits = hits_of(answers)
    order = [*LAYER_ORDER, *sorted(set(answers) - set(LAYER_ORDER))]
    layers: dict[str, Any] = {}
    for layer in order:
        histogram = s.histogram(f"latency|{layer}")
        layers[layer_label(layer)] = {
            "x_cache": layer, "answers": histogram.count,
            "share": _ratio(histogram.count, total), "bytes": int(s.counter(f"bytes|{layer}")),
            **{k: v for k, v in _latency(histogram).items() if k != "count"}}
    every = Histogram()
    for histogram in s.layered("latency").values():
        every.add(histogram)

    def lookups(layer: str) -> dict[str, Any]:
        h = s.counter(f"stats.{layer}.hits")
        m = s.counter(f"stats.{layer}.misses")
        return {"hits": int(h), "misses": int(m), "hit_rate": _ratio(h, h + m)}

    fetches = {r: s.histogram(f"origin|{r}") for r in ORIGIN_RESULTS}
    n_fetches = sum(h.count for h in fetches.values())
    failed = fetches["error"].count + fetches["timeout"].count
    origin = {
        "fetches": n_fetches,
        **{r: h.count for r, h in fetches.items()},
        "failed": failed,
        "error_rate": _ratio(failed, n_fetches),
        "bytes": int(s.counter("stats.bytes_from_origin")),
        "latency": _latency(fetches["ok"]),
        "latency_all": _latency(_sum(fetches.values())),
    }

    bytes_saved = int(sum(s.counter(f"bytes|{layer}") for layer in SAVED_LAYERS))
    bytes_served = int(sum(v for k, v in s.counters.items() if k.startswith("bytes|")))
    bytes_origin = int(s.counter("stats.bytes_from_origin"))
    avoided = sum(answers.get(layer, 0) for layer in SAVED_LAYERS)
    avg_origin = fetches["ok"].mean()
    timed = [s.histogram(f"latency|{layer}") for layer in TIME_SAVED_LAYERS]
    n_timed = sum(h.count for h in timed)
    own_time = sum(h.sum for h in timed)
    time_saved = None if avg_origin is None else round(n_timed * avg_origin - own_time, 6)
    saved = {
        "bytes": bytes_saved,
        "bytes_served": bytes_served,
        "bytes_from_origin": bytes_origin,
        "bytes_without_cache": bytes_saved + bytes_origin,
        "bytes_saved_ratio": _ratio(bytes_saved, bytes_saved + bytes_origin),
        "origin_fetches_avoided": avoided,
        "time_seconds": time_saved,
        "avg_origin_fetch_ms": _ms(avg_origin),
        "explanation": (
            "Bytes: body bytes answered from memory, disk, a shared fetch or a stale copy, "
            "which would otherwise each have been downloaded from the origin. Time: answers "
            "from memory, disk or a shared fetch x the average successful origin fetch "
            "time, minus the time those answers took."),
    }

    cache: dict[str, Any] = {}
    for layer in ("memory", "disk"):
        if f"{layer}.limit" not in totals.gauges:
            cache[layer] = {"enabled": False}
            continue
        size, limit = totals.gauges.get(f"{layer}.bytes", 0), totals.gauges[f"{layer}.limit"]
        cache[layer] = {
            "enabled": True, "bytes": int(size), "limit": int(limit),
            "fill": _ratio(size, limit), "entries": int(totals.gauges.get(f"{layer}.entries", 0)),
            **{k: int(s.counter(f"stats.{layer}.{k}"))
               for k in ("evictions", "corrupt_dropped", "write_errors")},
            **lookups(layer)}

    http: dict[str, dict[str, int]] = {}
    for name, value in s.counters.items():
        if name.startswith("http|"):
            _, route, status = name.split("|", 2)
            http.setdefault(route, {})[status] = int(value)

    report: dict[str, Any] = {
        "success": True,
        "generated_at": round(now, 3),
        "since": round(since, 3),
        "seconds": round(max(0.0, now - since), 3),
        "scope": {
            "what": "this gateway: every worker process added up",
            "workers_configured": config.server.workers,
            "workers_reporting": sum(1 for w in aggregate.workers if w.live),
            "answered_by_pid": next(w.pid for w in aggregate.workers if w.this),
        },
        "requests": {"answers": total, "hits": hits, "errors": answers.get("ERROR", 0),
                     "http": http},
        "hit_rate": {"overall": _ratio(hits, total),
                     "memory": lookups("memory")["hit_rate"],
                     "disk": lookups("disk")["hit_rate"] if config.disk.enabled else None,
                     "origin_offload": _ratio(total - n_fetches, total) if total else None},
        "latency": _latency(every),
        "layers": layers,
        "origin": origin,
        "saved": saved,
        "cache": cache,
        "url_store": {"hits": int(s.counter("stats.url_store_hits")),
                      "misses": int(s.counter("stats.url_store_misses")),
                      "hit_rate": _ratio(s.counter("stats.url_store_hits"),
                                         s.counter("stats.url_store_hits")
                                         + s.counter("stats.url_store_misses"))},
        "redis": {"state": totals.redis, "failures": int(s.counter("redis.failures"))},
        "top_images": [{"image_id": k, "requests": v} for k, v in _top(totals.top, top)],
        "top_missing": [{"image_id": k, "requests": v} for k, v in _top(totals.missing, top)],
        "history": [_window(w) for w in aggregate.history],
        "workers": [{"pid": w.pid, "live": w.live, "this": w.this,
                     "started": round(w.started, 3), "updated": round(w.written, 3),
                     "answers": w.answers, "requests": w.requests}
                    for w in aggregate.workers],
    }
    report["recommendations"] = recommend(report, config)
    return report


def _sum(histograms: Any) -> Histogram:
    out = Histogram()
    for h in histograms:
        out.add(h)
    return out


def _top(counts: dict[str, int], n: int) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _window(w: Window) -> dict[str, Any]:
    return {"t": round(w.t, 3), "seconds": round(w.seconds, 3), "answers": w.answers,
            "rps": round(w.answers / w.seconds, 3) if w.seconds else None,
            "hit_rate": _ratio(w.hits, w.answers),
            "avg_ms": _ms(w.latency.mean()), "p95_ms": _ms(w.latency.quantile(0.95))}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


def recommend(report: dict[str, Any], config: Config) -> list[dict[str, str]]:
    """Advice from the figures: what is wrong or could be better, and what to do."""
    out: list[dict[str, str]] = []

    def add(ident: str, severity: str, title: str, detail: str) -> None:
        out.append({"id": ident, "severity": severity, "title": title, "detail": detail})

    answers = report["requests"]["answers"]
    origin = report["origin"]
    layers = report["layers"]
    memory, disk = report["cache"]["memory"], report["cache"]["disk"]

    if origin["failed"]:
        rate = origin["error_rate"] or 0.0
        add("origin_errors", "critical" if rate >= 0.05 else "warning",
            "The origin is failing",
            f"{origin['failed']} of {origin['fetches']} origin fetches failed "
            f"({origin['timeout']} timed out); {layers['stale']['answers']} stale copies and "
            f"{layers['error']['answers']} errors were served instead. Check the S3 endpoint, "
            "bucket and credentials and the network to it; GET /readyz shows the origin check.")

    redis = report["redis"]["state"]
    if redis == "down":
        add("redis_down", "critical", "Redis is unreachable",
            "Presigned URLs are signed locally on every miss, invalidations do not reach "
            "other replicas and the cluster-wide single-flight is off. Check redis.url and "
            "the Redis server.")

    hit_rate = report["hit_rate"]["overall"]
    if answers >= MIN_ANSWERS and hit_rate is not None and hit_rate < LOW_HIT_RATE:
        add("low_hit_rate", "warning", f"Low hit rate: {_pct(hit_rate)}",
            f"Only {report['requests']['hits']} of {answers} requests were answered from "
            "memory or disk. Warm the cache with prefetch lists (POST /admin/prefetch with "
            "the ids about to be shown: new uploads, the top requested images) and check "
            "that clients use the stable /images/{id} URLs. Images asked for only once "
            "cannot hit.")

    if memory.get("enabled"):
        evictions = memory["evictions"]
        disk_hits = disk.get("hits", 0) if disk.get("enabled") else 0
        heavy = answers >= MIN_ANSWERS and evictions >= max(10, 0.05 * answers)
        needed = (disk_hits >= memory["hits"] or (memory["fill"] or 0) >= 0.9
                  or not disk.get("enabled"))
        if heavy and needed:
            per_worker = config.memory.max_bytes
            where = (f"while disk answered {disk_hits} requests that memory could have"
                     if disk_hits else "and most requests missed it")
            add("memory_too_small", "warning", "The memory cache is too small",
                f"It evicted {evictions} entries ({_pct(memory['fill'])} full) {where}. "
                f"Raise memory.max_bytes (now {human_bytes(per_worker)} per worker), e.g. to "
                f"{human_bytes(max(per_worker * 2, 1024 * 1024))}, if the host has the RAM.")

    if disk.get("enabled"):
        if disk["evictions"] >= 10 and (disk["fill"] or 0) >= 0.9:
            add("disk_too_small", "warning", "The disk cache is full",
                f"It evicted {disk['evictions']} entries. Raise disk.max_bytes (now "
                f"{human_bytes(config.disk.max_bytes)}) if the volume has room.")
        if disk["corrupt_dropped"]:
            add("disk_corrupt", "warning", "Corrupt disk cache entries",
                f"{disk['corrupt_dropped']} cached files failed verification and were "
                "dropped. Check the volume (kernel log, free space, other writers).")
        if disk["write_errors"]:
            add("disk_write_errors", "warning", "Disk cache writes fail",
                f"{disk['write_errors']} writes failed: check free space and permissions of "
                f"disk.path ({config.disk.path}).")

    fallbacks = layers["fallback"]["answers"]
    if fallbacks >= 5 and answers and fallbacks / answers >= FALLBACK_SHARE:
        names = ", ".join(m["image_id"] for m in report["top_missing"][:5])
        add("missing_images", "warning", "Many requests for missing images",
            f"{fallbacks} requests ({_pct(fallbacks / answers)}) asked for images the origin "
            f"does not have and got the fallback picture"
            + (f"; most asked: {names}" if names else "")
            + ". Check the ids clients use (broken links, failed uploads, deleted pictures).")

    p95 = origin["latency"]["p95_ms"]
    if origin["ok"] >= 5 and p95 is not None and p95 >= SLOW_ORIGIN_P95 * 1000:
        add("slow_origin", "info", "Slow origin",
            f"The p95 of successful origin fetches is {p95:.0f} ms. Every miss pays it: "
            "prefetch popular images, and check the network path and region of the bucket.")

    out.sort(key=lambda r: SEVERITY_ORDER[r["severity"]])
    return out
