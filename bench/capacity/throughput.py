"""Per-worker throughput (requests/s one gateway worker answers) from the latest
bench run: bench/out/results.json (memory hits, disk hits) and
bench/out/longtail.json (origin fetches: the long-tail scenario's fill pass)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.capacity.model import Throughput

OUT = Path(__file__).resolve().parent.parent / "out"

# Used when no bench output is found: bench/RESULTS.md of 2026-11 on the 2-core
# test machine (memory and disk hits: req/s over 2 workers), and the long-tail fill
# pass (about 515 misses per gateway CPU-second, local origin).
DEFAULTS = Throughput(memory=9000.0, disk=4500.0, miss=500.0, source="built-in defaults")


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def from_bench(out: Path = OUT) -> Throughput:
    memory, disk, miss = DEFAULTS.memory, DEFAULTS.disk, DEFAULTS.miss
    sources = []
    results = _load(out / "results.json")
    if results is not None:
        workers = int(results.get("settings", {}).get("workers", 1)) or 1
        measures = results.get("measures", {})
        if "memory" in measures:
            memory = float(measures["memory"]["rps"]) / workers
        if "disk" in measures:
            disk = float(measures["disk"]["rps"]) / workers
        sources.append(f"{out.name}/results.json")
    longtail = _load(out / "longtail.json")
    if longtail is not None and longtail.get("fill_rps_per_worker"):
        miss = float(longtail["fill_rps_per_worker"])
        sources.append(f"{out.name}/longtail.json")
    source = " + ".join(sources) if sources else DEFAULTS.source
    return Throughput(memory=memory, disk=disk, miss=miss, source=source)
