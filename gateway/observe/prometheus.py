"""GET /metrics: a Snapshot (usually every worker added up) as Prometheus text.

prometheus_client is used only here, at scrape time: a collector turns the
snapshot into metric families, so the hot path never touches its objects.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.observe.histogram import PROMETHEUS_BOUNDS
from gateway.observe.recorder import SAVED_LAYERS, layer_label
from gateway.observe.rejected import KINDS as REJECTED_KINDS
from gateway.observe.snapshot import Snapshot

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
    "malformed_requests": ("gateway_malformed_requests",
                           "Requests the HTTP parser refused (request line, header): 400."),
    "cluster_joins": ("gateway_cluster_joins",
                      "Origin fetches saved: another replica's fetch (its Redis result or "
                      "the shared disk) answered instead."),
    "negative_hits": ("gateway_negative_hits",
                      "Requests for a remembered miss (cache.negative_ttl): the fallback "
                      "without any origin or Redis request."),
    "origin_refused": ("gateway_origin_refused",
                       "Origin objects refused (502): not an allowed image, or over "
                       "origin.max_bytes. Remembered for cache.negative_ttl."),
    "refused_hits": ("gateway_refused_hits",
                     "Requests for a remembered refusal: the same 502 without any origin "
                     "request."),
    "resyncs": ("gateway_resyncs",
                "(Re)subscriptions to the invalidation channel: copies confirmed before each "
                "are revalidated, since purges may have been missed."),
    "bus_messages_rejected": ("gateway_bus_messages_rejected",
                              "Invalidation messages from Redis of no known kind: ignored."),
    "purges_resent": ("gateway_purges_resent",
                      "Purges applied here while Redis was unavailable, sent to the other "
                      "replicas once it was back."),
    "purges_given_up": ("gateway_purges_given_up",
                        "Purges applied here while Redis was unavailable that were never sent "
                        "to the other replicas: too many waited."),
    "lease_release_retries": ("gateway_lease_release_retries",
                              "Cluster lease releases retried once after a broken pooled "
                              "Redis connection."),
}
_HANDLED_ELSEWHERE = {"origin_fetches", "origin_not_modified", "origin_errors",
                      "origin_not_found", "bytes_served", "url_store_hits",
                      "url_store_misses", "url_known_hits", "url_known_misses",
                      "redis_rejected_url", "redis_rejected_known", "redis_rejected_alias",
                      "redis_rejected_fill", "redis_rejected_version"}


# Counters of the origin wrappers, not of Stats: (snapshot counter, metric, help).
_ORIGIN_COUNTERS = (
    ("origin.retries", "gateway_origin_retries",
     "Origin fetches tried again after a failure a retry may cure (5xx, connection lost)."),
    ("origin.breaker_trips", "gateway_origin_breaker_trips",
     "Times the circuit breaker opened: the origin was not asked for a while."),
)


class SnapshotCollector(Collector):
    """Metric families from one (usually aggregated) Snapshot."""

    def __init__(self, snapshot: Snapshot, workers: int) -> None:
        self.snapshot = snapshot
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        yield from _answers(s)
        yield from _cache_counters(s)
        yield from _origin(s)
        yield from _service(s)
        yield from _bytes(s)
        yield from _cache_gauges(s)
        yield from _redis(s)
        yield GaugeMetricFamily("gateway_workers", "Worker processes counted in these figures.",
                                value=self.workers)
        yield from _variants(s)


def _answers(s: Snapshot) -> Iterator[Metric]:
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


def _cache_counters(s: Snapshot) -> Iterator[Metric]:
    for field_name, (metric, doc) in _LAYER_COUNTERS.items():
        family = CounterMetricFamily(metric, doc, labels=["layer"])
        for layer in ("memory", "disk"):
            family.add_metric([layer], s.counter(f"stats.{layer}.{field_name}"))
        yield family


def _origin(s: Snapshot) -> Iterator[Metric]:
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
    for name, metric, doc in _ORIGIN_COUNTERS:
        yield CounterMetricFamily(metric, doc, value=s.counter(name))
    yield GaugeMetricFamily(
        "gateway_origin_breaker_open",
        "Workers whose circuit breaker is open now (the origin is not asked): 0 when all "
        "is well.", value=s.gauges.get("origin.breaker_open", 0))
    yield GaugeMetricFamily(
        "gateway_purges_unsent",
        "Purges applied here while Redis was unavailable that the other replicas have not "
        "been told of yet (sent when Redis is back).",
        value=s.gauges.get("cluster.purges_unsent", 0))
    yield GaugeMetricFamily(
        "gateway_gc_frozen_objects",
        "Objects built at start that every worker keeps out of Python's cyclic garbage "
        "collector (gc.freeze): its passes scan only what requests leave behind.",
        value=s.gauges.get("process.gc_frozen_objects", 0))


def _service(s: Snapshot) -> Iterator[Metric]:
    known = set(_PLAIN) | _HANDLED_ELSEWHERE
    for field_name, (metric, doc) in _PLAIN.items():
        yield CounterMetricFamily(metric, doc, value=s.counter(f"stats.{field_name}"))
    for name in sorted(s.counters):
        parts = name.split(".")
        if len(parts) == 2 and parts[0] == "stats" and parts[1] not in known:
            yield CounterMetricFamily(f"gateway_{parts[1]}",
                                      f"Stats.{parts[1]} of the image service.",
                                      value=s.counters[name])


def _bytes(s: Snapshot) -> Iterator[Metric]:
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
    known = CounterMetricFamily(
        "gateway_url_metadata_lookups",
        "GET /images/{key}/url: what an earlier probe learned of the object, kept with its "
        "URL (hit), or not (miss: the origin is probed).", labels=["result"])
    known.add_metric(["hit"], s.counter("stats.url_known_hits"))
    known.add_metric(["miss"], s.counter("stats.url_known_misses"))
    yield known


def _cache_gauges(s: Snapshot) -> Iterator[Metric]:
    size = GaugeMetricFamily("gateway_cache_size_bytes", "Bytes held by a cache layer.",
                             labels=["layer"])
    limit = GaugeMetricFamily("gateway_cache_limit_bytes", "Size bound of a cache layer.",
                              labels=["layer"])
    entries = GaugeMetricFamily("gateway_cache_entries", "Entries in a cache layer.",
                                labels=["layer"])
    for layer in ("memory", "disk", "negative"):
        if f"{layer}.limit" in s.gauges:  # a layer that is not configured has no series
            size.add_metric([layer], s.gauges.get(f"{layer}.bytes", 0))
            limit.add_metric([layer], s.gauges[f"{layer}.limit"])
            entries.add_metric([layer], s.gauges.get(f"{layer}.entries", 0))
    yield size
    yield limit
    yield entries


def _redis(s: Snapshot) -> Iterator[Metric]:
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
    rejected = CounterMetricFamily(
        "gateway_redis_values_rejected",
        "Values read from Redis that failed their check and were not used: a presigned "
        "URL not for this endpoint, bucket and key (url), an alias naming no valid key "
        "(alias), another replica's result that is forged, damaged or not an allowed "
        "image (fill).", labels=["kind"])
    for kind in REJECTED_KINDS:
        rejected.add_metric([kind], s.counter(f"stats.redis_rejected_{kind}"))
    yield rejected


def _variants(s: Snapshot) -> Iterator[Metric]:
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
