"""What the web layer records per request and per origin fetch, as plain numbers."""

from __future__ import annotations

import time

from gateway.observe.histogram import Histogram, TopCounter

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


def layer_label(x_cache: str) -> str:
    """HIT-MEMORY -> memory, MISS -> miss: the X-Cache value as a label value."""
    return x_cache.lower().removeprefix("hit-")
