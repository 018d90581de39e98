"""What one run measured (filled by bench/run.py, written out by bench/report.py)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.burst import BurstResult
from bench.procs import MemoryPeak
from bench.settings import Settings
from bench.wrk import WrkResult

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT = BENCH_DIR / "out"
RUN_DIR = OUT / "run"
IMAGES_DIR = OUT / "images"
PATHS_FILE = OUT / "paths.txt"
RESULTS_MD = BENCH_DIR / "RESULTS.md"


@dataclass
class Measure:
    """One scenario: its wrk run, or runs with BENCH_ROUNDS > 1 (the median counts)."""

    key: str
    title: str
    server: str
    runs: list[WrkResult]
    layers_before: str = ""
    layers_after: str = ""
    origin_gets: int | None = None  # GETs the origin saw during the measured run(s)

    @property
    def wrk(self) -> WrkResult:
        """The run with the median req/s (the upper middle one for an even count)."""
        ranked = sorted(self.runs, key=lambda r: r.rps)
        return ranked[len(ranked) // 2]


@dataclass
class PeerFigures:
    """What the thumbor phase measured besides its wrk runs (those are Measures)."""

    thumbor_version: str
    first_ms: dict[str, list[float]] = field(default_factory=dict)  # server -> each
    rss_rest: dict[str, int] = field(default_factory=dict)  # server -> bytes, one process
    rss_after: dict[str, int] = field(default_factory=dict)

    def first_median(self, server: str) -> float | None:
        times = self.first_ms.get(server)
        return statistics.median(times) if times else None


@dataclass
class PageLoad:
    """One page view of the 50 avatars in Chromium."""

    ms: float            # navigation start until the last picture loaded and decoded
    failed: int          # pictures that did not load
    image_requests: int  # picture requests that reached a server (gateway, S3, nginx)
    api_calls: int       # GET /images/{id}/url calls (the old flow)
    not_modified: int    # requests answered 304 (or sent conditionally to S3)
    origin_gets: int     # requests the gateway sent to S3 meanwhile
    pictures: int = 50
    layers: dict[str, int] = field(default_factory=dict)  # the gateway's X-Cache answers

    @property
    def requests(self) -> int:
        return self.image_requests + self.api_calls

    @property
    def from_cache(self) -> int:
        """Pictures the browser cache answered without any request."""
        return max(0, self.pictures - self.image_requests)


@dataclass
class BrowserScenario:
    key: str
    title: str
    loads: list[PageLoad] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(load, attr) for load in self.loads))


@dataclass
class Headline:
    """The seed's friend list of 50 avatars, each scenario run several times."""

    pictures: int
    runs: int
    max_age: int
    chromium: str
    scenarios: dict[str, BrowserScenario] = field(default_factory=dict)


@dataclass
class Results:
    settings: Settings
    pictures: dict[str, float]
    started: float
    finished: float = 0.0
    load_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    bench_env: dict[str, str] = field(default_factory=dict)  # BENCH_* set by the caller
    measures: dict[str, Measure] = field(default_factory=dict)
    burst: BurstResult | None = None
    burst_origin_gets: int | None = None
    burst_origin_requests: int | None = None
    burst_key: str = ""
    warm_origin_gets: int = 0
    first_pass: str = ""
    memory: dict[str, MemoryPeak] = field(default_factory=dict)
    memory_limits: dict[str, int] = field(default_factory=dict)
    gateway_env: dict[str, dict[str, str]] = field(default_factory=dict)
    nginx_confs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    peers: PeerFigures | None = None      # thumbor and the one-process rows (--only thumbor)
    browser: Headline | None = None       # the seed's headline in Chromium (--only browser)
    longtail: dict[str, Any] | None = None  # bench/longtail.py's figures, when it ran
