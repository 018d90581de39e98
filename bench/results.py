"""What one run measured (filled by bench/run.py, written out by bench/report.py)."""

from __future__ import annotations

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
    longtail: dict[str, Any] | None = None  # bench/longtail.py's figures, when it ran
