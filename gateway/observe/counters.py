"""Counters for every layer, in one place: the metrics and stats views read them.

Plain integers on one object: incrementing must cost nothing on the hot path.
Each worker process has its own; /metrics aggregates them across workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class LayerCounters:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    corrupt_dropped: int = 0
    write_errors: int = 0


@dataclass
class Stats:
    memory: LayerCounters = field(default_factory=LayerCounters)
    disk: LayerCounters = field(default_factory=LayerCounters)
    coalesced: int = 0  # joiners that shared another request's origin fetch
    cluster_joins: int = 0  # fetches answered by another replica's origin fetch
    lease_release_retries: int = 0  # lease releases tried again after a Redis error
    # Purges taken while Redis was away, sent to the other replicas once it was back,
    # and those given up (more waiting than Invalidator.max_unsent).
    purges_resent: int = 0
    purges_given_up: int = 0
    origin_fetches: int = 0  # GETs sent to the origin (including 304 revalidations)
    origin_not_modified: int = 0
    origin_errors: int = 0
    origin_not_found: int = 0
    stale_served: int = 0
    fallback_served: int = 0
    negative_hits: int = 0  # requests for a remembered miss: no origin or Redis I/O
    origin_refused: int = 0  # origin objects refused: not an allowed image, too large
    refused_hits: int = 0  # requests for a remembered refusal: 502, no origin request
    # (Re)subscriptions to the invalidation channel: copies the origin confirmed
    # before each are revalidated, since purges may have been missed.
    resyncs: int = 0
    bytes_served: int = 0  # body bytes sent to clients
    bytes_from_origin: int = 0  # body bytes downloaded from the origin
    url_store_hits: int = 0
    url_store_misses: int = 0
    # What a probe learned about an object, kept with its URL (GET /images/{key}/url).
    url_known_hits: int = 0
    url_known_misses: int = 0
    # Values read back from Redis that failed their check and were not used.
    redis_rejected_url: int = 0  # a stored presigned URL for another endpoint/bucket/key
    redis_rejected_known: int = 0  # stored object metadata out of bounds or malformed
    redis_rejected_alias: int = 0  # an alias naming no valid image key
    redis_rejected_fill: int = 0  # another replica's result: forged, damaged or not an image
    redis_rejected_version: int = 0  # a purge version that is no number, or of no valid key
    bus_messages_rejected: int = 0  # invalidation messages of no known kind (Redis is input)
    malformed_requests: int = 0  # refused by the HTTP parser (request line, header): 400

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default_factory() if callable(f.default_factory)
                    else f.default)
