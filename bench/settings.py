"""Every knob of the bench, from the environment (all optional)."""

from __future__ import annotations

import os
from dataclasses import dataclass

MiB = 1024 * 1024


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    quick: bool
    duration: float          # seconds of wrk per measured scenario
    warm: float              # seconds of wrk warm-up before each measured scenario
    connections: int
    threads: int             # wrk threads
    workers: int             # gateway server.workers, nginx worker_processes, bare aiohttp
    images: int
    seed: int
    memory_max_bytes: int    # gateway memory.max_bytes for the memory-hit runs
    disk_memory_max_bytes: int  # memory.max_bytes for the disk-hit run (LRU too small)
    burst: int
    burst_origin_delay: float
    nginx_access_log: bool
    mode: str                # paths.lua: rr or random
    rounds: int              # every measured scenario this many times, interleaved; median

    @classmethod
    def from_env(cls) -> Settings:
        cores = os.cpu_count() or 1
        quick = env_bool("BENCH_QUICK")
        return cls(
            quick=quick,
            duration=env_float("BENCH_DURATION", 2.0 if quick else 10.0),
            warm=env_float("BENCH_WARM", 1.0 if quick else 3.0),
            connections=env_int("BENCH_CONNECTIONS", 64),
            threads=env_int("BENCH_THREADS", cores),
            workers=env_int("BENCH_WORKERS", cores),
            images=env_int("BENCH_IMAGES", 1000),
            seed=env_int("BENCH_SEED", 2024),
            memory_max_bytes=env_int("BENCH_MEMORY_MAX_BYTES", 64 * MiB),
            disk_memory_max_bytes=env_int("BENCH_DISK_MEMORY_MAX_BYTES", 1 * MiB),
            burst=env_int("BENCH_BURST", 1000),
            burst_origin_delay=env_float("BENCH_BURST_ORIGIN_DELAY", 0.2),
            nginx_access_log=env_bool("BENCH_NGINX_ACCESS_LOG"),
            mode=os.environ.get("BENCH_MODE", "rr"),
            rounds=max(1, env_int("BENCH_ROUNDS", 1)),
        )

    def env_line(self) -> str:
        """The BENCH_* values as a shell prefix, for the 'exact commands'."""
        pairs = {
            "BENCH_DURATION": f"{self.duration:g}", "BENCH_WARM": f"{self.warm:g}",
            "BENCH_CONNECTIONS": self.connections, "BENCH_THREADS": self.threads,
            "BENCH_WORKERS": self.workers, "BENCH_IMAGES": self.images,
            "BENCH_SEED": self.seed, "BENCH_MEMORY_MAX_BYTES": self.memory_max_bytes,
            "BENCH_DISK_MEMORY_MAX_BYTES": self.disk_memory_max_bytes,
            "BENCH_BURST": self.burst,
            "BENCH_BURST_ORIGIN_DELAY": f"{self.burst_origin_delay:g}",
            "BENCH_MODE": self.mode, "BENCH_ROUNDS": self.rounds,
        }
        return " ".join(f"{k}={v}" for k, v in pairs.items())
